#!/usr/bin/env bash
# One command for a newcomer on a fresh Debian machine: installs everything edgevit needs into .venv
# (system packages too, when a backend needs them) and runs the main job on the default model.
#   ./setup.sh            set up, then export, analyze and compile (rpi4) efficientformer_l1 into out/
#   ./setup.sh --no-demo  set up only
set -euo pipefail
cd "$(dirname "$0")"

# System packages: the aarch64 cross compiler and qemu-user to build and verify TVM's ARM libraries,
# debootstrap for the emulated arm64 userland (scripts/arm64_userland.sh, cached under ~/.cache/edgevit);
# arm-none-eabi-gcc + newlib and qemu-system-arm to build and run the STM32 C runtime on an emulated Cortex-M7,
# valgrind to check the generated C on the host.
APT_PACKAGES=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user debootstrap
              make gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm valgrind)
if [ ${#APT_PACKAGES[@]} -gt 0 ]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch 2.14.1 / torchvision 0.29.1 come from the machine's local wheel cache when it has one.
.venv/bin/python -m pip install -q -e '.[dev]'
echo "edgevit installed: $(.venv/bin/edgevit --version)"

if [ "${1:-}" != "--no-demo" ]; then
  mkdir -p out
  .venv/bin/edgevit export efficientformer_l1 -o out/efficientformer_l1.onnx
  .venv/bin/edgevit analyze out/efficientformer_l1.onnx -o out/efficientformer_l1.onnx --top 5
  .venv/bin/edgevit compile --target rpi4 efficientformer_l1 -o out/efficientformer_l1-rpi4
fi
