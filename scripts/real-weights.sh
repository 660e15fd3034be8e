#!/usr/bin/env bash
# The real-weights pipeline: teacher = a vision tower + a fresh projector + SmolLM2-135M-Instruct
# (real weights, from its GGUF), student = the same tower + a fresh projector + SmolLM2 cut to its
# first 8 layers (LLaVADI's initialisation), distilled on easy-VQA (LLaVA-KD's DFT).
#
#   bash scripts/real-weights.sh [TOWER]
#   bash scripts/real-weights.sh --table
#
# --table makes the real-scale table instead (docs/results/real.md, assets/ablations/real.toml):
# the default DINOv2-S tower, easy-VQA cut to the questions of its first 150 training and 100
# test images (data/easy-vqa-150), then `condenser ablate real --seeds ${SEEDS:-2} --jobs 2
# --threads 1`: the teacher, then per seed an SFT, a LLaVA-KD and a LLaVADI student, two runs at
# a time on one thread each (the CPU backend unless BACKEND says otherwise). On 2 cores two
# one-thread runs train 1.9 times as many tokens as one run on both threads (a student's SFT:
# 268 tok/s each, side by side, against 279 tok/s alone on two threads). About 2.5 hours on
# a 2-core CPU: at SmolLM2's 49k-token vocabulary a distillation step takes about 26 s on one
# thread against 4.5 s for an SFT step. Interrupted, it resumes where it stopped.
#
# TOWER is a CLIP/SigLIP/DINOv2 HF folder, a DINOv2 ONNX file or a Condenser checkpoint; by
# default the real DINOv2-S/14 backbone (the ONNX file of docs/ASSETS.md, fetched by
# scripts/fetch-dinov2.sh), imported for IMAGE_SIZE px (default 112: 8 x 8 patches, its
# positions resized). runs/easyvqa-teacher/checkpoints/final names the easy-VQA teacher's own
# encoder instead (trained first when missing). BACKEND=cpu|wgpu|auto (default auto). Every
# step resumes: a stopped pipeline continues where it stopped. A 20-step slice runs in CI
# (tests/tests/real_weights.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CONDENSER_BIN:-target/release/condenser}"
backend="${BACKEND:-auto}"
table=false
if [ "${1:-}" = "--table" ]; then
  table=true
  shift
  [ $# -eq 0 ] || { echo "real-weights: --table uses the default DINOv2-S tower; drop $1" >&2; exit 2; }
fi
tower="${1:-.cache/dinov2/vit_s_focus.onnx}"
[ -x "$bin" ] || cargo build --release -p condenser
bash scripts/fetch-smollm2.sh
CONDENSER_BIN="$bin" bash scripts/fetch-easy-vqa.sh
gguf=.cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
size=()
if [ "$tower" = ".cache/dinov2/vit_s_focus.onnx" ]; then
  bash scripts/fetch-dinov2.sh
fi
# a HF folder or ONNX file is imported at IMAGE_SIZE; a Condenser checkpoint keeps its size
[ -f "$tower/model.bpk" ] || size=(--image-size "${IMAGE_SIZE:-112}")
if [ "$tower" = "runs/easyvqa-teacher/checkpoints/final" ] && [ ! -f "$tower/model.bpk" ]; then
  "$bin" run assets/recipes/easyvqa-teacher.toml --backend "$backend" --resume
fi
[ -f checkpoints/real-teacher/model.bpk ] ||
  "$bin" import --vision "$tower" "${size[@]}" --llm "$gguf" --chat-tokens --out checkpoints/real-teacher --backend cpu
[ -f checkpoints/real-student/model.bpk ] ||
  "$bin" import --vision "$tower" "${size[@]}" --llm "$gguf" --llm-layers 8 --chat-tokens --out checkpoints/real-student --backend cpu
if $table; then
  [ -f data/easy-vqa-150/test.json ] ||
    "$bin" data easy-vqa --out data/easy-vqa-150 --train-images 150 --test-images 100
  exec "$bin" ablate real --seeds "${SEEDS:-2}" --jobs 2 --threads 1 --backend "${BACKEND:-cpu}"
fi
"$bin" run assets/recipes/real-teacher.toml --backend "$backend" --resume
"$bin" run assets/recipes/real-kd.toml --backend "$backend" --resume
