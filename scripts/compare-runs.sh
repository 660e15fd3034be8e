#!/usr/bin/env bash
# Compares two runs folders by what they computed, for checking that a change of code changes
# no result: every checkpoint of every run is exported whole as f32 safetensors by module path
# (`condenser export --web --dtype f32`) and the two exports are compared byte for byte; every
# step's loss, loss terms, learning rate and gradient norm, and every evaluation, are compared
# from events.jsonl. (The checkpoints' own .bpk files differ between any two runs: burn gives
# every parameter a random id.) Exits 1 on any difference.
#
#   bash scripts/compare-runs.sh RUNS_A RUNS_B [CONDENSER]
#
# e.g. the smoke chain under two builds, each in its own folder with its own world:
#   condenser shapes --out data/smoke --train 48 --val 8 --test 8
#   for r in smoke smoke-kd smoke-mod-dense smoke-mod smoke-mod-pref; do
#     condenser run assets/recipes/$r.toml --backend cpu; done
set -uo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
A=$1; B=$2
BIN=${3:-$(cd "$(dirname "$0")/.." && pwd)/target/release/condenser}
[ -x "$BIN" ] || BIN=$(command -v condenser || true)
[ -x "$BIN" ] || { echo "compare-runs: no condenser binary (pass its path as the third argument)" >&2; exit 2; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
same=0; diff=0
while IFS= read -r ck; do
  d=$(dirname "$ck")
  for side in a b; do
    root=$A; [ $side = b ] && root=$B
    if ! "$BIN" export --web "$root/$d" -o "$tmp/$side" --dtype f32 >/dev/null 2>"$tmp/err"; then
      echo "export failed: $root/$d: $(tail -1 "$tmp/err")"; diff=$((diff + 1)); continue 2
    fi
  done
  if cmp -s "$tmp/a/weights.safetensors" "$tmp/b/weights.safetensors"; then
    same=$((same + 1))
  else
    echo "differs: $d"; diff=$((diff + 1))
  fi
done < <(cd "$A" && find . -path '*checkpoints/*' -name model.bpk | sort)
steps() {
  python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["type"] == "step":
        print(e["global_step"], repr(e["loss"]), sorted(e.get("terms", {}).items()), e["lr"], e["grad_norm"])
    elif e["type"] == "eval":
        print("eval", e["accuracy"], e["questions"])
PY
}
while IFS= read -r ev; do
  if [ -f "$B/$ev" ] && cmp -s <(steps "$A/$ev") <(steps "$B/$ev"); then
    same=$((same + 1))
  else
    echo "differs: $ev"; diff=$((diff + 1))
  fi
done < <(cd "$A" && find . -name events.jsonl | sort)
echo "compare-runs: $same identical, $diff different ($A vs $B)"
[ "$diff" = 0 ]
