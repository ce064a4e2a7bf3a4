#!/usr/bin/env bash
# #15's GPU-machine measurements (README "Scale-out on Ray"), after the Ray bundle is on the machine
# (scripts/device_ray_bundle.sh builds .devcarry/ray-a..d here: three `bash .devcarry/ray-X/stage.sh` calls, then
# the call that runs, carrying .devcarry/ray-d and .devcarry/gpuenv (scripts/device_bundle.sh: the detector's
# LiteRT) and the weights (scripts/device_weights.sh out; carry .devcarry/weights/face3d-r50.safetensors in a
# call of its own and copy it back into .devcarry/weights/ on the machine):
#
#   source .devcarry/ray-d/setup.sh > /tmp/s.log 2>&1; source scripts/device_env.sh;
#   bash scripts/device_scale.sh batch|serve|process ...
#
#   process  single-process `process` on the 720p clip (per-stage medians: the per-frame cost a worker pays)
#   batch    `bench batch` on the 720p clip looped 10× (mp4v), linked $COPIES times (default 32); extra
#            arguments go to bench batch
#   serve    `bench serve` at $LEVELS (default 32,64,128,256), a stage probe every $PROBE s (0.2); extra
#            arguments go to bench serve
#
# Each runs under scripts/cpu_by_process.py (CPU seconds per process group: where the time goes). JSON and
# logs go to $OUT (the device tool's folder) or out/device; $TAG names them. SPY=1 (serve): 4 s after the load
# generator starts, a `top`, `lscpu` and `nvidia-smi` snapshot, 5 s of py-spy (raw stacks, 200 Hz) on one HTTP
# replica and one model host, if any: $TAG-spy-api.txt, $TAG-spy-modelhost.txt, each with its py-spy log beside
# it (.log; the two wrote over each other in one shared log), and over the same 5 s every replica's, host's,
# HAProxy's and wrk's CPU per thread (scripts/cpu_by_thread.py: $TAG-threads.txt and .json); SPY_NATIVE=1
# records C/C++ frames too (py-spy --native, which pauses the process at each sample). py-spy comes with the
# Ray bundle; `python3 scripts/spy_summary.py FILE` ranks the functions.
set -uo pipefail
step=${1:?usage: scripts/device_scale.sh process|batch|serve [ARGS...]}
shift
out=${OUT:-out/device}
tag=${TAG:-$step}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
clip=${FACE3D_DATA:?source .devcarry/ray-d/setup.sh first}/videos/obama.mp4
run() { python3 scripts/cpu_by_process.py -- python3 -c 'import sys; from face3d_live.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; }
quiet() { grep -v -E '^\(|^\x1b|INFO|WARNING|Created TensorFlow' | tail -${1:-40}; }

spy_on_load() {
    for _ in $(seq 600); do pgrep -x wrk >/dev/null && break; sleep 0.5; done
    sleep 4
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader >"$out/$tag-smi.txt" 2>&1
    top -b -n 1 -w 200 | head -40 >"$out/$tag-top.txt"
    lscpu >"$out/$tag-lscpu.txt" 2>&1
    # which threads of the replicas, hosts, HAProxy and wrk burn the CPU, over the same 5 s
    python3 scripts/cpu_by_thread.py --seconds 5 --match ':Api' --match ':ModelHost' --match '^haproxy' \
        --match '^wrk' --json "$out/$tag-threads.json" >"$out/$tag-threads.txt" 2>&1 &
    local pid spy_mode=--nonblocking
    [[ ${SPY_NATIVE:-0} == 1 ]] && spy_mode=--native
    for who in Api ModelHost; do
        pid=$(pgrep -f "ServeReplica:.*:$who" | head -1)
        # SPY_NATIVE=1: C/C++ frames too (cuDNN, nvJPEG, the CUDA driver, locks); py-spy then pauses the
        # process at each sample, so the run's figures are not comparable with others
        [[ -n $pid ]] && py-spy record --pid "$pid" --duration 5 --rate 200 --format raw $spy_mode \
            -o "$out/$tag-spy-${who,,}.txt" >"$out/$tag-spy-${who,,}.log" 2>&1 &
    done
    wait
}

case $step in
process)
    run process "$clip" --out /tmp/process-out --no-progress "$@" 2>&1 | quiet | tee "$out/$tag.log"
    ;;
batch)
    run bench batch --inputs "$clip" --loop 10 --copies "${COPIES:-32}" --json "$out/$tag.json" "$@" 2>&1 |
        quiet | tee "$out/$tag.log"
    ;;
serve)
    [[ ${SPY:-0} == 1 ]] && spy_on_load &
    run bench serve --levels "${LEVELS:-32,64,128,256}" --duration "${DURATION:-8}" --stage-probe "${PROBE:-0.2}" \
        --json "$out/$tag.json" "$@" 2>&1 |
        quiet | tee "$out/$tag.log"
    ;;
*) echo "usage: scripts/device_scale.sh process|batch|serve [ARGS...]" >&2; exit 2 ;;
esac
# a native crash in a Ray worker leaves its faulthandler dump (every thread) only in the worker's log: keep
# the last lines of up to three such logs, the driver's output cuts them
n=0
for f in $(grep -l -E "Fatal Python error|Segmentation fault" /tmp/ray/session_latest/logs/*.err 2>/dev/null); do
    ((n++ < 3)) && tail -n 400 "$f" >"$out/$tag-crash-$(basename "$f" .err).log"
done
