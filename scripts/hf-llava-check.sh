#!/usr/bin/env bash
# A checkpoint exported as a transformers LLaVA folder answers as `condenser chat` does: exports
# CHECKPOINT (--format hf-llava), asks `condenser chat` N questions spread evenly over a LLaVA
# data file (a record's image and first question each), then scripts/hf-llava-check.py loads the folder
# with transformers and compares greedy answers.
#
#   bash scripts/hf-llava-check.sh CHECKPOINT DATA.json [N]     # N: 5 by default
#
# Needs the PyTorch peer (bash scripts/peer-setup.sh: torch, transformers and Pillow in
# .cache/peer-venv) and a release build (cargo build --release -p condenser).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,10p "$0"; exit 2; }
ckpt="$1"; data="$2"; n="${3:-5}"
bin="${CONDENSER_BIN:-target/release/condenser}"
py=".cache/peer-venv/bin/python"
[ -x "$py" ] || { echo "hf-llava-check: no .cache/peer-venv: run bash scripts/peer-setup.sh" >&2; exit 1; }
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$bin" export "$ckpt" --format hf-llava -o "$out/llava" --backend cpu
# image <TAB> question of N records spread over the file
"$py" - "$data" "$n" > "$out/questions.tsv" <<'PY'
import json, os, sys
path, n = sys.argv[1], int(sys.argv[2])
records = json.load(open(path))
for r in records[::max(1, len(records) // n)][:n]:
    turns = r.get("conversations") or r.get("messages")
    q = turns[0].get("value", turns[0].get("content"))
    print(os.path.join(os.path.dirname(path), r["image"]) + "\t" + q.replace("<image>", "").strip())
PY
cases="$out/cases.json"
while IFS=$'\t' read -r image question; do
  answer="$("$bin" chat --checkpoint "$ckpt" --image "$image" --prompt "$question" --backend cpu 2>/dev/null)"
  "$py" -c 'import json,sys; print(json.dumps({"image": sys.argv[1], "prompt": sys.argv[2], "answer": sys.argv[3]}))' \
    "$image" "$question" "$answer"
done < "$out/questions.tsv" | "$py" -c 'import json,sys; print(json.dumps([json.loads(l) for l in sys.stdin]))' > "$cases"
"$py" scripts/hf-llava-check.py "$out/llava" "$cases"
