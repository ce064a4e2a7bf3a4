"""Held-out evaluation through the public facade, r50 and the teacher side by side.

Protocol: every held-out AFLW crop (120 px, the fixed 10 % split by file name) goes through
``Reconstructor(model).reconstruct(crop, boxes=[whole crop])`` (first pass from the box × 1.5, second
pass from the first mesh; the second averaged with the mirrored crop's unless ``flip`` is off), on CPU, for
each model. The 21 manual points are compared with the model's
mesh through the fixed AFLW map (``points21``: the same for both models). NME = mean point error /
sqrt(w·h) of the annotated points' bounding box (the AFLW2000-3D normaliser), per |yaw| bin
[0,30], (30,60], (60,90] and their mean. A crop is a failure when NME > 10 % or the model's presence
score is below the Reconstructor's threshold (it would report no face). Also: mean distance of the r50
vertices to the teacher's (x, y; % of the same normaliser) where the teacher is confident.

Every model's 68 points are also compared with the 16 manual AFLW points they share (brows, eye corners, nose,
mouth corners, chin; ``nme68_manual16``, the same normaliser): labels no teacher made, so 3DDFA_V2 itself is
measured the same way (``reference_3ddfa_v2``, its two-pass protocol on the same crops) when its pack is there.

v2 measures, from the training label caches (``face3d-live train --label-only`` makes them):
- 68 points: ``Face.landmarks68`` against the 3D labels (3DDFA_V2, manual AFLW points winning) on the same
  crops, NME = mean 2D error / sqrt(w·h) of the label's box (the AFLW2000-3D protocol), per |yaw| bin;
- iris: mean distance of the 10 iris points to the 478-point teacher's, in % of the outer-eye-corner
  distance, where that teacher is confident and |yaw| ≤ 45°;
- blendshapes: MAE and Pearson r per shape that moves (teacher std > 0.05) against the Face Landmarker
  teacher, on the held-out crops (still-image protocol) and on the teacher-labelled videos
  (``Reconstructor.track`` over every frame).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from face3d_live.training.metrics import YAW_BINS, point_nme

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    models: tuple[str, ...] = ("r50", "mediapipe")
    backend: str = "auto"
    limit: int = 0  # 0 = every held-out crop
    box: str = "crop"  # "crop": boxes = the whole 120 px crop (first pass sees it × 1.5, edge-padded);
    # "inner": boxes = the crop's central 2/3, so the first pass sees exactly the 120 px crop; "detect": no box,
    # the detector finds the face (as in ``process`` and the service; a crop where it finds none is not found)
    min_presence: float = 0.5
    flip: bool = True  # Reconstructor.flip_stills: the second pass averaged with the mirrored crop's
    first_pass: str | None = None  # Reconstructor.first_pass: another model places the second pass's crop
    passes: int = 2  # Reconstructor.passes: 1 = the final pass straight from the box or detection
    videos: bool = True  # blendshape agreement on the teacher-labelled videos (needs the label caches)
    reference: bool = True  # 3DDFA_V2 on the same crops against the manual points (needs its pack and torch)


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


@dataclass
class ModelRun:
    """One model over the held-out crops: vertices (N, 468, 3), landmarks68 (N, 68, 3), iris (N, 10, 3) image
    px, blendshapes (N, 52), presence (N,), median ms per image."""

    verts: np.ndarray
    lm68: np.ndarray
    iris: np.ndarray
    blendshapes: np.ndarray
    score: np.ndarray
    ms: float


def run_model(
    model: str,
    backend: str,
    images: list[np.ndarray],
    box: str = "crop",
    flip: bool = True,
    first_pass: str | None = None,
    passes: int = 2,
) -> ModelRun:
    from face3d_live.reconstructor import Reconstructor

    n = len(images)
    run = ModelRun(
        verts=np.zeros((n, 468, 3), np.float32),
        lm68=np.zeros((n, 68, 3), np.float32),
        iris=np.zeros((n, 10, 3), np.float32),
        blendshapes=np.zeros((n, 52), np.float32),
        score=np.zeros(n, np.float32),
        ms=0.0,
    )
    times = []
    with Reconstructor(
        model=model,
        backend=backend if model != "mediapipe" else "auto",
        flip_stills=flip,
        first_pass=first_pass,
        passes=passes,
    ) as rec:
        for i, img in enumerate(images):
            h, w = img.shape[:2]
            t0 = time.perf_counter()
            if box == "detect":
                faces = rec.reconstruct(img)
            else:
                b = (0.0, 0.0, float(w), float(h)) if box == "crop" else (w / 6, h / 6, w * 5 / 6, h * 5 / 6)
                faces = rec.reconstruct(img, boxes=[b])
            times.append(time.perf_counter() - t0)
            if not faces:  # the detector found none: NaN points (the worst error), presence 0
                run.verts[i] = run.lm68[i] = run.iris[i] = np.nan
                continue
            f = faces[0]
            run.verts[i], run.lm68[i], run.iris[i] = f.vertices, f.landmarks68, f.iris
            run.blendshapes[i], run.score[i] = f.blendshapes, f.score
    run.ms = float(np.median(times) * 1e3)
    return run


def teacher_labels(data_dir: Path, cache_dir: Path, names: list[str]) -> dict[str, np.ndarray] | None:
    """The label caches' values for ``names`` (held-out AFLW crops): lm68 (N, 68, 3), points478 (N, 478, 3),
    blendshapes (N, 52), mesh_ok (N,); None when a cache is missing."""
    from face3d_live.training.data import aflw_shards
    from face3d_live.training.teacher_3ddfa import cache_path_3ddfa, load_labels_3ddfa
    from face3d_live.training.teacher_landmarker import cache_path, load_labels

    rows: dict[str, tuple] = {}
    for shard in aflw_shards(data_dir):
        p68, pm = cache_path_3ddfa(cache_dir, shard), cache_path(cache_dir, shard)
        if not (p68.is_file() and pm.is_file()):
            log.warning("eval: no label caches for %s in %s (v2 measures skipped)", shard.name, cache_dir)
            return None
        a, m = load_labels_3ddfa(p68), load_labels(pm)
        lm = a.lm68_manual if a.lm68_manual is not None else a.lm68
        mi = m.index()
        for i, nm in enumerate(a.names):
            j = mi.get(str(nm))
            if j is not None:
                rows[str(nm)] = (lm[i], m.points[j], m.blendshapes[j], not m.failed[j])
    if any(n not in rows for n in names):
        return None
    cols = list(zip(*(rows[n] for n in names)))
    return {
        "lm68": np.float32(cols[0]),
        "points478": np.float32(cols[1]),
        "blendshapes": np.float32(cols[2]),
        "mesh_ok": np.array(cols[3], bool),
    }


def by_bin(err: np.ndarray, yaw: np.ndarray) -> dict:
    """Mean (%) per |yaw| bin and the mean of the bins (AFLW2000-3D's "all")."""
    out: dict = {}
    for lo, hi in YAW_BINS:
        m = ((yaw >= lo) & (yaw <= hi) if lo == 0 else (yaw > lo) & (yaw <= hi)) & np.isfinite(err)
        out[f"{int(lo)}_{int(hi)}"] = round(100 * float(np.mean(err[m])), 3) if m.any() else None
    vals = [v for v in out.values() if v is not None]
    out["all"] = round(float(np.mean(vals)), 3) if vals else None
    return out


def manual16(lm68: np.ndarray, pts: np.ndarray, yaw: np.ndarray) -> dict:
    """68 points (N, 68, 2|3) against the 16 manual AFLW points they share (N, 21, 2; NaN = not annotated): NME
    (%) per |yaw| bin, crops with no shared point left out."""
    from face3d_live.training.teacher_3ddfa import nme as nme_vs_manual

    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: faces the detector missed
        return by_bin(np.minimum(nme_vs_manual(lm68, pts), 1.0), yaw)


def reference_3ddfa(images: list[np.ndarray], pts: np.ndarray, yaw: np.ndarray) -> dict | None:
    """3DDFA_V2 MobileNet-0.5 (the 68-point teacher, its labelling protocol) on the same crops against the manual
    points; None where its pack or torch is missing."""
    from face3d_live.errors import SourceError
    from face3d_live.training.teacher_3ddfa import Teacher3DDFA

    try:
        teacher = Teacher3DDFA()
    except (ImportError, SourceError, OSError) as exc:
        log.warning("eval: no 3DDFA_V2 reference (%s)", exc)
        return None
    t0 = time.perf_counter()
    lm68, _ = teacher.predict_two_pass(images)
    ms = (time.perf_counter() - t0) * 1e3 / max(len(images), 1)
    return {"nme68_manual16": manual16(lm68, pts, yaw), "mean_ms_per_image_batched": round(ms, 2)}


def v2_measures(run: ModelRun, labels: dict[str, np.ndarray], yaw: np.ndarray) -> dict:
    """68-point NME vs the 3D labels, iris error and blendshape agreement vs the Face Landmarker teacher."""
    from face3d_live.training.blendshapes import evaluate as blend_agreement
    from face3d_live.training.metrics import nme68

    out: dict = {"nme68": by_bin(np.minimum(nme68(run.lm68, labels["lm68"]), 1.0), yaw)}
    t = labels["points478"]
    sel = labels["mesh_ok"] & (yaw <= 45)
    iod = np.linalg.norm(t[:, 33, :2] - t[:, 263, :2], axis=-1)
    d = np.linalg.norm(run.iris[..., :2] - t[:, 468:, :2], axis=-1).mean(1) / np.maximum(iod, 1e-6)
    dc = np.linalg.norm(run.iris[:, [0, 5], :2] - t[:, [468, 473], :2], axis=-1).mean(1) / np.maximum(
        iod, 1e-6
    )
    out["iris_error_pct_iod"] = {
        "n": int(sel.sum()),
        "all_points": round(100 * float(np.mean(d[sel])), 3) if sel.any() else None,
        "centres": round(100 * float(np.mean(dc[sel])), 3) if sel.any() else None,
    }
    ok = labels["mesh_ok"]
    out["blendshapes_crops"] = _short(blend_agreement(run.blendshapes[ok], labels["blendshapes"][ok]))
    return out


def _short(rep: dict) -> dict:
    """An agreement report with rounded numbers and the weakest moving shapes named."""
    per = rep.get("per_shape", {})
    weakest = sorted(per.items(), key=lambda kv: kv[1]["r"])[:5]
    return {
        "n": rep["n"],
        "mae": round(rep["mae"], 4),
        "median_r": round(rep["median_r"], 3),
        "moving_shapes": rep["moving"],
        "weakest_r": {k: round(v["r"], 3) for k, v in weakest},
        "r_per_shape": {k: round(v["r"], 3) for k, v in per.items()},
    }


def video_agreement(model: str, backend: str, data_dir: Path, cache_dir: Path) -> dict:
    """Blendshape agreement with the teacher on every teacher-labelled video: the model tracks each clip
    (``Reconstructor.track``, smoothing on, as the app runs) and frames are matched by index."""
    from face3d_live.capture import open_source
    from face3d_live.reconstructor import Reconstructor
    from face3d_live.training.blendshapes import evaluate as blend_agreement
    from face3d_live.training.blendshapes import load_videos

    videos = load_videos(cache_dir)
    preds, targets, per_video = [], [], {}
    with Reconstructor(model=model, backend=backend if model != "mediapipe" else "auto") as rec:
        for name, split in videos.items():
            path = Path(data_dir) / "videos" / f"{name}.mp4"
            if not path.is_file():
                continue
            rec.reset()
            want = {int(f): i for i, f in enumerate(split.names)}
            p, t = [], []
            with open_source(str(path)) as src:
                k = 0
                while (frame := src.read()) is not None:
                    faces = rec.track(frame.image, frame.timestamp_s)
                    if faces and k in want:
                        p.append(faces[0].blendshapes)
                        t.append(split.targets[want[k]])
                    k += 1
            if p:
                per_video[name] = _short(blend_agreement(np.float32(p), np.float32(t)))
                preds += p
                targets += t
    if not preds:
        return {}
    return {"all": _short(blend_agreement(np.float32(preds), np.float32(targets))), "per_video": per_video}


def summarize(err: np.ndarray, found: np.ndarray, yaw: np.ndarray) -> dict:
    out: dict = {}
    means = []
    for lo, hi in YAW_BINS:
        m = (yaw >= lo) & (yaw <= hi) if lo == 0 else (yaw > lo) & (yaw <= hi)
        if not m.any():  # an empty bin (a --limit run): no number rather than NaN in the JSON
            out[f"nme_{int(lo)}_{int(hi)}"] = out[f"failure_rate_{int(lo)}_{int(hi)}"] = None
            out[f"n_{int(lo)}_{int(hi)}"] = 0
            continue
        e = err[m][np.isfinite(err[m])]  # the faces found (all of them with a given box)
        nme = 100 * float(np.mean(e)) if len(e) else float("nan")
        out[f"nme_{int(lo)}_{int(hi)}"] = round(nme, 3)
        out[f"failure_rate_{int(lo)}_{int(hi)}"] = round(float(np.mean((err[m] > 0.1) | ~found[m])), 4)
        out[f"n_{int(lo)}_{int(hi)}"] = int(m.sum())
        means.append(nme)
    out["nme_mean"] = round(float(np.mean(means)), 3)
    out["nme_all"] = round(100 * float(np.nanmean(err)), 3) if np.isfinite(err).any() else None
    out["failure_rate"] = round(float(np.mean((err > 0.1) | ~found)), 4)
    out["not_found_rate"] = round(float(np.mean(~found)), 4)
    return out


def evaluate(data_dir: Path, cfg: EvalConfig = EvalConfig(), cache_dir: Path | None = None) -> dict:
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
    labels = teacher_labels(data_dir, cache_dir, names) if cache_dir is not None else None
    for name in cfg.models:
        first = cfg.first_pass if name != "mediapipe" else None
        run = run_model(name, cfg.backend, images, cfg.box, cfg.flip, first, cfg.passes)
        err = np.nan_to_num(point_nme(aflw_points(W, run.verts), pts), nan=1.0)
        err = np.minimum(err, 1.0)  # one wild crop must not dominate the mean
        err[np.isnan(run.verts[:, 0, 0])] = np.nan  # --box detect found no face: a failure, not an error size
        found = run.score >= cfg.min_presence
        result["models"][name] = {
            **summarize(err, found, yaw),
            "median_ms_per_image": round(run.ms, 2),
            "first_pass": first or name,
            "passes": cfg.passes,
            "nme68_manual16": manual16(run.lm68, pts, yaw),
        }
        if labels is not None:
            result["models"][name].update(v2_measures(run, labels, yaw))
        if cache_dir is not None and cfg.videos:
            result["models"][name]["blendshapes_videos"] = video_agreement(
                name, cfg.backend, data_dir, cache_dir
            )
        meshes[name] = (run.verts, found)
    if cfg.reference and (ref := reference_3ddfa(images, pts, yaw)) is not None:
        result["reference_3ddfa_v2"] = ref
    if "r50" in meshes and "mediapipe" in meshes:
        (v_r, _), (v_t, ok_t) = meshes["r50"], meshes["mediapipe"]
        d = np.linalg.norm(v_r[..., :2] - v_t[..., :2], axis=-1).mean(1) / norm

        def mean_pct(sel: np.ndarray) -> float | None:
            sel = sel & np.isfinite(d)
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
