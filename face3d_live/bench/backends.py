"""`face3d-live bench backends`: the r50 network (ResNet50 at 224²) on every backend here.

Per variant and batch size:
- ``latency_ms``: one batch on the GPU alone (CUDA events around the compute, synchronised each time;
  median), or wall time of a synchronous call on CPU.
- ``e2e_ms``: copy-in + compute + copy-out, host wall clock, synchronised (median).
- ``faces_per_s``: back-to-back batches (GPU never idle), batch / mean time per batch.
- ``power_w`` / ``joules_per_face``: NVML board power, sampled every 10 ms, and the board's energy
  counter, over the throughput run.

Executor: frames of 1280×720; per frame ``--faces`` similarity crops are cut on the host straight into
the slot's page-locked input (uint8 -> float NCHW) and copied in, computed, copied out; faces/s with
1, 2 and 4 streams (slots). ``precropped`` repeats it with ready crops (host work = one memcpy).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import threading
import time
from pathlib import Path

import numpy as np

NAME = "backends"
HELP = "r50 (ResNet50 224²) latency, faces/s and energy per backend; multi-stream executor on 720p crops"
log = logging.getLogger(__name__)

VARIANTS = {  # name: (backend, precision, options)
    "torch-fp32-eager": ("torch", "fp32", {"cuda_graphs": False, "channels_last": False, "fuse_bn": False}),
    "torch-fp16-eager": ("torch", "fp16", {"cuda_graphs": False, "channels_last": True, "fuse_bn": True}),
    # the shipped configuration: BatchNorm folded, conv+bias(+add)+ReLU fused (cuDNN), CUDA graphs
    "torch-fp16-graphs": ("torch", "fp16", {"cuda_graphs": True, "channels_last": True, "fuse_bn": True}),
    "torch-fp16-graphs-unfused": (  # the same without the activation fusion (session 1's best)
        "torch",
        "fp16",
        {"cuda_graphs": True, "channels_last": True, "fuse_bn": True, "fuse_act": False},
    ),
    "torch-fp16-graphs-nofuse": (
        "torch",
        "fp16",
        {"cuda_graphs": True, "channels_last": True, "fuse_bn": False},
    ),
    "tensorrt-fp16": ("tensorrt", "fp16", {}),
    "tensorrt-int8": ("tensorrt", "int8", {}),
    "onnxruntime-cpu-fp32": ("onnxruntime", "fp32", {}),
    "torch-cpu-fp32": ("torch", "fp32", {}),
}
DEFAULT_VARIANTS = (
    "torch-fp32-eager,torch-fp16-eager,torch-fp16-graphs-unfused,torch-fp16-graphs,tensorrt-fp16,"
    "onnxruntime-cpu-fp32"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights", type=Path, default=None, help="r50 weights (default: shipped, else random init)"
    )
    p.add_argument(
        "--variants", default=DEFAULT_VARIANTS, help=f"comma-separated from: {', '.join(VARIANTS)}"
    )
    p.add_argument("--batches", default="1,8,32,128", help="batch sizes (default 1,8,32,128)")
    p.add_argument("--cpu-batches", default="1,8", help="batch sizes for CPU variants (default 1,8)")
    p.add_argument("--seconds", type=float, default=1.5, help="time per measurement (default 1.5)")
    p.add_argument(
        "--faces", type=int, default=8, help="faces per 720p frame in the executor run (default 8)"
    )
    p.add_argument("--frames", type=int, default=400, help="frames per executor run (default 400)")
    p.add_argument("--streams", default="1,2,4", help="executor slot counts (default 1,2,4)")
    p.add_argument("--no-executor", action="store_true", help="skip the executor runs")
    p.add_argument(
        "--concurrent", default="", metavar="BxS", help="also S slots of batch B side by side, e.g. 128x2"
    )
    p.add_argument(
        "--compile", action="store_true", help="also torch.compile (inductor, FP16) at batches <= 8"
    )
    p.add_argument(
        "--compile-mode", default="reduce-overhead", help="torch.compile mode (default reduce-overhead)"
    )
    p.add_argument(
        "--cache-dir", default=None, help="ONNX/engine cache (default: $FACE3D_ENGINES or engines/)"
    )


# ---- helpers -----------------------------------------------------------------------------------------
class PowerSampler:
    """NVML board power every ``interval`` s on a thread, plus the energy counter, over a ``with`` block."""

    def __init__(self, monitor, interval: float = 0.01) -> None:
        self.monitor, self.interval = monitor, interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.energy_j: float | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            w = self.monitor.power_w()
            if w is not None:
                self.samples.append(w)

    def __enter__(self) -> PowerSampler:
        self._e0 = self.monitor.energy_j()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        e1 = self.monitor.energy_j()
        self.energy_j = e1 - self._e0 if e1 is not None and self._e0 is not None else None

    @property
    def mean_w(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


def _spec(weights: Path | None):
    from face3d_live.inference.spec import ModelSpec
    from face3d_live.models.weights import default_r50_weights

    path = weights or default_r50_weights()
    if path.is_file():
        from face3d_live.models.r50_face import r50_spec

        return r50_spec(path), str(path)
    import torch

    from face3d_live.models.r50 import FaceR50
    from face3d_live.models.r50_face import calibration_crops

    torch.manual_seed(0)  # speed does not depend on the weights' values
    return ModelSpec(name="r50-random", module=FaceR50().eval(), calibration=calibration_crops), "random init"


def _gpu_batch(backend, b: int, seconds: float, monitor) -> dict:
    """Latency (GPU events, synced), end-to-end (wall, with copies), throughput + power (back-to-back)."""
    from face3d_live.inference import cuda

    slot = backend.create_slot(0, b)
    try:
        slot.host_in[:] = np.random.default_rng(0).random(slot.host_in.shape, dtype=np.float32)
        start, end = cuda.Event(timing=True), cuda.Event(timing=True)
        for _ in range(10):  # warm-up (lazy init, cuDNN autotune) and input on the device
            backend.infer(slot, b)
            backend.wait(slot)
        lat, e2e = [], []
        deadline = time.perf_counter() + seconds / 3
        while time.perf_counter() < deadline or len(lat) < 20:
            start.record(slot.stream)
            backend.infer(slot, b, check_inputs=False, copies=False)
            end.record(slot.stream)
            end.synchronize()
            lat.append(end.elapsed_ms(start))
        deadline = time.perf_counter() + seconds / 3
        while time.perf_counter() < deadline or len(e2e) < 20:
            t0 = time.perf_counter_ns()
            backend.infer(slot, b, check_inputs=False)
            backend.wait(slot)
            e2e.append((time.perf_counter_ns() - t0) / 1e6)
        # throughput: enqueue in chunks so the GPU never waits for the host
        iters, chunk = 0, max(4, int(20 / max(statistics.median(lat), 0.05)))
        sampler = PowerSampler(monitor) if monitor is not None else None
        with sampler or _null():
            start.record(slot.stream)
            t_end = time.perf_counter() + seconds
            while time.perf_counter() < t_end:
                for _ in range(chunk):
                    backend.infer(slot, b, check_inputs=False, copies=False)
                iters += chunk
                slot.stream.synchronize()
            end.record(slot.stream)
            end.synchronize()
        per_batch_ms = end.elapsed_ms(start) / iters
        row = {
            "latency_ms": statistics.median(lat),
            "latency_p90_ms": float(np.percentile(lat, 90)),
            "e2e_ms": statistics.median(e2e),
            "faces_per_s": b * 1000.0 / per_batch_ms,
            "batches_timed": iters,
        }
        if sampler is not None and sampler.mean_w is not None:
            row["power_w"] = sampler.mean_w
            energy = sampler.energy_j if sampler.energy_j else sampler.mean_w * per_batch_ms * iters / 1000
            row["joules_per_face"] = energy / (iters * b)
        for e in (start, end):
            e.close()
        return row
    finally:
        backend.release_slot(slot)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def _cpu_batch(backend, b: int, seconds: float) -> dict:
    x = np.random.default_rng(0).random((b, *backend.input_shape), dtype=np.float32)
    backend.infer_sync(x)
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        t0 = time.perf_counter_ns()
        backend.infer_sync(x)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    med = statistics.median(times)
    return {"latency_ms": med, "e2e_ms": med, "faces_per_s": b * 1000.0 / med, "batches_timed": len(times)}


def _compile_rows(spec, batches: list[int], seconds: float, mode: str) -> dict:
    """torch.compile (inductor; reduce-overhead = its own CUDA graphs), FP16 channels_last."""
    import copy

    import torch

    module = copy.deepcopy(spec.torch_module).cuda().half().to(memory_format=torch.channels_last).eval()
    fn = torch.compile(module, mode=mode)
    rows = {}
    for b in batches:
        x = (
            torch.rand(b, *spec.input_shape, device="cuda")
            .half()
            .contiguous(memory_format=torch.channels_last)
        )
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in range(3):
                fn(x)
            torch.cuda.synchronize()
            compile_s = time.perf_counter() - t0
            lat = []
            deadline = time.perf_counter() + seconds
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            while time.perf_counter() < deadline or len(lat) < 20:
                s.record()
                fn(x)
                e.record()
                e.synchronize()
                lat.append(s.elapsed_time(e))
        med = statistics.median(lat)
        rows[str(b)] = {
            "latency_ms": med,
            "faces_per_s": b * 1000.0 / med,
            "compile_s": compile_s,
            "mode": mode,
        }
    return rows


def _frame_720p() -> np.ndarray:
    """A 1280×720 RGB frame: the astronaut photo scaled into it, plus sensor-like noise."""
    import cv2

    from face3d_live.capture.demo import demo_photo

    frame = cv2.resize(demo_photo(), (1280, 720), interpolation=cv2.INTER_LINEAR)
    noise = np.random.default_rng(1).integers(0, 8, frame.shape, dtype=np.uint8)
    return cv2.add(frame, noise)


def _executor_rows(backends: dict, faces: int, frames: int, streams: list[int]) -> dict:
    """faces/s through the executor per fill mode and slot count. ``backends``: input format -> backend."""
    import cv2

    from face3d_live.geometry.crop import CropTransform
    from face3d_live.inference import InferenceExecutor

    frame = _frame_720p()
    rng = np.random.default_rng(2)
    rois = [
        [
            CropTransform(
                (540 + rng.normal(0, 200), 240 + rng.normal(0, 80)),
                rng.uniform(150, 350),
                rng.normal(0, 0.2),
                224,
            ).matrix()
            for _ in range(faces)
        ]
        for _ in range(16)
    ]  # 16 frames' worth of face crops, cycled
    scale = np.float32(1.0 / 255.0)

    def warp(m: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
        return cv2.warpAffine(
            frame, m, (224, 224), dst=dst, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )

    def fill_float(k: int):  # crop, then uint8 HWC -> float CHW on the host
        def fill(view: np.ndarray) -> None:
            for i, m in enumerate(rois[k % 16]):
                np.multiply(warp(m).transpose(2, 0, 1), scale, out=view[i], casting="unsafe")

        return fill

    def fill_uint8(k: int):  # crop straight into the page-locked slot; conversion runs on the GPU
        def fill(view: np.ndarray) -> None:
            for i, m in enumerate(rois[k % 16]):
                warp(m, view[i])

        return fill

    ready = np.stack([warp(m) for m in rois[0]]).transpose(0, 3, 1, 2).astype(np.float32) * scale

    def fill_ready(_k: int):
        return lambda view: np.copyto(view, ready)

    modes = (
        ("720p_uint8_gpu_convert", "uint8", fill_uint8),
        ("720p_float32_host_convert", "float32", fill_float),
        ("precropped_float32", "float32", fill_ready),
    )
    out: dict = {}
    for mode, fmt, make_fill in modes:
        backend = backends[fmt]
        rows = {}
        for s in streams:
            with InferenceExecutor(backend, streams=s, max_batch=faces) as ex:
                for k in range(2 * s):  # warm-up
                    if ex.full:
                        ex.collect()
                    ex.submit_fill(faces, make_fill(k))
                ex.drain()
                lat = []
                t0 = time.perf_counter()
                for k in range(frames):
                    if ex.full:
                        lat.append(ex.collect().latency_ns / 1e6)
                    ex.submit_fill(faces, make_fill(k))
                lat += [r.latency_ns / 1e6 for r in ex.drain()]
                wall = time.perf_counter() - t0
            rows[str(s)] = {
                "faces_per_s": frames * faces / wall,
                "frames_per_s": frames / wall,
                "latency_ms": statistics.median(lat),
            }
        base = rows[str(streams[0])]["faces_per_s"]
        for r in rows.values():
            r["speedup_vs_1"] = r["faces_per_s"] / base if streams[0] == 1 else None
        out[mode] = rows
    return out


def _concurrent(backend, b: int, streams: int, seconds: float) -> dict:
    """Compute-only throughput with ``streams`` slots of batch ``b`` running side by side."""
    slots = [backend.create_slot(i, b) for i in range(streams)]
    try:
        for slot in slots:
            slot.host_in[:] = 0.5
            backend.infer(slot, b)
            backend.wait(slot)
        iters = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(8):
                for slot in slots:
                    backend.infer(slot, b, check_inputs=False, copies=False)
            iters += 8
            for slot in slots:
                slot.stream.synchronize()
        wall = time.perf_counter() - t0
        return {"batch": b, "streams": streams, "faces_per_s": iters * streams * b / wall}
    finally:
        for slot in slots:
            backend.release_slot(slot)


# ---- run -----------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    from face3d_live.errors import BackendUnavailable, EngineBuildError
    from face3d_live.inference import create_backend, cuda
    from face3d_live.monitor.gpu import GpuMonitor

    spec, weights = _spec(args.weights)
    batches = [int(b) for b in args.batches.split(",")]
    cpu_batches = [int(b) for b in args.cpu_batches.split(",")]
    gpu = not cuda.cuda_status()
    monitor = GpuMonitor() if gpu else None
    if monitor is not None and not monitor.available:
        monitor = None
    result: dict = {
        "model": "r50 (ResNet50 224², 1639 outputs: 478 points, 68 points, presence)",
        "weights": weights,
        "variants": {},
    }
    if gpu:
        result["device"] = f"{cuda.device_name()} (sm{''.join(map(str, cuda.compute_capability()))})"
    if monitor is not None:
        with PowerSampler(monitor) as idle:
            time.sleep(1.0)  # a quiet second: the idle baseline for the power figures
        result["idle_power_w"] = idle.mean_w

    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        backend_name, precision, options = VARIANTS[name]
        on_gpu = name.startswith(("torch-fp", "tensorrt"))
        if on_gpu and not gpu:
            result["variants"][name] = {"skipped": cuda.cuda_status()}
            continue
        sizes = batches if on_gpu else cpu_batches
        if backend_name == "onnxruntime":
            import os

            options = {"threads": os.cpu_count()}
        try:
            backend = create_backend(
                backend_name,
                model=spec,
                precision=precision,
                device="cuda" if on_gpu else "cpu",
                max_batch=max(sizes),
                cache_dir=args.cache_dir,
                **options,
            )
        except (BackendUnavailable, EngineBuildError) as exc:
            result["variants"][name] = {"skipped": str(exc)}
            print(f"{name}: skipped ({exc})")
            continue
        if backend.name != backend_name:  # tensorrt fell back to torch: that row is not tensorrt
            backend.deactivate()
            result["variants"][name] = {"skipped": "tensorrt unavailable on this GPU (fell back to torch)"}
            continue
        rows = {}
        try:
            for b in sizes:
                rows[str(b)] = (
                    _gpu_batch(backend, b, args.seconds, monitor)
                    if on_gpu
                    else _cpu_batch(backend, b, args.seconds)
                )
        finally:
            backend.deactivate()
        result["variants"][name] = rows

    if args.compile and gpu:
        try:
            result["variants"]["torch-fp16-compile"] = _compile_rows(
                spec, [b for b in batches if b <= 8], args.seconds, args.compile_mode
            )
        except Exception as exc:  # inductor failures are many and varied; the row records it
            result["variants"]["torch-fp16-compile"] = {"skipped": f"{type(exc).__name__}: {exc}"[:300]}

    if gpu and args.concurrent:
        b, n = (int(v) for v in args.concurrent.split("x"))
        backend = create_backend("torch", model=spec, precision="fp16", device="cuda", max_batch=b)
        try:
            result["concurrent"] = _concurrent(backend, b, n, args.seconds)
        finally:
            backend.deactivate()

    if gpu and not args.no_executor:
        streams = [int(s) for s in args.streams.split(",")]
        backends = {
            fmt: create_backend(
                "torch", model=spec, precision="fp16", device="cuda", max_batch=args.faces, input_format=fmt
            )
            for fmt in ("uint8", "float32")
        }
        try:
            result["executor"] = {
                "backend": backends["uint8"].label,
                "faces_per_frame": args.faces,
                "frames": args.frames,
                **_executor_rows(backends, args.faces, args.frames, streams),
            }
        finally:
            for backend in backends.values():
                backend.deactivate()
    if monitor is not None:
        monitor.close()
    _summarise(result)
    _print(result)
    return result


def _summarise(result: dict) -> None:
    v = result["variants"]
    fp16 = v.get("torch-fp16-graphs", {})
    fp32 = v.get("torch-fp32-eager", {})
    s: dict = {}
    if "1" in fp16:
        s["fp16_b1_latency_ms"] = fp16["1"]["latency_ms"]
    rows = [
        r
        for name, vr in v.items()
        if name.startswith(("torch-fp16", "tensorrt"))
        for r in vr.values()
        if isinstance(r, dict) and "faces_per_s" in r
    ]
    if rows:
        s["best_faces_per_s"] = max(r["faces_per_s"] for r in rows)
    if "concurrent" in result:
        s["best_faces_per_s"] = max(s.get("best_faces_per_s", 0), result["concurrent"]["faces_per_s"])
    common = [b for b in fp16 if b in fp32 and "joules_per_face" in fp16[b] and "joules_per_face" in fp32[b]]
    if common:
        s["energy_per_face_change_pct"] = {
            b: 100.0 * (fp16[b]["joules_per_face"] / fp32[b]["joules_per_face"] - 1) for b in common
        }
    ex = result.get("executor", {}).get("720p_uint8_gpu_convert", {})
    if "2" in ex and "1" in ex:
        s["executor_2_vs_1_streams"] = ex["2"]["faces_per_s"] / ex["1"]["faces_per_s"]
    result["summary"] = s
    result["targets"] = {"fp16_b1_latency_ms": 0.8, "best_faces_per_s": 16000, "executor_2_vs_1_streams": 1.4}


def _print(result: dict) -> None:
    print(f"r50 backends — {result.get('device', 'CPU only')} — weights: {result['weights']}")
    if "idle_power_w" in result:
        print(f"idle board power {result['idle_power_w']:.0f} W")
    print(
        f"{'variant':22s} {'batch':>5s} {'latency ms':>11s} {'e2e ms':>8s} {'faces/s':>9s} {'W':>6s} {'mJ/face':>8s}"
    )
    for name, rows in result["variants"].items():
        if "skipped" in rows:
            print(f"{name:22s} skipped: {rows['skipped'][:80]}")
            continue
        for b, r in rows.items():
            w = f"{r['power_w']:.0f}" if "power_w" in r else "-"
            j = f"{r['joules_per_face'] * 1000:.2f}" if "joules_per_face" in r else "-"
            e2e = f"{r['e2e_ms']:.3f}" if "e2e_ms" in r else "-"
            print(
                f"{name:22s} {b:>5s} {r['latency_ms']:11.3f} {e2e:>8s} {r['faces_per_s']:9.0f} {w:>6s} {j:>8s}"
            )
    ex = result.get("executor")
    if ex:
        print(f"executor ({ex['backend']}, {ex['faces_per_frame']} faces/frame, {ex['frames']} frames)")
        for mode, rows in ex.items():
            if not isinstance(rows, dict):
                continue
            for s, r in rows.items():
                sp = f"{r['speedup_vs_1']:.2f}x" if r.get("speedup_vs_1") else "-"
                print(
                    f"  {mode:26s} streams={s}: {r['faces_per_s']:8.0f} faces/s  {r['frames_per_s']:7.1f} frames/s  "
                    f"latency {r['latency_ms']:.2f} ms  {sp}"
                )
    if "concurrent" in result:
        c = result["concurrent"]
        print(f"concurrent: {c['streams']} streams x b{c['batch']}: {c['faces_per_s']:.0f} faces/s")
    print("summary:", {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result["summary"].items()})


if __name__ == "__main__":  # the GPU machine has no install: python -m face3d_live.bench.backends
    import sys

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="bench backends")
    parser.add_argument("--json", type=Path, default=Path("bench-backends.json"))
    add_arguments(parser)
    ns = parser.parse_args()
    from face3d_live.cli.bench import machine_info, write_json

    out = {"benchmark": NAME, "machine": machine_info(), **run(ns)}
    write_json(ns.json, out)
    print(f"wrote {ns.json}")
    sys.exit(0)
