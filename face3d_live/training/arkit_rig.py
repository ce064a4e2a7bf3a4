"""Fit the learned ARKit rig (``face3d_live/assets/arkit_rig.npz``, read by ``face3d_live.avatar.ArkitRig``).

Model: a pose-free mesh X (468 × 3, canonical frame: ``avatar.rig.pose_free``, a similarity on rigid points)
is ``X ≈ N_g + Σ_i w_i D_i`` with the 52 ARKit weights w of the same face and one neutral N_g per group:
each video subject (per source of points) is a group, so identity cannot leak into the deltas D; each image
source (thousands of different people) is one group whose neutral is its mean shape, so identity there is
noise that the least squares averages out and a ridge term (``--ridge``) keeps rare shapes small. The group
neutrals are solved jointly with D (weighted, group-centred ridge regression), which makes N_g the face at
zero weights, not at the group's average expression.

Data (training split only; never committed, read from ../shared and the label cache):
  * the MediaPipe Face Landmarker teacher's 478-point labels and blendshapes of the crops in
    ``<cache>/landmarker-*.npz`` (``teacher_landmarker.py``), |yaw| ≤ 40°, |pitch| ≤ 30°;
  * the same teacher tracked through the clips in ``<data>/videos`` (``landmarker-video-*.npz``);
  * the project's own ``Reconstructor`` (``--model``, no smoothing) on those clips: its vertices and
    ``Face.blendshapes`` (cached as ``<cache>/rig-video-<model>-<clip>.npz``), so the rig also fits what
    ``record --rig arkit`` feeds it.
Residuals: held-out crops (the fixed 10 % split) against their source's neutral, and each clip left out of
the fit in turn and treated as ``record --rig arkit`` does (neutral from its least expressive frames,
``avatar.calibrate.personal_rig``); errors are mean vertex distances in mm (canonical unit = 1 cm; outer eye
corners 90 mm apart) and % of that inter-ocular distance, rig vs neutral alone.

``python -m face3d_live.training.arkit_rig --cache .cache/teacher --out face3d_live/assets/arkit_rig.npz``
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from face3d_live.avatar.calibrate import personal_rig
from face3d_live.avatar.rig import ASSET, RIGID_POINTS, ArkitRig, rigid_fit
from face3d_live.expression.arkit import ARKIT_BLENDSHAPES, ARKIT_INDEX, mirror_shapes
from face3d_live.geometry import mesh

log = logging.getLogger(__name__)

N_SHAPES = len(ARKIT_BLENDSHAPES)
MAX_YAW, MAX_PITCH = 40.0, 30.0  # beyond: the teacher's hidden half of the face is a guess
IOD_MM = 90.0  # outer eye corners of the canonical mesh: 9.0 units of 1 cm
MM = 10.0  # canonical units → mm


@dataclass
class Part:
    """One source of training faces: pose-free meshes (N, 468, 3) float32 canonical frame, weights (N, 52),
    held (N,) bool (evaluation only), subject: the clip for video parts (its own neutral), else None."""

    name: str
    meshes: np.ndarray
    weights: np.ndarray
    held: np.ndarray
    subject: str | None = None

    def __len__(self) -> int:
        return len(self.meshes)


def align(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, ≥468, 3) image px → (pose-free meshes (N, 468, 3) float32, usable (N,) bool: frontal enough)."""
    v = np.asarray(points, np.float64)[:, : mesh.NUM_VERTICES]
    ref = mesh.canonical_vertices().astype(np.float64)
    rot, scale, t = rigid_fit(v)
    out = scale[:, None, None] * (v @ rot.transpose(0, 2, 1)) + t[:, None]
    face_rot = rot.transpose(0, 2, 1)  # canonical → image
    yaw = np.degrees(np.arcsin(-np.clip(face_rot[:, 2, 0], -1, 1)))
    pitch = np.degrees(np.arctan2(face_rot[:, 2, 1], face_rot[:, 2, 2]))
    rigid_err = np.sqrt(((out[:, RIGID_POINTS] - ref[RIGID_POINTS]) ** 2).sum(-1).mean(-1))
    ok = (np.abs(yaw) <= MAX_YAW) & (np.abs(pitch) <= MAX_PITCH) & np.isfinite(out).all((1, 2))
    ok &= rigid_err < 0.6  # 6 mm RMS on the rigid points: a broken mesh, not a face
    return out.astype(np.float32), ok


def load_image_parts(cache: Path) -> list[Part]:
    from face3d_live.training.teacher_landmarker import load_labels

    parts = []
    files = sorted(p for p in Path(cache).glob("landmarker-*.npz") if "video-" not in p.name)
    for f in files:
        labels = load_labels(f)
        meshes, ok = align(labels.points)
        ok &= ~labels.failed
        name = f.stem.removeprefix("landmarker-")
        parts.append(Part(name, meshes[ok], labels.blendshapes[ok], labels.held_out[ok]))
        log.info(
            "crops %s: %d of %d usable (%d held out)", name, ok.sum(), len(ok), labels.held_out[ok].sum()
        )
    return parts


def load_teacher_videos(cache: Path) -> list[Part]:
    parts = []
    for f in sorted(Path(cache).glob("landmarker-video-*.npz")):
        with np.load(f) as z:
            meshes, ok = align(z["points"])
            weights = z["blendshapes"][ok]
        clip = f.stem.removeprefix("landmarker-video-")
        parts.append(Part(f"{clip}:teacher", meshes[ok], weights, np.zeros(ok.sum(), bool), clip))
    return parts


def reconstruct_video(video: Path, cache: Path, model: str, progress: bool = True) -> Path:
    """The Reconstructor's (smoothing off) largest face in every frame → ``rig-video-<model>-<clip>.npz``
    (frame, vertices (N, 468, 3) image px, blendshapes (N, 52)). Cached."""
    from tqdm import tqdm

    from face3d_live.capture import open_source
    from face3d_live.reconstructor import Reconstructor

    out = Path(cache) / f"rig-video-{model}-{video.stem}.npz"
    if out.exists():
        return out
    frames, verts, blend = [], [], []
    with open_source(str(video)) as src, Reconstructor(model, smoothing=None) as rec:
        for frame in tqdm(src, total=src.frame_count, desc=f"{model} {video.name}", disable=not progress):
            faces = rec.track(frame.image, frame.timestamp_s)
            if faces:
                frames.append(frame.frame_id)
                verts.append(faces[0].vertices)
                blend.append(faces[0].blendshapes)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(
        tmp, frame=np.asarray(frames), vertices=np.asarray(verts, np.float32), blendshapes=np.asarray(blend)
    )
    tmp.replace(out)
    return out


def load_model_videos(data: Path, cache: Path, model: str, progress: bool = True) -> list[Part]:
    parts = []
    for video in sorted((Path(data) / "videos").glob("*.mp4")):
        with np.load(reconstruct_video(video, cache, model, progress)) as z:
            meshes, ok = align(z["vertices"])
            weights = z["blendshapes"][ok]
        parts.append(Part(f"{video.stem}:{model}", meshes[ok], weights, np.zeros(ok.sum(), bool), video.stem))
    return parts


# ------------------------------------------------------------------------------------------------- fit


@dataclass
class Fit:
    deltas: np.ndarray  # (52, 468, 3) float64
    neutrals: dict[str, np.ndarray]  # part name → (468, 3) its group's neutral (zero weights)


def fit(parts: list[Part], ridge: float, video_weight: float) -> Fit:
    """Weighted, group-centred ridge regression of the meshes on the weights (module docstring)."""
    wc_parts, xc_parts, om_parts, means = [], [], [], {}
    for p in parts:
        train = ~p.held
        x = p.meshes[train].reshape(int(train.sum()), -1).astype(np.float64)
        w = p.weights[train].astype(np.float64)
        mx, mw = x.mean(0), w.mean(0)
        means[p.name] = (mx, mw)
        wc_parts.append(w - mw)
        xc_parts.append(x - mx)
        om_parts.append(np.full(len(x), video_weight if p.subject else 1.0))
    wc = np.concatenate(wc_parts)
    omega = np.concatenate(om_parts)
    gram = (wc * omega[:, None]).T @ wc + ridge * omega.sum() * np.eye(N_SHAPES)
    rhs = sum((w * o[:, None]).T @ x for w, x, o in zip(wc_parts, xc_parts, om_parts))
    d = np.linalg.solve(gram, rhs)  # (52, 1404); an all-zero column (tongueOut) gets exactly 0
    neutrals = {name: (mx - mw @ d).reshape(-1, 3) for name, (mx, mw) in means.items()}
    return Fit(d.reshape(N_SHAPES, -1, 3), neutrals)


def mirror(shape: np.ndarray) -> np.ndarray:
    """A (…, 468, 3) shape or offset reflected left ↔ right (x → -x, vertices re-indexed)."""
    return shape[..., mesh.mirror_indices(), :] * np.array([-1.0, 1.0, 1.0])


def symmetrise(deltas: np.ndarray) -> np.ndarray:
    """Average each delta with the mirror image of its partner's (Left ↔ Right, midline shapes with themselves)."""
    return 0.5 * (deltas + mirror(deltas[mirror_shapes()]))


def make_rig(result: Fit, parts: list[Part], symmetric: bool) -> ArkitRig:
    """The generic rig: the image sources' neutrals (count-weighted), made symmetric and re-aligned to the
    canonical mesh on the rigid points, with the fitted deltas."""
    from face3d_live.geometry.pose import apply_pose, umeyama

    images = [p for p in parts if p.subject is None] or parts
    counts = np.array([len(p) for p in images], np.float64)
    neutral = sum(c * result.neutrals[p.name] for c, p in zip(counts, images)) / counts.sum()
    neutral = 0.5 * (neutral + mirror(neutral))
    ref = mesh.canonical_vertices().astype(np.float64)
    neutral = apply_pose(umeyama(neutral[RIGID_POINTS], ref[RIGID_POINTS]), neutral)
    deltas = symmetrise(result.deltas) if symmetric else result.deltas
    return ArkitRig(neutral, deltas)


# -------------------------------------------------------------------------------------------- residuals


def _errors(x: np.ndarray, model: np.ndarray) -> np.ndarray:
    """Per-face mean vertex distance in mm."""
    return np.linalg.norm(x - model, axis=-1).mean(-1) * MM


def _summary(rig_err: np.ndarray, neutral_err: np.ndarray) -> dict:
    return {
        "faces": int(len(rig_err)),
        "rig_mm": round(float(rig_err.mean()), 3),
        "neutral_mm": round(float(neutral_err.mean()), 3),
        "rig_pct_iod": round(float(100 * rig_err.mean() / IOD_MM), 3),
        "neutral_pct_iod": round(float(100 * neutral_err.mean() / IOD_MM), 3),
    }


def held_out_crops(parts: list[Part], result: Fit, deltas: np.ndarray) -> dict:
    """Held-out crops: their source's neutral alone vs neutral + weights @ deltas."""
    out = {}
    for p in parts:
        if p.subject is not None or not p.held.any():
            continue
        x, w = p.meshes[p.held].astype(np.float64), p.weights[p.held].astype(np.float64)
        n = result.neutrals[p.name]
        out[p.name] = _summary(_errors(x, n + np.einsum("fk,kvc->fvc", w, deltas)), _errors(x, n))
    return out


def leave_clip_out(parts: list[Part], ridge: float, video_weight: float, symmetric: bool) -> dict:
    """Each clip left out of the fit, then recorded as ``record --rig arkit`` does (own neutral, personalised)."""
    out = {}
    for clip in sorted({p.subject for p in parts if p.subject}):
        rest = [p for p in parts if p.subject != clip]
        rig = make_rig(fit(rest, ridge, video_weight), rest, symmetric)
        for p in (p for p in parts if p.subject == clip):
            personal, _ = personal_rig(p.meshes, p.weights, rig)
            x = p.meshes.astype(np.float64)
            out[p.name] = _summary(_errors(x, personal.shape(p.weights)), _errors(x, personal.neutral))
    return out


def _pooled(table: dict) -> dict:
    faces = sum(r["faces"] for r in table.values())
    return {
        k: round(sum(r[k] * r["faces"] for r in table.values()) / max(faces, 1), 3)
        for k in ("rig_mm", "neutral_mm", "rig_pct_iod", "neutral_pct_iod")
    } | {"faces": faces}


def sanity(rig: ArkitRig) -> dict[str, float]:
    """The offsets the tests check, in mm (canonical y points down)."""
    d = rig.deltas * MM
    i = ARKIT_INDEX
    return {
        "jawOpen_lower_lip_down": float(d[i["jawOpen"], 17, 1]),
        "eyeBlinkLeft_left_lid_down": float(d[i["eyeBlinkLeft"], 386, 1]),
        "eyeBlinkLeft_right_lid_down": float(d[i["eyeBlinkLeft"], 159, 1]),
        "mouthSmileLeft_left_corner_up": float(-d[i["mouthSmileLeft"], 291, 1]),
        "tongueOut_max": float(np.abs(d[i["tongueOut"]]).max()),
    }


def main(argv: list[str] | None = None) -> None:
    from face3d_live.models.registry import CPU_MODEL
    from face3d_live.training.data import default_data_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=Path(".cache/teacher"), help="teacher label cache")
    ap.add_argument("--data", type=Path, default=None, help="shared data folder (default ../shared/data)")
    ap.add_argument("--out", type=Path, default=ASSET)
    ap.add_argument("--model", default=CPU_MODEL, help="Reconstructor model run on the clips ('' = none)")
    ap.add_argument("--ridge", type=float, default=1e-3, help="ridge weight per face (weights are in [0, 1])")
    ap.add_argument("--video-weight", type=float, default=4.0, help="weight of a video frame vs a crop")
    ap.add_argument(
        "--asymmetric", action="store_true", help="keep Left/Right deltas as fitted (not mirrored)"
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = Path(args.data or default_data_dir())
    t0 = time.perf_counter()
    parts = load_image_parts(args.cache) + load_teacher_videos(args.cache)
    if args.model:
        parts += load_model_videos(data, args.cache, args.model, progress=not args.no_progress)
    if not parts:
        raise SystemExit(f"no labels in {args.cache}: run python -m face3d_live.training.teacher_landmarker")
    for p in parts:
        log.info("part %-28s %6d faces%s", p.name, len(p), f" (subject {p.subject})" if p.subject else "")
    symmetric = not args.asymmetric
    log.info("fitting %d shapes on %d faces (ridge %g)", N_SHAPES, sum(len(p) for p in parts), args.ridge)
    result = fit(parts, args.ridge, args.video_weight)
    rig = make_rig(result, parts, symmetric)
    crops = held_out_crops(parts, result, rig.deltas)
    log.info("held-out crops: %s", json.dumps(crops))
    log.info("leaving each clip out in turn (%d fits)", len({p.subject for p in parts if p.subject}))
    clips = leave_clip_out(parts, args.ridge, args.video_weight, symmetric)
    log.info("left-out clips: %s", json.dumps(clips))
    rig.metadata = {
        "date": time.strftime("%Y-%m-%d"),
        "data": {p.name: len(p) for p in parts},
        "data_note": "teacher (MediaPipe Face Landmarker) labels of the training-split crops (|yaw| <= 40, "
        "|pitch| <= 30) and of the clips, plus the Reconstructor's own meshes and blendshapes on the clips",
        "reconstructor_model": args.model,
        "ridge": args.ridge,
        "video_weight": args.video_weight,
        "symmetric": symmetric,
        "alignment": "similarity on avatar.rig.RIGID_POINTS to the canonical mesh",
        "units": "canonical mesh units (outer eye corners 9.0 apart, about 1 cm); x right, y down, +z away",
        "residuals": {
            "held_out_crops": crops,
            "held_out_crops_pooled": _pooled(crops),
            "left_out_clips": clips,
            "left_out_clips_pooled": _pooled(clips),
        },
        "sanity_mm": sanity(rig),
    }
    rig.save(args.out)
    log.info("sanity (mm): %s", json.dumps(rig.metadata["sanity_mm"]))
    log.info(
        "wrote %s in %.0f s: crops %s, clips %s",
        args.out,
        time.perf_counter() - t0,
        rig.metadata["residuals"]["held_out_crops_pooled"],
        rig.metadata["residuals"]["left_out_clips_pooled"],
    )


if __name__ == "__main__":
    main()
