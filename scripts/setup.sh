#!/usr/bin/env bash
# Set up face3d_live on a fresh Debian/Ubuntu machine: system libraries (EGL/llvmpipe for headless
# rendering, Xvfb + xcb for the Qt window) and a virtual environment in .venv with the project.
#
#   bash scripts/setup.sh         run the app and the CLI: no torch, no mediapipe (Python 3.10-3.14)
#   bash scripts/setup.sh --dev   also what the tests, training and exports need: CPU torch, the teachers
#                                 (mediapipe: Python <= 3.12 only), TensorRT-RTX, pytest, ruff, node tools
#
# PYTHON=python3.13 picks the interpreter. Safe to re-run; skips apt when the libraries are present.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    *) echo "usage: scripts/setup.sh [--dev]" >&2; exit 2 ;;
  esac
done

APT_PACKAGES=(libegl1 libgl1 libgl1-mesa-dri libegl-mesa0 libgles2 xvfb xauth
  libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0 libxcb-xinerama0 libxcb-randr0
  libxcb-render-util0 libxcb-shape0 libxcb-image0 libfontconfig1 libdbus-1-3 libglib2.0-0)

missing=()
# node + npm run the Khronos glTF-Validator in the recording tests
[ "$DEV" = 1 ] && ! command -v npm >/dev/null 2>&1 && APT_PACKAGES+=(nodejs npm)
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
if [ "$DEV" = 0 ]; then
  python -m pip install -q -e .
  echo "face3d_live set up in .venv (runtime only; scripts/setup.sh --dev adds the developer extras)"
  exit 0
fi
# CPU torch first, from PyTorch's CPU index: a bare `torch` requirement would pull a multi-GB CUDA build.
# 2.13.0 is what the project is tested with; a Python it has no wheel for gets the index's newest CPU build.
# Where that index cannot be reached (a machine with its own wheel mirror, like this project's CI), the
# configured index is asked for the same version.
CPU_INDEX=(--index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple)
reachable() { python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" "$1" 2>/dev/null; }
if ! python -c "import torch" 2>/dev/null; then
  if reachable https://download.pytorch.org/whl/cpu/; then
    python -m pip install -q "torch==2.13.0" "${CPU_INDEX[@]}" || python -m pip install -q torch "${CPU_INDEX[@]}"
  else
    python -m pip install -q "torch==2.13.0"
  fi
fi
EXTRAS="torch,dev,ray"
# mediapipe 0.10.21 (the teachers) has wheels for CPython <= 3.12 only: tests that need it skip elsewhere
python -c "import sys; sys.exit(sys.version_info >= (3, 13))" && EXTRAS="$EXTRAS,teacher"
python -m pip install -q -e ".[$EXTRAS]"
# TensorRT-RTX builds engines on the CPU; its wheels may lag a new CPython: the engine tests skip without it
python -m pip install -q -e ".[trt]" || echo "note: TensorRT-RTX not installed for this Python; engine tests skip"
# pyvirtualcam: the app's virtual camera (its tests check the "no backend" path without a v4l2loopback device)
python -m pip install -q -e ".[vcam]" || echo "note: pyvirtualcam not installed for this Python; its tests skip"
if command -v npm >/dev/null 2>&1 && [ -f package.json ]; then npm install --silent --no-audit --no-fund; fi
echo "face3d_live set up in .venv with the developer extras ($EXTRAS,trt,vcam)"
