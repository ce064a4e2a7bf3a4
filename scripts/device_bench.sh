#!/usr/bin/env bash
# The GPU-machine measurements behind README's H100 tables, in two steps that each fit the device
# tool's 64 MiB upload (the r50 weights alone are 53 MB), run back to back while the machine is warm:
#
#   models  r50 weights in the tree: pytest -m gpu, `bench backends`; leaves the weights in /tmp/keep
#   stage   r50 weights in the tree: only leaves them in /tmp/keep
#   gl      r50 weights out of the tree, carry .devcarry/gpuenv (scripts/device_bundle.sh) and
#           .devcarry/vid/single_face.mp4: ladder GPU rows, `bench render`, `bench app` (r50, torch)
#
# Results go to $OUT (the device tool's folder) or out/device.
set -uo pipefail
step=${1:?usage: scripts/device_bench.sh stage|models|gl}
out=${OUT:-out/device}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
cli() { python3 -c 'import sys; from face3d_live.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; }
quiet() { grep -v -i -E 'warn|^INFO: Created TensorFlow'; }
weights=face3d_live/models/weights

case $step in
stage)  # only leave the r50 weights on the machine for a following `gl` step
    mkdir -p /tmp/keep && cp "$weights/face3d-r50.safetensors" /tmp/keep/ || exit 3
    ;;
models)
    mkdir -p /tmp/keep && cp "$weights/face3d-r50.safetensors" /tmp/keep/ || exit 3
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader
    python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_inference_gpu.py 2>&1 | tail -12
    python3 -m face3d_live.bench.backends --batches 1,8,32,128,256 --concurrent 256x2 \
        --json "$out/backends.json" 2>&1 | quiet
    ;;
gl)
    [[ -f $weights/face3d-r50.safetensors ]] || ln -sf /tmp/keep/face3d-r50.safetensors "$weights/" || exit 3
    [[ -s $weights/face3d-r50.safetensors ]] || { echo "r50 weights missing: run the models step first"; exit 3; }
    # shellcheck source=scripts/device_env.sh
    source scripts/device_env.sh || exit 4
    python3 - "$out/ladder-gpu.json" <<'PY' 2>&1 | quiet
import json, sys
from face3d_live.bench.ladder import torch_gpu_latency
from face3d_live.training.prune import load_r50_any
from face3d_live.training.slim import load_slim
rows = torch_gpu_latency(
    {"r50": load_r50_any(None), "r50-lite": load_slim("face3d_live/models/weights/face3d-r50-lite.safetensors")},
    seconds=2.0,
)
open(sys.argv[1], "w").write(json.dumps(rows, indent=1))
PY
    cli bench render --json "$out/render.json" 2>&1 | quiet
    cli bench render --compute off --sizes 2048 4096 --json "$out/render_raster.json" 2>&1 | quiet
    video=.devcarry/vid/single_face.mp4
    [[ -f $video ]] || video=demo
    cli bench app --model r50 --backend torch --source "$video" --fps 120 --json "$out/app_120.json" 2>&1 | quiet
    cli bench app --model r50 --backend torch --source "$video" --fps 0 --json "$out/app_unpaced.json" 2>&1 | quiet
    ;;
*)
    echo "unknown step $step (stage|models|gl)"
    exit 2
    ;;
esac
