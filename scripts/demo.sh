#!/usr/bin/env bash
# The main job on a fresh machine: set-up, build, then `condenser demo` (Shapes world ->
# shared vision encoder -> teacher -> baseline student -> comparison in runs/comparison.md).
# Extra arguments go to `condenser demo` (e.g. --backend wgpu, --fresh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build -p condenser
exec ./target/debug/condenser demo --backend cpu "$@"
