#!/usr/bin/env bash
# Teacher-cache figures (docs/results/teacher-cache.md): what a cache costs to build and to keep
# (bytes per cached position, teacher seconds) and what it does to a distillation step (the
# student's DFT step with the teacher live beside it against the same step reading the cache:
# `condenser bench step`, both in this run, on this machine).
#
#   bash scripts/teacher-cache-bench.sh [RUNS]
#
# RUNS (default runs/) must hold the Shapes teacher and vision encoder (`condenser demo`, or
# `condenser ablate cache`); when it also holds `real-teacher` (scripts/real-weights.sh --table)
# and checkpoints/real-student and data/easy-vqa-150 exist, the real-scale rows are measured
# too. THREADS (default 2) CPU threads, BACKEND (default cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CONDENSER_BIN:-target/release/condenser}"
runs="${1:-runs}"
threads="${THREADS:-2}"
backend="${BACKEND:-cpu}"
out=target/teacher-cache-bench
[ -x "$bin" ] || cargo build --release -p condenser
rm -rf "$out"
mkdir -p "$out"
dev=(--backend "$backend" --threads "$threads")

# a copy of RECIPE whose [teacher] reads CACHE
with_cache() {
  sed "s|^from = \"$3\"|from = \"$3\"\ncache = \"$2\"|" "$1"
}

# NAME TEACHER DATA K [FILES]: build a cache and time the whole command
build() {
  local t0 t1
  t0=$(date +%s.%N)
  "$bin" teacher-cache build "$runs/$2" --data "$3" -o "$out/$1" --top-k "$4" \
    ${5:+--files "$5"} "${dev[@]}" > "$out/$1.txt"
  t1=$(date +%s.%N)
  python3 -c "import json; print(json.dumps({'wall_s': $t1 - $t0}))" > "$out/$1.wall.json"
  tail -3 "$out/$1.txt"
}

# NAME RECIPE STAGE STEPS [DATA]: one stage's steps, live then cached
steps() {
  local data=()
  [ -n "${5:-}" ] && data=(--data "$5")
  "$bin" bench step "$2" --stage "$3" --steps "$4" --warmup 1 --runs-dir "$runs" \
    "${data[@]}" "${dev[@]}" --json "$out/$1.json" > "$out/$1.txt"
  grep -E "tokens/s|peak" "$out/$1.txt" | head -3 || true
}

echo "== Shapes: caches of shapes-teacher"
build shapes-top64 shapes-teacher data/shapes 64
build shapes-top8 shapes-teacher data/shapes 8
with_cache assets/recipes/shapes-kd.toml "$out/shapes-top64" shapes-teacher > "$out/shapes-kd-cache.toml"
echo "== Shapes: shapes-kd's DFT step, live teacher vs cache"
steps step-shapes-live assets/recipes/shapes-kd.toml dft 40
steps step-shapes-cache "$out/shapes-kd-cache.toml" dft 40

if [ -e "$runs/real-teacher/checkpoints/final" ] && [ -e checkpoints/real-student ] \
  && [ -e data/easy-vqa-150/train.json ]; then
  echo "== real scale: a cache of real-teacher (DINOv2-S + SmolLM2-135M) on easy-VQA-150"
  build real-top64 real-teacher data/easy-vqa-150 64 train.json
  with_cache assets/recipes/real-kd.toml "$out/real-top64" real-teacher > "$out/real-kd-cache.toml"
  echo "== real scale: real-kd's DFT step, live teacher vs cache"
  steps step-real-live assets/recipes/real-kd.toml dft 4 data/easy-vqa-150
  steps step-real-cache "$out/real-kd-cache.toml" dft 4 data/easy-vqa-150
fi
python3 scripts/teacher-cache-table.py "$out" "$backend" "$threads" > docs/results/teacher-cache.md
echo "wrote docs/results/teacher-cache.md"
