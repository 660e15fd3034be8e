#!/usr/bin/env bash
# Serves the browser demo on http://127.0.0.1:8080/ with a student's bundle.
#   scripts/web-serve.sh [CHECKPOINT] [--port N]
# CHECKPOINT defaults to the main job's distilled student (runs/shapes-kd/checkpoints/final);
# its bundle is (re)written to runs/web-bundle by `condenser export --web`.
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt="runs/shapes-kd/checkpoints/final"
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then ckpt="$1"; shift; fi
if [ ! -d "$ckpt" ]; then
  echo "web-serve: $ckpt not found: train it first (scripts/demo.sh), or pass a checkpoint folder" >&2
  exit 2
fi
[ -f web/pkg/condenser_web_bg.wasm ] || bash scripts/web-build.sh
cargo build --release -p condenser
./target/release/condenser export --web "$ckpt" -o runs/web-bundle
exec node web/serve.mjs --bundle runs/web-bundle "$@"
