#!/usr/bin/env bash
# Fetches easy-VQA (MIT) from the Python package that ships it (see docs/ASSETS.md), checks
# the wheel's SHA-256, unpacks it to .cache/easy-vqa/ (ignored by git) and converts it with
# `condenser data easy-vqa` into data/easy-vqa/ (LLaVA JSON + images + tokenizer.json).
# `--raw`: fetch and unpack only (the tests convert what they need themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CONDENSER_BIN:-target/release/condenser}"
dest=".cache/easy-vqa"
want="fcb51b309b78c7b00f97b64cdbcbcf5c105f94da1b39c0796cee5a787c4f650f"
if [ ! -f "$dest/easy_vqa/data/train/questions.json" ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps easy-vqa==1.0 -d "$tmp"
  whl=("$tmp"/easy_vqa-1.0-*.whl)
  got="$(sha256sum "${whl[0]}" | cut -d' ' -f1)"
  [ "$got" = "$want" ] || { echo "fetch-easy-vqa: SHA-256 mismatch: got $got, want $want" >&2; exit 1; }
  mkdir -p "$dest"
  python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "${whl[0]}" "$dest"
fi
[ "${1:-}" = "--raw" ] && { echo "fetch-easy-vqa: $dest (SHA-256 ok)"; exit 0; }
[ -x "$bin" ] || cargo build --release -p condenser
"$bin" data easy-vqa --from "$dest/easy_vqa/data" --out data/easy-vqa
