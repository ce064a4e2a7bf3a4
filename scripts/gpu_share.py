"""How much GPU work the service's pieces get when many processes share one GPU (run under MPS, as the service
does: ``nvidia-cuda-mps-control -d`` first, ``echo quit | nvidia-cuda-mps-control`` after).

    python scripts/gpu_share.py model 16x2x4 1x2x64 ...   # r50: P processes x T threads, batches of b crops
    python scripts/gpu_share.py front 15x2 ...            # nvJPEG + BlazeFace: P processes x T threads
    python scripts/gpu_share.py profile                   # one process: GPU kernel time per front-end batch
    python scripts/gpu_share.py detector                  # BlazeFace's networks alone: kernel time per graph replay
    ... --seconds 6 --json out.json

Each configuration's processes start together (a barrier after their warm-up) and run for ``--seconds``.
Prints one line per configuration and writes them as JSON. Needs CUDA, torch and torchvision.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package, run from anywhere


def _model_worker(batch: int, threads: int, seconds: float, barrier, out) -> None:
    from face3d_live.models.registry import create_model
    from face3d_live.scale.model_runner import ModelRunner

    runner = ModelRunner(create_model("r50", "auto"), streams=2, max_batch=max(16, batch))
    s = runner.input_size
    crops = np.random.default_rng(0).integers(0, 255, (batch, s, s, 3), dtype=np.uint8)
    for _ in range(5):
        runner.predict(crops)
    _timed_loop(lambda: runner.predict(crops), threads, seconds, barrier, out, batch)
    runner.close()


def _front_worker(_: int, threads: int, seconds: float, barrier, out) -> None:
    from face3d_live.bench.serve import bench_image
    from face3d_live.scale.gpu_front import GpuFrontEnd

    front = GpuFrontEnd(max_batch=8, workers=2)
    body = bench_image()
    for _ in range(10):
        front.decode_and_detect(body, 10**8)
    _timed_loop(lambda: front.decode_and_detect(body, 10**8), threads, seconds, barrier, out, 1)
    front.close()


def _timed_loop(call, threads: int, seconds: float, barrier, out, items: int) -> None:
    barrier.wait()
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    def loop() -> None:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            call()
            latencies.append(time.perf_counter() - t)

    pool = [threading.Thread(target=loop) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put((len(latencies) * items, latencies))


def run_shared(kind: str, spec: str, seconds: float) -> dict:
    """One configuration: ``PxTxB`` (model) or ``PxT`` (front)."""
    parts = [int(v) for v in spec.lower().split("x")]
    procs_n, threads = parts[0], parts[1]
    batch = parts[2] if kind == "model" else 1
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs_n), ctx.Queue()
    target = _model_worker if kind == "model" else _front_worker
    procs = [ctx.Process(target=target, args=(batch, threads, seconds, barrier, out)) for _ in range(procs_n)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    items = sum(n for n, _ in results)
    lat = np.concatenate([np.asarray(v) for _, v in results]) * 1000
    unit = "crops" if kind == "model" else "images"
    row = {
        "kind": kind,
        "processes": procs_n,
        "threads": threads,
        "batch": batch,
        f"{unit}_per_s": round(items / seconds, 1),
        "call_ms_p50": round(float(np.median(lat)), 3),
        "call_ms_p95": round(float(np.percentile(lat, 95)), 3),
    }
    print(
        f"{kind} P={procs_n} T={threads}"
        + (f" b={batch}" if kind == "model" else "")
        + f": {row[f'{unit}_per_s']:.0f} {unit}/s, call p50 {row['call_ms_p50']:.2f} ms p95 {row['call_ms_p95']:.2f}",
        flush=True,
    )
    return row


def _kernel_ms(call, reps: int) -> tuple[dict[str, float], float]:
    """GPU milliseconds per ``call()`` by kernel name (torch.profiler over ``reps`` calls), and kernels per call."""
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            call()
        torch.cuda.synchronize()
    kernels: dict[str, float] = {}
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    for e in events:
        kernels[e.name] = kernels.get(e.name, 0.0) + e.device_time / reps / 1000
    return kernels, len(events) / reps


def profile_front(batches: tuple[int, ...] = (1, 2, 8), top: int = 8) -> list[dict]:
    """GPU kernel time per front-end batch (decode + detect + copies back), by kernel (torch.profiler)."""
    import torch

    from face3d_live.bench.serve import bench_image
    from face3d_live.scale.gpu_front import GpuFrontEnd, _Detectors

    front = GpuFrontEnd(max_batch=8, workers=1)
    detectors = _Detectors(front.device, 0.5, True)
    body = bench_image()
    rows = []
    for k in batches:
        batch = functools.partial(front._run_batch, detectors, [body] * k, [False] * k, finish=False)
        for _ in range(10):
            batch()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(50):
            batch()
        wall = (time.perf_counter() - t) / 50 * 1000
        kernels, count = _kernel_ms(batch, 20)
        total = sum(kernels.values())
        print(f"batch {k}: wall {wall:.2f} ms, GPU kernels {total:.3f} ms ({count:.0f} kernels)")
        biggest = sorted(kernels.items(), key=lambda kv: -kv[1])[:top]
        for name, ms in biggest:
            print(f"    {ms:.3f} ms  {name[:110]}")
        rows.append({"batch": k, "wall_ms": round(wall, 3), "gpu_ms": round(total, 3), "top": biggest})
    front.close()
    return rows


def profile_detector(batches: tuple[int, ...] = (1, 8), reps: int = 50) -> list[dict]:
    """GPU kernel time of one CUDA-graph replay of each BlazeFace network, in NHWC and NCHW activations
    (torch.profiler, one process): the layouts and kernels behind the detector's share of the front end.
    ``batches``: powers of two (the service's graph buckets)."""
    import torch

    from face3d_live.detect.blazeface_torch import TorchBlazeFace, _GraphedNetwork

    device = torch.device("cuda")
    rows = []
    for full in (True, False):
        for layout, fmt in (("NHWC", torch.channels_last), ("NCHW", torch.contiguous_format)):
            net = TorchBlazeFace.bundled(full).to(device).eval().to(memory_format=fmt)
            # the graphs the service replays (its batch buckets), captured as it captures them
            graphed = _GraphedNetwork(net, net.input_size, max(batches), fmt)
            for b in batches:
                graph = graphed.graphs[b]
                for _ in range(5):
                    graph.replay()
                kernels, count = _kernel_ms(graph.replay, reps)
                name = "full-range" if full else "short-range"
                total = sum(kernels.values())
                top = sorted(kernels.items(), key=lambda kv: -kv[1])[:3]
                print(f"{name} {layout} batch {b}: {total:.3f} ms of GPU kernels ({count:.0f} kernels)")
                for kernel, ms in top:
                    print(f"    {ms:.3f} ms  {kernel[:100]}")
                rows.append(
                    {
                        "network": name,
                        "layout": layout,
                        "batch": b,
                        "gpu_ms": round(total, 4),
                        "kernels": count,
                        "top": top,
                    }
                )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("model", "front", "profile", "detector"))
    p.add_argument("specs", nargs="*", help="PxTxB (model) or PxT (front) configurations")
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args()
    if args.what == "profile":
        rows = profile_front()
    elif args.what == "detector":
        rows = profile_detector()
    else:
        if not args.specs:
            p.error("give at least one configuration, e.g. 16x2x4 (model) or 15x2 (front)")
        rows = [run_shared(args.what, spec, args.seconds) for spec in args.specs]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
