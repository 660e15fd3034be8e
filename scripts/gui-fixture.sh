#!/usr/bin/env bash
# Regenerates the desktop app's fixture runs (app/tests/fixtures/runs/): real runs of the tiny
# smoke recipes on a small Shapes world, trained on the CPU, kept without their checkpoints.
# They cover every panel: a teacher, a LLaVA-KD student (all loss terms, relation matrices), a
# run stopped half-way, an MoE student (routing) and its preference-distilled successor.
# The snapshot tests (app/tests/gui_snapshots.rs) draw these; after regenerating, refresh the
# snapshots with UPDATE_SNAPSHOTS=1 cargo test -p condenser --test gui_snapshots.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CONDENSER_BIN:-target/debug/condenser}"
[ -x "$bin" ] || cargo build -p condenser
work="target/gui-fixture"
rm -rf "$work"
mkdir -p "$work"
data="$work/data"
runs="$work/runs"
"$bin" shapes --out "$data" --train 400 --val 8 --test 24 --seed 11
# the smoke recipes train half an epoch per stage (they exist for fast tests); the fixtures train
# longer so the curves and the answers show something
mkdir -p "$work/recipes"
for r in smoke smoke-kd smoke-mod-dense smoke-mod smoke-mod-pref; do
  sed 's/^epochs = 0.5$/epochs = '"${GUI_FIXTURE_EPOCHS:-6.0}"'/' "assets/recipes/$r.toml" >"$work/recipes/$r.toml"
done
run() { "$bin" run "$work/recipes/$1.toml" --data "$data" --runs-dir "$runs" --backend cpu "${@:2}"; }
run smoke
run smoke-kd
run smoke-kd --name smoke-kd-stopped --stop-after 450 --no-eval
run smoke-mod-dense
run smoke-mod
run smoke-mod-pref

dest="app/tests/fixtures/runs"
rm -rf "$dest"
mkdir -p "$dest"
for r in smoke smoke-kd smoke-kd-stopped smoke-mod-dense smoke-mod smoke-mod-pref; do
  mkdir -p "$dest/$r"
  for f in recipe.toml events.jsonl report.json report.md routing.png; do
    [ -f "$runs/$r/$f" ] && cp "$runs/$r/$f" "$dest/$r/"
  done
  # the sample images travel with the run (the app looks for them under the run folder when
  # the recipe's data folder is gone)
  if [ -f "$dest/$r/report.json" ]; then
    grep -o '"image": *"[^"]*"' "$dest/$r/report.json" | sed 's/.*: *"\(.*\)"/\1/' | sort -u |
      while read -r img; do
        mkdir -p "$dest/$r/$(dirname "$img")"
        cp "$data/$img" "$dest/$r/$img"
      done
  fi
done
# checkpoints are not kept: a stopped fixture run has nothing to resume from
du -sh "$dest"
