#!/usr/bin/env bash
# The main job on a fresh machine: set-up, build, then `condenser demo` (Shapes world ->
# shared vision encoder -> teacher -> baseline student -> KD student -> comparison in runs/comparison.md).
# Extra arguments go to `condenser demo` (e.g. --backend wgpu, --fresh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the Vulkan loader complains on every start when this is unset (headless machines)
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
# release: the training loops run about 1.7x faster than in the dev profile
cargo build --release -p condenser
exec ./target/release/condenser demo --backend cpu "$@"
