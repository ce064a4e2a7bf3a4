"""Held-out evaluation through the public facade, r50 and the teacher side by side.

Protocol: every held-out AFLW crop (120 px, the fixed 10 % split by file name) goes through
``Reconstructor(model).reconstruct(crop, boxes=[whole crop])`` (first pass from the box × 1.5, second
pass from the first mesh), on CPU, for each model. The 21 manual points are compared with the model's
mesh through the fixed AFLW map (``points21``: the same for both models). NME = mean point error /
sqrt(w·h) of the annotated points' bounding box (the AFLW2000-3D normaliser), per |yaw| bin
[0,30], (30,60], (60,90] and their mean. A crop is a failure when NME > 10 % or the model's presence
score is below the Reconstructor's threshold (it would report no face). Also: mean distance of the r50
vertices to the teacher's (x, y; % of the same normaliser) where the teacher is confident.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from face3d_live.training.train import YAW_BINS, point_nme

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    models: tuple[str, ...] = ("r50", "mediapipe")
    backend: str = "auto"
    limit: int = 0  # 0 = every held-out crop
    box: str = "crop"  # "crop": boxes = the whole 120 px crop (first pass sees it × 1.5, edge-padded);
    # "inner": boxes = the crop's central 2/3, so the first pass sees exactly the 120 px crop
    min_presence: float = 0.5


def held_out_aflw(
    data_dir: Path, limit: int = 0
) -> tuple[list[str], list[np.ndarray], np.ndarray, np.ndarray]:
    """(names, images, points (N, 21, 2) crop px NaN = missing, |yaw| clipped to 90 (N,)) of the held-out
    AFLW crops."""
    from face3d_live.training.data import aflw_shards, iter_tar_images, load_aflw_labels
    from face3d_live.training.teacher import is_held_out

    labels = load_aflw_labels(data_dir)
    rows = {n: i for i, n in enumerate(labels.names)}
    names, images, pts, yaw = [], [], [], []
    for shard in aflw_shards(data_dir):
        for name, img in iter_tar_images(shard):
            if not is_held_out(name) or name not in rows:
                continue
            r = rows[name]
            p = labels.points_in_crop(r, crop_size=img.shape[0])
            if (~np.isnan(p[:, 0])).sum() < 2:
                continue
            names.append(name)
            images.append(img)
            pts.append(p)
            yaw.append(min(abs(float(labels.yaw[r])), 90.0))  # a few AFLW labels say 91-100°: profile
            if limit and len(names) >= limit:
                return names, images, np.float32(pts), np.float32(yaw)
    return names, images, np.float32(pts), np.float32(yaw)


def run_model(
    model: str, backend: str, images: list[np.ndarray], box: str = "crop"
) -> tuple[np.ndarray, np.ndarray, float]:
    """Vertices (N, 468, 3) image px and presence (N,) for each image; median ms per image."""
    from face3d_live.reconstructor import Reconstructor

    verts = np.zeros((len(images), 468, 3), np.float32)
    score = np.zeros(len(images), np.float32)
    times = []
    with Reconstructor(model=model, backend=backend if model != "mediapipe" else "auto") as rec:
        for i, img in enumerate(images):
            h, w = img.shape[:2]
            t0 = time.perf_counter()
            b = (0.0, 0.0, float(w), float(h)) if box == "crop" else (w / 6, h / 6, w * 5 / 6, h * 5 / 6)
            faces = rec.reconstruct(img, boxes=[b])
            times.append(time.perf_counter() - t0)
            verts[i], score[i] = faces[0].vertices, faces[0].score
    return verts, score, float(np.median(times) * 1e3)


def summarize(err: np.ndarray, found: np.ndarray, yaw: np.ndarray) -> dict:
    out: dict = {}
    means = []
    for lo, hi in YAW_BINS:
        m = (yaw >= lo) & (yaw <= hi) if lo == 0 else (yaw > lo) & (yaw <= hi)
        if not m.any():  # an empty bin (a --limit run): no number rather than NaN in the JSON
            out[f"nme_{int(lo)}_{int(hi)}"] = out[f"failure_rate_{int(lo)}_{int(hi)}"] = None
            out[f"n_{int(lo)}_{int(hi)}"] = 0
            continue
        nme = 100 * float(np.mean(err[m]))
        out[f"nme_{int(lo)}_{int(hi)}"] = round(nme, 3)
        out[f"failure_rate_{int(lo)}_{int(hi)}"] = round(float(np.mean((err[m] > 0.1) | ~found[m])), 4)
        out[f"n_{int(lo)}_{int(hi)}"] = int(m.sum())
        means.append(nme)
    out["nme_mean"] = round(float(np.mean(means)), 3)
    out["nme_all"] = round(100 * float(np.mean(err)), 3)
    out["failure_rate"] = round(float(np.mean((err > 0.1) | ~found)), 4)
    out["not_found_rate"] = round(float(np.mean(~found)), 4)
    return out


def evaluate(data_dir: Path, cfg: EvalConfig = EvalConfig()) -> dict:
    from face3d_live.training.points21 import aflw_points, load_mapping

    W = load_mapping()
    names, images, pts, yaw = held_out_aflw(data_dir, cfg.limit)
    log.info("eval: %d held-out AFLW crops", len(names))
    valid = ~np.isnan(pts[..., 0])
    g = np.where(valid[..., None], pts, np.nan)
    wh = np.nanmax(g, 1) - np.nanmin(g, 1)
    norm = np.sqrt(wh[:, 0] * wh[:, 1])
    result: dict = {
        "protocol": __doc__.split("\n\n")[1].replace("\n", " "),
        "box": cfg.box,
        "n": len(names),
        "models": {},
    }
    meshes = {}
    for name in cfg.models:
        verts, score, ms = run_model(name, cfg.backend, images, cfg.box)
        err = np.nan_to_num(point_nme(aflw_points(W, verts), pts), nan=1.0)
        err = np.minimum(err, 1.0)  # one wild crop must not dominate the mean
        found = score >= cfg.min_presence
        result["models"][name] = {**summarize(err, found, yaw), "median_ms_per_image": round(ms, 2)}
        meshes[name] = (verts, found)
    if "r50" in meshes and "mediapipe" in meshes:
        (v_r, _), (v_t, ok_t) = meshes["r50"], meshes["mediapipe"]
        d = np.linalg.norm(v_r[..., :2] - v_t[..., :2], axis=-1).mean(1) / norm

        def mean_pct(sel: np.ndarray) -> float | None:
            return round(100 * float(np.mean(d[sel])), 3) if sel.any() else None

        result["r50_vs_teacher_vertex_distance_pct"] = {
            "all_teacher_found": mean_pct(ok_t),
            **{
                f"yaw_{int(lo)}_{int(hi)}": mean_pct(ok_t & ((yaw > lo) if lo else (yaw >= lo)) & (yaw <= hi))
                for lo, hi in YAW_BINS
            },
        }
        r, t = result["models"]["r50"], result["models"]["mediapipe"]
        bins = [f"nme_{int(lo)}_{int(hi)}" for lo, hi in YAW_BINS] + ["nme_mean"]
        result["r50_beats_teacher"] = bool(
            all(r[k] is None or r[k] < t[k] for k in bins) and r["failure_rate"] < t["failure_rate"]
        )
    return result
