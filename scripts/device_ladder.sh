#!/usr/bin/env bash
# The ladder's GPU training runs (nvidia-h100-x1), each within the device tool's 64 MiB upload and
# 10-minute call. Run `scripts/device_bench.sh stage` first (r50 weights in the tree → /tmp/keep), then,
# while the machine is warm, these with the r50 and INT8 files moved out of the tree:
#
#   continue  carry .devcarry/ladder2 (data pack, 44 MB) + .devcarry/tp (torch-pruning wheel), the lite
#             rung in the tree: distil it further (teacher-only loss), then QAT → $OUT/cont
#   frontier  (pack left in /tmp/keep by `continue`) the reference points of the SSIM discussion:
#             QAT of the unpruned original → $OUT/q0, and a 30 %-pruned rung → $OUT/r30
#
# Files over 15 MiB come back split (`cat f.part-* > f`).
set -uo pipefail
step=${1:?usage: scripts/device_ladder.sh continue|frontier}
out=${OUT:-out/device}
export PYTHONUNBUFFERED=1
keep=/tmp/keep
teacher=$keep/face3d-r50.safetensors
[[ -s $teacher ]] || { echo "r50 weights not on the machine: run scripts/device_bench.sh stage first"; exit 3; }
# torch-pruning: the carried wheel, or the copy an earlier step left on the machine
wheel=$(ls .devcarry/tp/*.whl "$keep"/tp/*.whl 2>/dev/null | head -1)
python3 -m pip install -q --no-deps "$wheel" 2>&1 | tail -2
python3 -c "import torch_pruning" || { echo "torch-pruning did not install (carry .devcarry/tp)"; exit 4; }
mkdir -p "$keep/tp" && cp -n "$wheel" "$keep/tp/"
train() { python3 -m face3d_live.training.lightweight --data "$keep/data.npz" --teacher "$teacher" "$@" 2>&1 |
    grep -v -i warn | tail -n 6; }
split_big() { find "$out" -name '*.safetensors' -size +15M -exec split -b 15M {} {}.part- \; -delete; }

case $step in
continue)
    cp .devcarry/ladder2/data.npz "$keep/" || exit 3
    train --out "$out/cont" --continue-lite face3d_live/models/weights/face3d-r50-lite.safetensors \
        --distill-minutes "${DISTILL_MIN:-5.5}" --qat-minutes "${QAT_MIN:-2}" --manual-weight 0 --distill-lr 4e-4
    ;;
frontier)
    [[ ${SKIP_Q0:-} ]] || train --out "$out/q0" --qat-original --qat-minutes 1.5 --manual-weight 0
    train --out "$out/r30" --ratio 0.3 --distill-minutes 4 --qat-minutes 0.8 --manual-weight 0
    ;;
*)
    echo "unknown step $step (continue|frontier)"
    exit 2
    ;;
esac
split_big
ls -la "$out"/*
