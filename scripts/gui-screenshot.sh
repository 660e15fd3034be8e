#!/usr/bin/env bash
# Starts the real desktop app under a virtual X server (Xvfb) on a fixture run, takes a
# screenshot of the screen with ImageMagick, and fails unless the picture shows a drawn window
# (many colours, not one flat fill). CI runs it after the tests; docs/gui.png in the README is
# made by it:  bash scripts/gui-screenshot.sh docs/gui.png
#
# Options through the environment: CONDENSER_BIN (default target/debug/condenser, built by the
# tests), GUI_RUN / GUI_TAB / GUI_COMPARE (what the window shows).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/gui-screenshot.png}"
bin="${CONDENSER_BIN:-target/debug/condenser}"
run="${GUI_RUN:-smoke-kd}"
tab="${GUI_TAB:-losses}"
runs_dir="app/tests/fixtures/runs"
for tool in Xvfb import identify; do
  command -v "$tool" >/dev/null || { echo "gui-screenshot: $tool missing; run scripts/setup.sh" >&2; exit 1; }
done
[ -x "$bin" ] || { echo "gui-screenshot: $bin not built (cargo build -p condenser)" >&2; exit 1; }
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
mkdir -p "$(dirname "$out")"
tmp="$(mktemp -d)"

# a free display number
display=""
for n in $(seq 90 120); do
  if [ ! -e "/tmp/.X11-unix/X$n" ] && [ ! -e "/tmp/.X$n-lock" ]; then display=":$n"; break; fi
done
[ -n "$display" ] || { echo "gui-screenshot: no free X display" >&2; exit 1; }
Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp >"$tmp/xvfb.log" 2>&1 &
xvfb=$!
app=""
cleanup() {
  [ -n "$app" ] && kill "$app" 2>/dev/null || true
  kill "$xvfb" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X${display#:}" ] && break; sleep 0.1; done

extra=()
[ -n "${GUI_COMPARE:-}" ] && extra+=(--compare "$GUI_COMPARE")
DISPLAY="$display" "$bin" gui --runs-dir "$runs_dir" --open "$run" --tab "$tab" "${extra[@]}" \
  --backend cpu --overlay --size 1280x800 --exit-after 60 >"$tmp/app.log" 2>&1 &
app=$!

# wait until the window is drawn: a flat screen has a handful of colours, a drawn app hundreds
colours=0
for _ in $(seq 40); do
  sleep 1
  if ! kill -0 "$app" 2>/dev/null; then
    echo "gui-screenshot: the app exited early:" >&2; cat "$tmp/app.log" >&2; exit 1
  fi
  DISPLAY="$display" import -window root "$tmp/shot.png" 2>/dev/null || continue
  colours=$(identify -format '%k' "$tmp/shot.png")
  [ "$colours" -gt 200 ] && break
done
sleep 2  # let the plots settle, then take the picture kept
DISPLAY="$display" import -window root "$tmp/shot.png"
colours=$(identify -format '%k' "$tmp/shot.png")
sd=$(identify -format '%[fx:standard_deviation]' "$tmp/shot.png")
cp "$tmp/shot.png" "$out"
if [ "$colours" -le 200 ]; then
  echo "gui-screenshot: $out looks blank ($colours colours, std $sd)" >&2
  cat "$tmp/app.log" >&2
  exit 1
fi
echo "gui-screenshot: $out: $colours colours, std $sd (not blank)"
