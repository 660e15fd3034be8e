#!/usr/bin/env bash
# The real-weights pipeline: teacher = a vision tower + a fresh projector + SmolLM2-135M-Instruct
# (real weights, from its GGUF), student = the same tower + a fresh projector + SmolLM2 cut to its
# first 8 layers (LLaVADI's initialisation), distilled on easy-VQA (LLaVA-KD's DFT).
#
#   bash scripts/real-weights.sh [TOWER]
#
# TOWER is a CLIP/SigLIP HF folder or a Condenser checkpoint; by default the encoder of the
# easy-VQA teacher (runs/easyvqa-teacher, trained first when missing), since no CLIP/SigLIP
# weights can be fetched here. BACKEND=cpu|wgpu|auto (default auto). Every step resumes: a
# stopped pipeline continues where it stopped. A 20-step slice runs in CI
# (tests/tests/real_weights.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CONDENSER_BIN:-target/release/condenser}"
backend="${BACKEND:-auto}"
tower="${1:-runs/easyvqa-teacher/checkpoints/final}"
[ -x "$bin" ] || cargo build --release -p condenser
bash scripts/fetch-smollm2.sh
CONDENSER_BIN="$bin" bash scripts/fetch-easy-vqa.sh
gguf=.cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ "$tower" = "runs/easyvqa-teacher/checkpoints/final" ] && [ ! -f "$tower/model.bpk" ]; then
  "$bin" run assets/recipes/easyvqa-teacher.toml --backend "$backend" --resume
fi
[ -f checkpoints/real-teacher/model.bpk ] ||
  "$bin" import --vision "$tower" --llm "$gguf" --chat-tokens --out checkpoints/real-teacher --backend cpu
[ -f checkpoints/real-student/model.bpk ] ||
  "$bin" import --vision "$tower" --llm "$gguf" --llm-layers 8 --chat-tokens --out checkpoints/real-student --backend cpu
"$bin" run assets/recipes/real-teacher.toml --backend "$backend" --resume
"$bin" run assets/recipes/real-kd.toml --backend "$backend" --resume
