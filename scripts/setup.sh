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
if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install Rust 1.95+ with rustup first" >&2
  exit 1
fi
