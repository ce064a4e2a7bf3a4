#!/usr/bin/env bash
# Set up face3d_live on a fresh Debian/Ubuntu machine: system libraries (EGL/llvmpipe for headless
# rendering, Xvfb + xcb for the Qt window) and a virtual environment in .venv with the project.
# Safe to re-run; skips apt when not root and the libraries are already present.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(libegl1 libgl1 libgl1-mesa-dri libegl-mesa0 libgles2 xvfb xauth
  libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0 libxcb-xinerama0 libxcb-randr0
  libxcb-render-util0 libxcb-shape0 libxcb-image0 libfontconfig1 libdbus-1-3 libglib2.0-0)

missing=()
# node + npm run the Khronos glTF-Validator in the recording tests
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# CPU torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[torch,trt,dev]"
if command -v npm >/dev/null 2>&1 && [ -f package.json ]; then npm install --silent --no-audit --no-fund; fi
echo "face3d_live set up in .venv"
