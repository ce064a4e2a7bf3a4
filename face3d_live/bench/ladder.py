"""`face3d-live bench ladder`: the lightweighting ladder's table, one row per rung.

Rungs: original FP32 (model r50) → pruned + distilled FP32 (r50-lite) → pruned FP16 (r50-lite-fp16)
→ pruned INT8 QAT (r50-int8). Per rung:

- latency b1 / b8 on this machine: onnxruntime CPU (FP32, or the INT8 Q/DQ graph) and torch CPU
  (FP32 eager; FP16 as ``module.half()``), each in its own process (median of ``--seconds`` of runs),
  with that process's peak RSS (``ru_maxrss``: Python + runtime + model + buffers);
- H100 (torch backend, CUDA-event latency): read from ``ladder_h100.json`` (written by the accelerator run,
  ``python -m face3d_live.training.lightweight --gpu-bench``), with the device's peak memory;
- model file size (the rung file and its ONNX), speedup against the original (same backend, b1);
- quality against the original on the held-out AFLW split, through ``Reconstructor.reconstruct`` with
  the whole crop as the box: NME (21 manual points, % of √(w·h) of their box) and its change, mean
  vertex distance to the original's mesh (px and % of face size), and two SSIMs of the rendered face
  against the original's (ModernGL on EGL, face region): the lit untextured mesh in the photo's camera
  (geometry alone) and the app's textured 3D view (``render_views``); reference rows score the
  original against itself on imperceptibly changed inputs, and ``--extra`` rung files beside the rungs;
- TensorRT-RTX engines built here (no GPU needed) for ``--cc`` at the rung's precision: size, build time.

Writes ``ladder.json`` and ``ladder.md`` into ``--out-dir`` and prints the table. CPU timings report
the load average: other work on this machine slows them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import time
from pathlib import Path

import numpy as np

NAME = "ladder"
HELP = "lightweighting ladder table: latency, memory, size, speedup and quality per rung (JSON + Markdown)"
log = logging.getLogger(__name__)

GPU_JSON = Path(__file__).with_name("ladder_h100.json")
# key: (label, registry model, precision)
RUNGS = {
    "original-fp32": ("original FP32", "r50", "fp32"),
    "pruned-fp32": ("pruned + distilled FP32", "r50-lite", "fp32"),
    "pruned-fp16": ("pruned FP16", "r50-lite-fp16", "fp16"),
    "pruned-int8": ("pruned INT8 (QAT)", "r50-int8", "int8"),
}
GPU_VARIANTS = {  # name: (precision, torch backend options)
    "fp32-eager": ("fp32", {"cuda_graphs": False, "channels_last": False, "fuse_bn": False}),
    "fp16-eager": ("fp16", {"cuda_graphs": False, "channels_last": True, "fuse_bn": True}),
    "fp16-graphs": ("fp16", {"cuda_graphs": True, "channels_last": True, "fuse_bn": True}),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rungs", default=",".join(RUNGS), help=f"comma-separated from: {', '.join(RUNGS)}")
    p.add_argument("--batches", default="1,8", help="batch sizes (default 1,8)")
    p.add_argument("--seconds", type=float, default=4.0, help="timing per backend and batch (default 4)")
    p.add_argument("--images", type=int, default=150, help="held-out AFLW images for quality (default 150)")
    p.add_argument("--cc", default="86,89,120", help="TensorRT-RTX targets (default 86,89,120; '' = none)")
    p.add_argument("--gpu-json", type=Path, default=GPU_JSON, help="accelerator results to merge in")
    p.add_argument("--out-dir", type=Path, default=Path("out/ladder"), help="ladder.json / ladder.md here")
    p.add_argument("--no-quality", action="store_true", help="skip the held-out quality columns")
    p.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="LABEL=FILE",
        help="also measure the quality of this rung file (an r50-lite or r50-int8 file made by "
        "`face3d-live optimize`, e.g. another pruning ratio); repeatable",
    )
    p.add_argument(
        "--no-references",
        action="store_true",
        help="skip the reference rows (the original on its own input re-saved as JPEG q90 / moved 1 px)",
    )
    p.add_argument(
        "--interleaved-rounds",
        type=int,
        default=6,
        help="round-robin onnxruntime timing blocks per rung in one process (default 6; 0 = skip)",
    )


# ---- model files and ONNX -------------------------------------------------------------------------------
def rung_files(key: str) -> dict:
    """{'weights': rung file, 'onnx': ONNX this rung runs in onnxruntime / TensorRT (float32 input)}."""
    from face3d_live.models.r50_face import r50_spec
    from face3d_live.models.weights import default_r50_weights
    from face3d_live.training import rungs

    _, model, precision = RUNGS[key]
    if model == "r50":
        return {"weights": default_r50_weights(), "onnx": r50_spec().onnx("fp32")}
    if model == "r50-int8":
        return {
            "weights": rungs.int8_weights(),
            "onnx": rungs.int8_onnx(flavour="ort"),
            "onnx_trt": rungs.int8_onnx(flavour="trt"),
        }
    spec = rungs.lite_spec(name="r50-lite")
    return {"weights": rungs.lite_weights(), "onnx": spec.onnx(precision)}


def _module(key: str):
    from face3d_live.models.r50_face import build_r50
    from face3d_live.training import rungs
    from face3d_live.training.slim import load_slim

    return build_r50() if RUNGS[key][1] == "r50" else load_slim(rungs.lite_weights())


# ---- CPU latency in a child process (peak RSS per rung) ---------------------------------------------------
def _cpu_worker(
    key: str, runtime: str, onnx_path: str, batches: list[int], seconds: float, threads: int
) -> dict:

    x = {b: np.random.default_rng(0).random((b, 3, 224, 224), dtype=np.float32) for b in batches}
    if runtime == "onnxruntime":
        import onnxruntime as ort

        from face3d_live.inference.ort_backend import session_options

        sess = ort.InferenceSession(onnx_path, session_options(threads), providers=["CPUExecutionProvider"])
        fn = lambda a: sess.run(None, {"input": a})  # noqa: E731
    else:
        import torch

        torch.set_num_threads(threads)
        module = _module(key).eval()
        half = RUNGS[key][2] == "fp16"
        if half:
            module = module.half()

        def fn(a: np.ndarray):
            with torch.inference_mode():
                t = torch.from_numpy(a)
                return module(t.half() if half else t).float().numpy()

    out: dict = {}
    for b in batches:
        fn(x[b])  # warm-up
        times = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(times) < 3:
            t0 = time.perf_counter_ns()
            fn(x[b])
            times.append((time.perf_counter_ns() - t0) / 1e6)
        out[f"b{b}_ms"] = round(statistics.median(times), 2)
        out[f"b{b}_min_ms"] = round(min(times), 2)  # least disturbed by other work on a shared CPU
        out[f"b{b}_runs"] = len(times)
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries the parent's peak across exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def cpu_latency(key: str, runtime: str, onnx_path: Path | None, batches: list[int], seconds: float) -> dict:
    """Latency rows of one rung on one CPU runtime, measured in a fresh process."""
    import multiprocessing as mp

    threads = min(4, os.cpu_count() or 1)
    with mp.get_context("spawn").Pool(1) as pool:
        row = pool.apply(_cpu_worker, (key, runtime, str(onnx_path or ""), batches, seconds, threads))
    row["threads"] = threads
    return row


def _baseline_rss() -> float:
    """Peak RSS of a process that only imported onnxruntime and torch (what every row carries)."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_import_rss)


def _import_rss() -> float:
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401

    return _peak_rss_mb()


def interleaved_onnxruntime(keys: list[str], batches: list[int], rounds: int, block_s: float = 0.5) -> dict:
    """b1/b8 onnxruntime latency of the rungs in one process, in round-robin blocks (``rounds`` blocks of
    ``block_s`` per rung and batch, each after two untimed runs that bring its weights back into cache):
    load from other work on a shared CPU hits every rung alike, so the speedups hold even when the
    absolute numbers drift. Per-call alternation would be unfair the other way: the original's 100 MB of
    weights would evict the small rungs' from the caches before every call.
    {key: {bN_ms}, 'speedup': {key: {bN: ×}}} (medians)."""
    import onnxruntime as ort

    from face3d_live.inference.ort_backend import session_options

    threads = min(4, os.cpu_count() or 1)
    opts = session_options(threads)
    keys = [k for k in keys if RUNGS[k][2] != "fp16"]  # no FP16 kernels in onnxruntime on the CPU
    sessions = {
        k: ort.InferenceSession(str(rung_files(k)["onnx"]), opts, providers=["CPUExecutionProvider"])
        for k in keys
    }
    x = {b: np.random.default_rng(0).random((b, 3, 224, 224), dtype=np.float32) for b in batches}
    times: dict = {k: {b: [] for b in batches} for k in keys}
    for _ in range(rounds):
        for b in batches:
            for k in keys:
                run = sessions[k].run
                for _ in range(2):
                    run(None, {"input": x[b]})
                t_end = time.perf_counter() + block_s
                while time.perf_counter() < t_end:
                    t0 = time.perf_counter_ns()
                    run(None, {"input": x[b]})
                    times[k][b].append((time.perf_counter_ns() - t0) / 1e6)
    out: dict = {
        "rounds": rounds,
        "block_s": block_s,
        "threads": threads,
        "loadavg_end": round(os.getloadavg()[0], 2),
    }
    for k in keys:
        out[k] = {f"b{b}_ms": round(statistics.median(times[k][b]), 2) for b in batches}
    base = out.get("original-fp32")
    if base:
        out["speedup"] = {
            k: {f"b{b}": round(base[f"b{b}_ms"] / out[k][f"b{b}_ms"], 2) for b in batches}
            for k in keys
            if k != "original-fp32"
        }
    return out


# ---- GPU (accelerator run) -----------------------------------------------------------------------------
def torch_gpu_latency(models: dict, batches: tuple[int, ...] = (1, 8), seconds: float = 1.0) -> dict:
    """{model: {variant: {batch: row, 'peak_mem_mb'}}} with the torch backend on the GPU (CUDA-event
    latency of the compute, synchronised each time; median) and the device's peak allocated memory."""
    import torch

    from face3d_live.bench.backends import _gpu_batch
    from face3d_live.inference import create_backend
    from face3d_live.inference.spec import ModelSpec

    out: dict = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    for name, module in models.items():
        spec = ModelSpec.from_module(module.float().cpu().eval(), name=name)
        rows: dict = {}
        for variant, (precision, options) in GPU_VARIANTS.items():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            with create_backend(
                "torch", model=spec, precision=precision, device="cuda", max_batch=max(batches), **options
            ) as be:
                rows[variant] = {str(b): _gpu_batch(be, b, seconds, None) for b in batches}
                rows[variant]["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            log.info(
                "%s %s: %s",
                name,
                variant,
                {b: round(r["latency_ms"], 3) for b, r in rows[variant].items() if b != "peak_mem_mb"},
            )
        out[name] = rows
    return out


def gpu_rows(path: Path) -> dict:
    """Per rung: H100 torch latency b1/b8 and peak memory from the accelerator run's JSON (if present)."""
    import json

    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    pick = {
        "original-fp32": ("r50", "fp32-eager"),
        "pruned-fp32": ("r50-lite", "fp32-eager"),
        "pruned-fp16": ("r50-lite", "fp16-graphs"),
    }
    out = {"device": data.get("gpu"), "date": data.get("date")}
    for key, (model, variant) in pick.items():
        v = data.get(model, {}).get(variant)
        if v:
            out[key] = {
                "variant": variant,
                "b1_ms": round(v["1"]["latency_ms"], 3),
                "b8_ms": round(v["8"]["latency_ms"], 3) if "8" in v else None,
                "peak_mem_mb": v.get("peak_mem_mb"),
            }
    out["extra"] = {
        m: {k: round(r["1"]["latency_ms"], 3) for k, r in data[m].items()}
        for m in ("r50", "r50-lite")
        if m in data
    }
    return out


# ---- quality ------------------------------------------------------------------------------------------
def held_out_aflw(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` held-out AFLW crops (spread over the split) with their manual points (21, 2) in crop px."""
    import tarfile

    import cv2

    from face3d_live.training.data import aflw_shards, default_data_dir, load_aflw_labels
    from face3d_live.training.teacher import is_held_out

    data_dir = default_data_dir()
    labels = load_aflw_labels(data_dir)
    rows = {name: i for i, name in enumerate(labels.names)}
    items = []
    for shard in aflw_shards(data_dir):
        with tarfile.open(shard) as tar:
            for m in tar:
                name = os.path.basename(m.name)
                if not m.isfile() or name not in rows or not is_held_out(name):
                    continue
                img = cv2.imdecode(np.frombuffer(tar.extractfile(m).read(), np.uint8), cv2.IMREAD_COLOR)
                if img is not None:
                    items.append((cv2.cvtColor(img, cv2.COLOR_BGR2RGB), rows[name]))
    if not items:
        return []
    pick = np.linspace(0, len(items) - 1, min(n, len(items))).round().astype(int)
    return [(items[i][0], labels.points_in_crop(items[i][1], crop_size=items[i][0].shape[0])) for i in pick]


class _TorchHalfModel:
    """FaceModel over ``module.half()`` on the CPU (how the FP16 rung's numbers are checked here)."""

    input_size = 224

    def __init__(self, module) -> None:
        self.name = "r50-lite-fp16"
        self.module = module.half().eval()

    def predict(self, crops: np.ndarray):
        import torch

        from face3d_live.models.layout import decode

        x = torch.from_numpy(crops).permute(0, 3, 1, 2).half() / 255.0
        with torch.inference_mode():
            return decode(self.module(x).float().numpy())

    def close(self) -> None:
        pass


def _reconstructor(key: str):
    from face3d_live.reconstructor import Reconstructor

    model = RUNGS[key][1]
    if model == "r50-lite-fp16":  # no FP16 CPU backend: the same network in torch half precision
        rec = Reconstructor("r50-lite", backend="onnxruntime", smoothing=None)
        rec.model.close()
        rec.model = _TorchHalfModel(_module(key))
        return rec
    return Reconstructor(model, backend="onnxruntime", smoothing=None)


def predict_meshes(key: str, images: list[np.ndarray]) -> np.ndarray:
    """(N, 468, 3) image-px meshes of ``images`` by rung ``key`` (whole crop as the box)."""
    with _reconstructor(key) as rec:
        out = []
        for img in images:
            h, w = img.shape[:2]
            faces = rec.reconstruct(img, boxes=[(0.0, 0.0, float(w), float(h))])
            out.append(faces[0].vertices)
    return np.stack(out)


def render_faces(meshes: np.ndarray, size: int, scale: float = 2.0) -> list[np.ndarray]:
    """Lit, untextured renders (RGB uint8, ``size``·scale square) of each mesh, ImageView of the crop:
    the geometry alone, as the photo's camera sees it."""
    from face3d_live.render import ImageView, RenderConfig, create_context, render_image

    ctx = create_context("egl")
    try:
        px = int(round(size * scale))
        cfg = RenderConfig(background=(0.0, 0.0, 0.0, 1.0))
        return [
            render_image(ctx, _face(v * scale), ImageView(px, px), (px, px), config=cfg)[..., :3]
            for v in meshes
        ]
    finally:
        ctx.release()


def render_views(images: list[np.ndarray], meshes: np.ndarray, px: int = 256) -> list[np.ndarray]:
    """The app's 3D view of each face (RGB uint8, ``px`` square): the crop baked into a fresh UV texture
    through that mesh, lit, under the view's default orbit camera (ui/scene.FaceScene, 512² texture)."""
    from dataclasses import replace

    from face3d_live.render import OffscreenTarget, create_context
    from face3d_live.types import Frame
    from face3d_live.ui.scene import FaceScene, SceneConfig

    ctx = create_context("egl")
    try:
        with OffscreenTarget(ctx, (px, px), 0) as target:
            scene = FaceScene(ctx, SceneConfig(texture_size=512, texture_hz=1e9))  # bake every frame shown
            scene.renderer.config = replace(scene.renderer.config, background=(0.0, 0.0, 0.0, 1.0))
            out = []
            try:
                for i, (img, v) in enumerate(zip(images, meshes)):
                    scene.reset_texture()  # each face from its own photo only
                    scene.show(Frame(i, img, 0, 0.0), _face(v))
                    scene.draw(target.fbo)  # bakes
                    scene.draw(target.fbo)  # resolves the bake and draws it
                    out.append(target.read()[..., :3])
            finally:
                scene.close()
            return out
    finally:
        ctx.release()


def _face(v: np.ndarray):
    from face3d_live.geometry import mesh as topo
    from face3d_live.geometry.pose import umeyama
    from face3d_live.types import Face

    v = np.asarray(v, np.float32)
    lo, hi = v[:, :2].min(0), v[:, :2].max(0)
    pose = umeyama(topo.canonical_vertices(), v)
    return Face(v, v[topo.LANDMARKS68], topo.triangles(), topo.uv_coords(), pose, (*lo, *hi), 1.0)


def face_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (grey) of two renders over the box where either shows the face (background excluded)."""
    from skimage.metrics import structural_similarity

    mask = (a.max(-1) > 0) | (b.max(-1) > 0)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return float("nan")  # neither shows a face: nothing to compare
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    if min(y1 - y0, x1 - x0) < 7:
        return float("nan")
    ga = a[y0:y1, x0:x1].astype(np.float32).mean(-1)
    gb = b[y0:y1, x0:x1].astype(np.float32).mean(-1)
    return float(structural_similarity(ga, gb, data_range=255.0))


def frame_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (grey) of two whole renders, background included (the looser, more common measure)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a.mean(-1), b.mean(-1), data_range=255.0))


# The original against itself on inputs nobody could tell apart: the scale the rungs' numbers read
# against. name: (perturb the crop, x offset to take back from the mesh)
def _jpeg(img: np.ndarray, q: int) -> np.ndarray:
    import cv2

    _, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def _moved(img: np.ndarray, dx: float) -> np.ndarray:
    import cv2

    m = np.float32([[1, 0, dx], [0, 1, 0]])
    return cv2.warpAffine(img, m, img.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


REFERENCES = {
    "original, input re-saved as JPEG q90": (lambda im: _jpeg(im, 90), 0.0),
    "original, input moved 1 px": (lambda im: _moved(im, 1.0), 1.0),
}


@contextlib.contextmanager
def _rung_file(path: Path):
    """Point the r50-lite or r50-int8 model (by the file's arch) at ``path`` for the block; yields its rung key."""
    from face3d_live.errors import ModelError
    from face3d_live.models.weights import read_metadata
    from face3d_live.training.qat import ARCH as INT8_ARCH
    from face3d_live.training.rungs import INT8_ENV, LITE_ENV
    from face3d_live.training.slim import ARCH as LITE_ARCH

    try:
        arch = read_metadata(path).get("arch")
    except Exception as exc:
        raise ModelError(f"--extra {path}: not a rung file ({exc})") from None
    if arch not in (LITE_ARCH, INT8_ARCH):
        raise ModelError(f"--extra {path}: a {arch} file, not an r50-lite or r50-int8 rung file")
    key, env = ("pruned-int8", INT8_ENV) if arch == INT8_ARCH else ("pruned-fp32", LITE_ENV)
    old = os.environ.get(env)
    os.environ[env] = str(path)
    try:
        yield key
    finally:
        if old is None:
            os.environ.pop(env, None)
        else:
            os.environ[env] = old


def _parse_extra(items: list[str]) -> dict[str, Path]:
    from face3d_live.errors import ConfigError

    out = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label.strip() or not Path(path).is_file():
            raise ConfigError(f"--extra wants LABEL=FILE with an existing rung file, got {item!r}")
        out[label.strip()] = Path(path)
    return out


def quality(
    keys: list[str], n_images: int, extra: dict[str, Path] | None = None, references: bool = True
) -> dict:
    """Per rung: NME, ΔNME, vertex distance and render SSIM against the original (held-out AFLW); with
    ``references`` also the original on perturbed inputs, and the rung files in ``extra``."""
    from face3d_live.training.metrics import point_nme
    from face3d_live.training.points21 import aflw_points, load_mapping

    samples = held_out_aflw(n_images)
    if not samples:
        return {"skipped": "no held-out AFLW data (../shared/data absent)"}
    images = [s[0] for s in samples]
    points = np.stack([s[1] for s in samples])
    W = load_mapping()
    size = images[0].shape[0]
    ref = predict_meshes("original-fp32", images)
    ref_geometry, ref_view = render_faces(ref, size), render_views(images, ref)
    face_size = np.sqrt(np.prod(ref[:, :, :2].max(1) - ref[:, :, :2].min(1), axis=1))

    def nme_of(m: np.ndarray) -> float:
        return 100 * float(np.nanmean(np.minimum(point_nme(aflw_points(W, m), points), 1.0)))

    nme0 = nme_of(ref)

    def measure(m: np.ndarray) -> dict:
        nme = nme_of(m)
        dist = np.linalg.norm(m - ref, axis=-1).mean(1)
        geometry = render_faces(m, size)
        ssim = np.array([face_ssim(a, b) for a, b in zip(geometry, ref_geometry)])
        view = np.array([face_ssim(a, b) for a, b in zip(render_views(images, m), ref_view)])

        def stat(x: np.ndarray, f) -> float | None:
            return None if np.isnan(x).all() else round(float(f(x)), 4)

        return {
            "nme": round(nme, 3),
            "nme_change": round(nme - nme0, 3),
            "vertex_dist_px": round(float(dist.mean()), 3),
            "vertex_dist_median_px": round(float(np.median(dist)), 3),
            "vertex_dist_pct": round(100 * float((dist / face_size).mean()), 3),
            "ssim": stat(ssim, np.nanmean),
            "ssim_median": stat(ssim, np.nanmedian),
            "ssim_min": stat(ssim, np.nanmin),
            "ssim_frame": round(
                float(np.mean([frame_ssim(a, b) for a, b in zip(geometry, ref_geometry)])), 4
            ),
            "ssim_view": stat(view, np.nanmean),
            "ssim_view_median": stat(view, np.nanmedian),
        }

    out: dict = {"images": len(images), "crop_px": size}
    for k in keys:
        out[k] = measure(ref if k == "original-fp32" else predict_meshes(k, images))
    if references:
        out["references"] = {}
        for name, (perturb, dx) in REFERENCES.items():
            m = predict_meshes("original-fp32", [perturb(im) for im in images])
            m[..., 0] -= dx
            out["references"][name] = measure(m)
        for label, path in (extra or {}).items():
            with _rung_file(path) as key:
                row = measure(predict_meshes(key, images))
            out["references"][label] = {
                "file": str(path),
                "file_mb": round(path.stat().st_size / 1e6, 2),
                **row,
            }
    return out


# ---- TensorRT-RTX engines ---------------------------------------------------------------------------------
def build_engines(onnx_path: Path, name: str, precision: str, ccs: list[str]) -> dict:
    from face3d_live.errors import EngineBuildError
    from face3d_live.inference.spec import default_cache_dir
    from face3d_live.inference.trt_build import EngineCache, import_trt

    try:
        trt = import_trt()
    except Exception as exc:  # no TensorRT(-RTX) wheel here: a capability, not a failure of the ladder
        return {"skipped": f"no TensorRT-RTX ({type(exc).__name__}: {exc})"}
    cache = EngineCache(Path(default_cache_dir()))
    out = {}
    for cc in ccs:
        try:
            e = cache.get(onnx_path, name=name, precision=precision, cc=cc, trt=trt)
            out[f"sm{cc}"] = {
                "mb": round(e.size_mb, 1),
                "build_s": round(e.build_s, 1),
                "cached": not e.built,
            }
        except EngineBuildError as exc:
            out[f"sm{cc}"] = {"error": str(exc)[:200]}
    return out


# ---- the table --------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    keys = [k.strip() for k in args.rungs.split(",") if k.strip()]
    if unknown := [k for k in keys if k not in RUNGS]:
        from face3d_live.errors import ConfigError

        raise ConfigError(f"unknown rung(s) {', '.join(unknown)}; choose from {', '.join(RUNGS)}")
    if "original-fp32" not in keys:
        keys.insert(0, "original-fp32")
    extra = _parse_extra(getattr(args, "extra", []))  # a wrong path fails now, not after the timings
    batches = [int(b) for b in args.batches.split(",")]
    ccs = [c.strip() for c in args.cc.split(",") if c.strip()]
    from face3d_live.cli.bench import machine_info

    info = machine_info()
    result: dict = {
        "host": {
            "cpu": info["cpu"],
            "cpus": os.cpu_count(),
            "date": info["date"],
            "loadavg_start": [round(v, 2) for v in os.getloadavg()],
        },
        "baseline_rss_mb": _baseline_rss(),
        "rungs": {},
    }
    for key in keys:
        label, model, precision = RUNGS[key]
        files = rung_files(key)
        row: dict = {"label": label, "model": model, "precision": precision}
        row["file_mb"] = round(Path(files["weights"]).stat().st_size / 1e6, 2)
        row["onnx_mb"] = round(Path(files.get("onnx_trt", files["onnx"])).stat().st_size / 1e6, 2)
        load0 = os.getloadavg()[0]
        cpu = {}
        if precision != "fp16":
            cpu["onnxruntime"] = cpu_latency(key, "onnxruntime", files["onnx"], batches, args.seconds)
        if precision != "int8":
            cpu["torch"] = cpu_latency(key, "torch", None, batches, args.seconds)
        row["cpu"] = cpu
        row["loadavg"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        if ccs:
            engine_onnx = Path(files.get("onnx_trt", files["onnx"]))
            if precision == "fp16":
                engine_onnx = rung_files("pruned-fp16")["onnx"]
            row["tensorrt_rtx"] = build_engines(engine_onnx, model, precision, ccs)
        result["rungs"][key] = row
        log.info("%s: %s", key, row)
    base = result["rungs"]["original-fp32"]["cpu"]
    for row in result["rungs"].values():
        row["speedup_b1"] = {
            rt: round(base[ref]["b1_ms"] / r["b1_ms"], 2)
            for rt, r in row["cpu"].items()
            for ref in [rt if rt in base else "onnxruntime"]
            if "b1_ms" in r and ref in base
        }
        row["speedup_b1_min"] = {
            rt: round(base[ref]["b1_min_ms"] / r["b1_min_ms"], 2)
            for rt, r in row["cpu"].items()
            for ref in [rt if rt in base else "onnxruntime"]
            if "b1_min_ms" in r and ref in base
        }
    if args.interleaved_rounds > 0:
        block_s = min(0.5, args.seconds)  # short runs (tests) keep the blocks short too
        result["interleaved"] = interleaved_onnxruntime(keys, batches, args.interleaved_rounds, block_s)
    result["gpu"] = gpu_rows(args.gpu_json)
    if not args.no_quality:
        references = not getattr(args, "no_references", False)
        result["quality"] = quality(keys, args.images, extra, references)
    result["host"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    import json

    (args.out_dir / "ladder.json").write_text(json.dumps(result, indent=1, default=str))
    md = markdown(result)
    (args.out_dir / "ladder.md").write_text(md)
    print(md)
    return result


def _f(v, fmt: str = "{:.1f}") -> str:
    return "–" if v is None else fmt.format(v)


def _ssims(qq: dict) -> str:
    """'geometry mean / median (min) | 3D view mean / median' cells of one quality row."""
    return (
        f"{_f(qq.get('ssim'), '{:.4f}')} / {_f(qq.get('ssim_median'), '{:.4f}')} ({_f(qq.get('ssim_min'), '{:.3f}')}) | "
        f"{_f(qq.get('ssim_view'), '{:.4f}')} / {_f(qq.get('ssim_view_median'), '{:.4f}')}"
    )


def markdown(result: dict) -> str:
    """The ladder as a Markdown table (CPU part, H100 part, quality, engines)."""
    rungs = result["rungs"]
    q = result.get("quality", {})
    gpu = result.get("gpu", {})
    lines = [
        f"CPU: {result['host']['cpu']}, {result['host']['cpus']} cores, {result['host']['date']}; load average "
        f"{result['host']['loadavg_start'][0]:.1f} → {result['host']['loadavg_end'][0]:.1f}; baseline process RSS (python + onnxruntime + torch imported) "
        f"{result['baseline_rss_mb']:.0f} MB. Latency: median ms per batch.",
        "",
        "| rung | file MB | ORT b1 (min) | ORT b8 | torch b1 (min) | torch b8 | peak RSS MB | speedup b1 median (min) | "
        "H100 torch b1 | H100 b8 | H100 mem MB | ΔNME (pts) | vertex dist px (%) | SSIM geometry mean / median "
        "(min) | SSIM 3D view mean / median |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in rungs.items():
        ort = r["cpu"].get("onnxruntime", {})
        tor = r["cpu"].get("torch", {})
        rss = max([v.get("peak_rss_mb", 0) for v in r["cpu"].values()] or [0])
        spm = r.get("speedup_b1_min", {})
        sp = ", ".join(
            f"{k} {v:.2f}× ({_f(spm.get(k), '{:.2f}')}×)" for k, v in r.get("speedup_b1", {}).items()
        )
        g = gpu.get(key, {})
        qq = q.get(key, {})
        lines.append(
            f"| {r['label']} | {r['file_mb']:.1f} | {_f(ort.get('b1_ms'))} ({_f(ort.get('b1_min_ms'))}) | "
            f"{_f(ort.get('b8_ms'))} | {_f(tor.get('b1_ms'))} ({_f(tor.get('b1_min_ms'))}) | {_f(tor.get('b8_ms'))} | "
            f"{rss:.0f} | {sp or '–'} | "
            f"{_f(g.get('b1_ms'), '{:.2f}')} ({g.get('variant', '')}) | {_f(g.get('b8_ms'), '{:.2f}')} | "
            f"{_f(g.get('peak_mem_mb'), '{:.0f}')} | {_f(qq.get('nme_change'), '{:+.3f}')} | "
            f"{_f(qq.get('vertex_dist_px'), '{:.3f}')} ({_f(qq.get('vertex_dist_pct'), '{:.2f}')}) | "
            f"{_ssims(qq)} |"
        )
    il = result.get("interleaved")
    if il and il.get("speedup"):
        o = il["original-fp32"]
        bs = [k[1:-3] for k in o]  # "b1_ms" -> "1"

        def ms(row: dict) -> str:
            return " / ".join(f"{row[f'b{b}_ms']:.1f}" for b in bs)

        def speedups(sp: dict) -> str:
            return " / ".join(f"{sp['b' + b]:.2f}×" for b in bs)

        parts = [f"{RUNGS[k][0]} {ms(il[k])} ms ({speedups(sp)})" for k, sp in il["speedup"].items()]
        lines += [
            "",
            f"Interleaved onnxruntime {' / '.join('b' + b for b in bs)} ({il['rounds']} round-robin blocks of "
            f"{il['block_s']} s per rung in one process, {il['threads']} threads; speedup against the "
            f"original): original FP32 {ms(o)} ms; " + "; ".join(parts) + ".",
        ]
    if q.get("images"):
        nme0 = q.get("original-fp32", {}).get("nme")
        lines += [
            "",
            f"Quality: {q['images']} held-out AFLW crops ({q['crop_px']} px), original NME {nme0:.3f} %.",
        ]
    if q.get("references"):
        lines += [
            "",
            "Reference points (quality only): the original on inputs nobody could tell apart, and other rung files.",
            "",
            "| reference | file MB | ΔNME (pts) | vertex dist px mean / median | SSIM geometry mean / median (min) | "
            "SSIM 3D view mean / median |",
            "|---|---|---|---|---|---|",
        ]
        for name, qq in q["references"].items():
            lines.append(
                f"| {name} | {_f(qq.get('file_mb'))} | {_f(qq.get('nme_change'), '{:+.3f}')} | "
                f"{_f(qq.get('vertex_dist_px'), '{:.3f}')} / {_f(qq.get('vertex_dist_median_px'), '{:.3f}')} | "
                f"{_ssims(qq)} |"
            )
    if gpu.get("device"):
        lines += [
            "",
            f"H100 rows: {gpu['device']} ({gpu.get('date')}), torch backend, CUDA-event latency of the compute; "
            f"b1 latency of every variant: {gpu.get('extra')}",
        ]
    eng = {k: r.get("tensorrt_rtx") for k, r in rungs.items() if r.get("tensorrt_rtx")}
    if eng:
        lines += [
            "",
            "| TensorRT-RTX engine (built on this CPU) | "
            + " | ".join(next(iter(eng.values())).keys())
            + " |",
        ]
        lines.append("|---" * (1 + len(next(iter(eng.values())))) + "|")
        for k, e in eng.items():
            cells = [
                f"{v['mb']:.1f} MB, {v['build_s']:.1f} s"
                if "mb" in v
                else v.get("error", v.get("skipped", "?"))[:60]
                for v in e.values()
            ]
            lines.append(f"| {rungs[k]['label']} ({rungs[k]['precision']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
