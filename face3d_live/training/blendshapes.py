"""Train the blendshape network (face3d_live/expression/blendshapes.py) from the landmarker teacher's cache.

Data: ``<cache>/landmarker-*.npz`` (teacher_landmarker.py): the teacher's own 478 points → its 52
blendshapes (ARKit order), training split only (``held_out`` False, ``failed`` False); the held-out crops
and the video caches (``landmarker-video-*.npz``, tracked frames: never trained on) are the evaluation.
With ``<cache>/blendshape-inputs-mesh468-*.npz`` (``--label-mesh468``: what the ``model="mediapipe"``
path gives for the same crops, face_landmark.tflite's 468 vertices + IrisModel's iris) each crop is also
trained from those points with the same targets, so one network serves both kinds of input. Likewise
``<cache>/blendshape-inputs-rung-<model>-*.npz`` (``--label-rung r50-int8 --rung-limit 8000``: what
``Reconstructor(model)`` gives for a random subset of the training crops, still-image protocol) add that
face3d model's points, so the network also sees the systematic errors of the rung that feeds it at run time.

Augmentation: per-point Gaussian noise (σ drawn per face from 0 to ``noise`` × the outer-eye-corner
distance, on x, y and z) so the network tolerates the ~1-2 px error of the distilled face models that
will feed it. The pose fit runs inside the batch (torch), so the noise goes through it as at run time.
A horizontal mirror (``--mirror``: points re-indexed with ``mirror_indices_478``, Left/Right shapes
swapped) is off by default: it measured worse (held-out crops MAE 0.0177 vs 0.0151 at 40 epochs), the
teacher is not left/right symmetric.

``python -m face3d_live.training.blendshapes --cache .cache/teacher --label-rung r50-int8 --rung-limit 8000``
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from face3d_live.expression.arkit import ARKIT_BLENDSHAPES, ARKIT_INDEX, mirror_shapes
from face3d_live.expression.blendshapes import ALIGN_POINTS, ARCH, WEIGHTS, batched_umeyama

log = logging.getLogger(__name__)

OUTPUTS = np.array([i for i, n in enumerate(ARKIT_BLENDSHAPES) if n != "tongueOut"], np.int64)
MOVING_STD = 0.05  # a shape "moves" in an eval set when the teacher's std there exceeds this


@dataclass
class Split:
    points: np.ndarray  # (N, 478, 3) float32 image px: the landmarker teacher's own points
    targets: np.ndarray  # (N, 52) float32 ARKit order
    names: np.ndarray
    mesh468: np.ndarray | None = None  # (N, 478, 3) the mediapipe-mesh path's points of the same faces
    rungs: dict[str, np.ndarray] = field(default_factory=dict)  # model → (N, 478, 3), NaN where not labelled


def _mesh468(cache: Path, stem: str) -> np.ndarray | None:
    """The mediapipe-mesh path's points of a cache's rows (NaN where that mesh lost the face), or None."""
    f = Path(cache) / f"{MESH468_PREFIX}{stem}.npz"
    if not f.exists():
        return None
    with np.load(f) as z:
        pts = z["points"].copy()
        pts[z["score"] < 0.5] = np.nan
        return pts


def _rungs(cache: Path, stem: str) -> dict[str, np.ndarray]:
    """model → that face3d model's points of a cache's rows (``--label-rung``), NaN where not labelled or
    where the model's presence score is below 0.5."""
    out = {}
    for f in sorted(Path(cache).glob(f"{RUNG_PREFIX}*-{stem}.npz")):
        with np.load(f) as z:
            pts = z["points"].copy()
            pts[~(z["score"] >= 0.5)] = np.nan
            out[str(z["model"])] = pts
    return out


def load_crops(cache: Path) -> tuple[Split, Split]:
    """(train, held-out) of every crop cache, failed crops dropped (also where the 468 mesh lost the face)."""
    tr, ho = [], []
    files = sorted(
        p for p in Path(cache).glob("landmarker-*.npz") if not p.name.startswith("landmarker-video-")
    )
    if not files:
        raise FileNotFoundError(
            f"no landmarker-*.npz in {cache}: run python -m face3d_live.training.teacher_landmarker"
        )
    have_mesh = all(_mesh468(cache, f.stem.removeprefix("landmarker-")) is not None for f in files)
    rung_models = sorted({str(m) for f in files for m in _rungs(cache, f.stem.removeprefix("landmarker-"))})
    for f in files:
        stem = f.stem.removeprefix("landmarker-")
        m468 = _mesh468(cache, stem) if have_mesh else None
        rungs = _rungs(cache, stem)
        with np.load(f) as z:
            n = len(z["points"])
            rungs = {m: rungs.get(m, np.full((n, 478, 3), np.nan, np.float32)) for m in rung_models}
            ok = ~z["failed"]
            for keep, dst in ((ok & ~z["held_out"], tr), (ok & z["held_out"], ho)):
                dst.append((z["points"][keep], z["blendshapes"][keep], z["names"][keep],
                            None if m468 is None else m468[keep], {m: r[keep] for m, r in rungs.items()}))  # fmt: skip
    cat = lambda parts: Split(  # noqa: E731
        *(np.concatenate([p[i] for p in parts]) for i in range(3)),
        None if parts[0][3] is None else np.concatenate([p[3] for p in parts]),
        {m: np.concatenate([p[4][m] for p in parts]) for m in rung_models},
    )
    return cat(tr), cat(ho)


def load_videos(cache: Path) -> dict[str, Split]:
    out = {}
    for f in sorted(Path(cache).glob("landmarker-video-*.npz")):
        with np.load(f) as z:
            out[f.stem.removeprefix("landmarker-video-")] = Split(
                z["points"], z["blendshapes"], z["frame"], _mesh468(cache, f.stem.removeprefix("landmarker-"))
            )
    return out


MESH468_PREFIX = "blendshape-inputs-mesh468-"
RUNG_PREFIX = "blendshape-inputs-rung-"


def label_rung_inputs(
    cache: Path, model: str = "r50-int8", limit: int = 8000, seed: int = 0, progress: bool = True
) -> None:
    """The run-time input of a face3d model (``Reconstructor(model, backend="onnxruntime", smoothing=None)``,
    the still-image two-pass protocol from the whole crop) for a random subset of ``limit`` training-split
    crops (``held_out`` False, ``failed`` False; the same subset for a given seed, the first ``limit`` of one
    permutation) → ``<cache>/blendshape-inputs-rung-<model>-<stem>.npz`` (``names``, ``points`` (N, 478, 3)
    vertices + iris in image px, NaN on rows not labelled, ``score``, ``model``), rows in the landmarker
    cache's order. Existing files are kept."""
    from tqdm import tqdm

    from face3d_live.reconstructor import Reconstructor
    from face3d_live.training.teacher import iter_source

    files = sorted(
        p for p in Path(cache).glob("landmarker-*.npz") if not p.name.startswith("landmarker-video-")
    )
    rows = []  # (file index, row) of every training-split crop
    for k, f in enumerate(files):
        with np.load(f) as z:
            rows += [(k, int(i)) for i in np.flatnonzero(~z["failed"] & ~z["held_out"])]
    pick = np.random.default_rng(seed).permutation(len(rows))[: limit or len(rows)]
    chosen: dict[int, set[int]] = {}
    for j in pick:
        chosen.setdefault(rows[j][0], set()).add(rows[j][1])
    rec = Reconstructor(model, backend="onnxruntime", smoothing=None)
    for k, f in enumerate(files):
        stem = f.stem.removeprefix("landmarker-")
        out = Path(cache) / f"{RUNG_PREFIX}{model}-{stem}.npz"
        want = chosen.get(k, set())
        if out.exists() or not want:
            continue
        with np.load(f) as z:
            source, keys = str(z["source"]), z["names"]
        row = {str(n): i for i, n in enumerate(keys)}
        pts = np.full((len(keys), 478, 3), np.nan, np.float32)
        score = np.full(len(keys), np.nan, np.float32)
        bar = tqdm(total=len(want), desc=f"{model} {stem}", disable=not progress)
        t0 = time.perf_counter()
        for name, img in iter_source(Path(source)):
            i = row.get(name)
            if i is None or i not in want:
                continue
            h, w = img.shape[:2]
            face = rec.reconstruct(img, boxes=[(0, 0, w, h)])[0]
            pts[i] = np.concatenate([face.vertices, face.iris])
            score[i] = face.score
            bar.update()
        bar.close()
        np.savez(out, names=keys, points=pts, score=score, source=source, model=model)
        log.info("%s inputs: %s (%d of %d rows, %.1f ms each)", model, out, len(want), len(keys),
                 1e3 * (time.perf_counter() - t0) / len(want))  # fmt: skip


def label_mesh468_inputs(cache: Path, data: Path | None = None, progress: bool = True) -> None:
    """The run-time input of the ``model="mediapipe"`` path for every labelled crop and video frame:
    face_landmark.tflite's 468 vertices (teacher.py's two-pass protocol) + ``IrisModel``'s 10 iris points
    (on the second pass's crop), image px → ``<cache>/blendshape-inputs-mesh468-<stem>.npz`` (``names`` /
    ``frame``, ``points`` (N, 478, 3), ``score``), rows in the landmarker cache's order. Videos: each frame
    cropped around this mesh's previous frame (the first around the landmarker teacher's points)."""
    import cv2
    from tqdm import tqdm

    from face3d_live.geometry.crop import CropTransform
    from face3d_live.models.iris import IrisModel
    from face3d_live.models.tflite import TFLiteModel, bundled_model_path
    from face3d_live.training.data import default_data_dir
    from face3d_live.training.teacher import iter_source

    mesh = TFLiteModel(bundled_model_path("face_landmark.tflite"), 1)
    iris = IrisModel(1)

    def run(img: np.ndarray, ct: CropTransform) -> tuple[np.ndarray, float]:
        crop = ct.warp(img)
        lm, flag = mesh.run(crop[None].astype(np.float32) * (1.0 / 255.0))
        v = lm.reshape(468, 3)
        pts = np.concatenate([v, iris.predict(crop, v)])
        return ct.to_image(pts), float(1.0 / (1.0 + np.exp(-float(flag.ravel()[0]))))

    around = lambda p: CropTransform.around_points(p, p[33], p[263], 1.5, 192)  # noqa: E731
    data = Path(data or default_data_dir())
    for f in sorted(Path(cache).glob("landmarker-*.npz")):
        stem = f.stem.removeprefix("landmarker-")
        out = Path(cache) / f"{MESH468_PREFIX}{stem}.npz"
        if out.exists():
            continue
        with np.load(f) as z:
            source = str(z["source"])
            keys = z["frame"] if "frame" in z.files else z["names"]
            teacher_pts = z["points"]
        pts = np.zeros((len(keys), 478, 3), np.float32)
        score = np.zeros(len(keys), np.float32)
        if stem.startswith("video-"):
            cap = cv2.VideoCapture(source)
            row, prev, idx = {int(k): i for i, k in enumerate(keys)}, None, -1
            for _ in tqdm(range(int(keys.max()) + 1), desc=f"mesh468 {stem}", disable=not progress):
                ok, bgr = cap.read()
                idx += 1
                if not ok:
                    break
                if idx not in row:
                    prev = None
                    continue
                i = row[idx]
                img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                p, sc = run(img, around(prev if prev is not None else teacher_pts[i]))
                pts[i], score[i], prev = p, sc, (p if sc >= 0.5 else None)
            cap.release()
        else:
            row = {str(n): i for i, n in enumerate(keys)}
            for name, img in tqdm(
                iter_source(Path(source)), total=len(keys), desc=f"mesh468 {stem}", disable=not progress
            ):
                h, w = img.shape[:2]
                p, _ = run(img, CropTransform((w / 2, h / 2), float(max(h, w)), 0.0, 192))
                p, sc = run(img, around(p))
                pts[row[name]], score[row[name]] = p, sc
        key = "frame" if stem.startswith("video-") else "names"
        np.savez(out, **{key: keys}, points=pts, score=score, source=source)
        log.info("mesh468 inputs: %s (%d rows)", out, len(keys))


def reference_shape(points: np.ndarray, iters: int = 3) -> np.ndarray:
    """Procrustes mean of ``points`` (N, 478, 3) fitted on ALIGN_POINTS: centred on the fit points, unit RMS
    radius; rounded to FP16 (what the weights file stores) so training sees the run-time reference."""
    align = np.asarray(ALIGN_POINTS)
    ref = points[0].astype(np.float64)
    for _ in range(iters):
        ref = ref - ref[align].mean(0)
        ref = ref / np.sqrt((ref**2).sum(1).mean())
        rot, s, t = batched_umeyama(points[:, align].astype(np.float64), ref[align])
        q = s[:, None, None] * np.einsum("nkd,ned->nke", points.astype(np.float64), rot) + t[:, None]
        ref = np.median(q, 0)  # median: robust to the teacher's failures that slipped through
    ref = ref - ref[align].mean(0)
    ref = ref / np.sqrt((ref**2).sum(1).mean())
    return ref.astype(np.float16).astype(np.float64)


def torch_features(points, reference, align, inputs):
    """Torch twin of expression.blendshapes.features (same maths, batched SVD), for in-batch augmentation."""
    import torch

    p = points.double()
    src = p[:, align]
    dst = reference[align]
    mu_s = src.mean(1, keepdim=True)
    mu_d = dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = torch.einsum("kd,nke->nde", d0, s0) / src.shape[1]
    u, sig, vt = torch.linalg.svd(cov)
    sign = torch.sign(torch.linalg.det(u) * torch.linalg.det(vt))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    fix = torch.ones(p.shape[0], 3, dtype=p.dtype)
    fix[:, 2] = sign
    rot = torch.einsum("nij,nj,njk->nik", u, fix, vt)
    var_s = (s0**2).sum((1, 2)) / src.shape[1]
    scale = (sig * fix).sum(1) / var_s.clamp_min(1e-12)
    t = mu_d - scale[:, None] * torch.einsum("nij,nj->ni", rot, mu_s[:, 0])
    q = scale[:, None, None] * torch.einsum("nkd,ned->nke", p[:, inputs], rot) + t[:, None]
    off = (q - reference[inputs]) * 10.0
    return torch.cat([off.reshape(len(p), -1), rot.reshape(len(p), 9)], 1).float()


def build_mlp(n_in: int, hidden: int, n_out: int, layers: int = 3):
    import torch.nn as nn

    dims = [n_in] + [hidden] * (layers - 1) + [n_out]
    mods = {}
    for i in range(layers):
        mods[f"fc{i}"] = nn.Linear(dims[i], dims[i + 1])
    return nn.ModuleDict(mods)


def mlp_forward(net, x):
    import torch

    n = len(net)
    for i in range(n):
        x = net[f"fc{i}"](x)
        if i < n - 1:
            x = torch.relu(x)
    return x


def evaluate(pred: np.ndarray, target: np.ndarray, moving_std: float = MOVING_STD) -> dict:
    """MAE over all 51 shapes, and per moving shape (teacher std > moving_std): MAE and Pearson r."""
    keep = OUTPUTS
    err = np.abs(pred[:, keep] - target[:, keep])
    per = {}
    for j in keep:
        t, p = target[:, j], pred[:, j]
        if t.std() <= moving_std:
            continue
        r = float(np.corrcoef(t, p)[0, 1]) if p.std() > 1e-9 else 0.0
        per[ARKIT_BLENDSHAPES[j]] = {"r": r, "mae": float(np.abs(t - p).mean()), "std": float(t.std())}
    rs = [v["r"] for v in per.values()]
    return {
        "n": len(pred),
        "mae": float(err.mean()),
        "mae_moving": float(np.mean([v["mae"] for v in per.values()])) if per else float("nan"),
        "median_r": float(np.median(rs)) if rs else float("nan"),
        "moving": len(per),
        "per_shape": per,
    }


def add_noise(points: np.ndarray, rel_sigma: float, rng: np.random.Generator) -> np.ndarray:
    """iid Gaussian point noise, σ = rel_sigma × outer-eye-corner distance (x, y and z)."""
    iod = np.linalg.norm(points[:, 33, :2] - points[:, 263, :2], axis=1)
    return points + rng.normal(size=points.shape) * (rel_sigma * iod)[:, None, None]


def train(
    cache: Path,
    out: Path,
    *,
    inputs: str = "teacher146",
    hidden: int = 256,
    layers: int = 3,
    epochs: int = 80,
    batch: int = 256,
    lr: float = 2e-3,
    noise: float = 0.06,
    mirror: bool = False,
    pose_features: bool = True,
    mesh468: bool = True,
    rungs: bool = True,
    rung_repeat: int = 1,
    seed: int = 0,
) -> dict:
    import torch

    from face3d_live.geometry.mesh import mirror_indices_478
    from face3d_live.models.weights import save_weights
    from face3d_live.training.teacher_landmarker import BLENDSHAPE_SUBSET

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    tr, ho = load_crops(cache)
    videos = load_videos(cache)
    log.info("blendshapes: %d training crops, %d held out, videos %s", len(tr.points), len(ho.points),
             {k: len(v.points) for k, v in videos.items()})  # fmt: skip
    input_idx = {"teacher146": np.asarray(BLENDSHAPE_SUBSET), "all478": np.arange(478)}[inputs]
    align = np.asarray(ALIGN_POINTS)
    ref = reference_shape(tr.points[rng.choice(len(tr.points), min(4000, len(tr.points)), replace=False)])
    ref_t = torch.from_numpy(ref)

    mir_pts = torch.from_numpy(mirror_indices_478().astype(np.int64))
    mir_bs = torch.from_numpy(mirror_shapes())
    points, targets = tr.points, tr.targets
    if (
        mesh468 and tr.mesh468 is not None
    ):  # the same faces as the mediapipe-mesh path sees them, same targets
        ok = ~np.isnan(tr.mesh468).any((1, 2))
        points = np.concatenate([points, tr.mesh468[ok]])
        targets = np.concatenate([targets, tr.targets[ok]])
        log.info("blendshapes: + %d mediapipe-mesh inputs of the same crops", ok.sum())
    elif mesh468:
        log.warning("no %s* caches: training on the landmarker's points only", MESH468_PREFIX)
    n_rung = {}
    for m, rp in tr.rungs.items() if rungs else ():  # face3d models' points of a subset, same targets
        ok = ~np.isnan(rp).any((1, 2))
        points = np.concatenate([points, *[rp[ok]] * rung_repeat])
        targets = np.concatenate([targets, *[tr.targets[ok]] * rung_repeat])
        n_rung[m] = int(ok.sum())
        log.info("blendshapes: + %d %s inputs of the same crops", ok.sum(), m)
    pts = torch.from_numpy(points.astype(np.float32))
    tgt = torch.from_numpy(targets.astype(np.float32))
    iod = (pts[:, 33, :2] - pts[:, 263, :2]).norm(dim=1)

    with torch.no_grad():  # feature normalisation from the clean training set
        f = torch.cat(
            [torch_features(pts[i : i + 4096], ref_t, align, input_idx) for i in range(0, len(pts), 4096)]
        )
    mean, std = f.mean(0), f.std(0).clamp_min(1e-3)
    if not pose_features:  # zero the rotation block: the network then sees expression only
        std[-9:] = 1e9
    net = build_mlp(f.shape[1], hidden, len(OUTPUTS), layers)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(pts) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    out_idx = torch.from_numpy(OUTPUTS)
    for ep in range(epochs):
        perm = torch.randperm(len(pts))
        total = 0.0
        for i in range(0, len(pts), batch):
            idx = perm[i : i + batch]
            p, y = pts[idx].clone(), tgt[idx].clone()
            if mirror:
                flip = torch.rand(len(idx)) < 0.5
                if flip.any():
                    pf = p[flip][:, mir_pts]
                    pf[..., 0] = -pf[..., 0]
                    p[flip] = pf
                    y[flip] = y[flip][:, mir_bs]
            if noise > 0:
                sig = torch.rand(len(idx)) * noise * iod[idx]
                p = p + torch.randn_like(p) * sig[:, None, None]
            x = (torch_features(p, ref_t, align, input_idx) - mean) / std
            logits = mlp_forward(net, x)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[:, out_idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if ep % 5 == 0 or ep == epochs - 1:
            log.info("epoch %d: loss %.4f (%.0f s)", ep, total / len(pts), time.perf_counter() - t0)

    state = {k: v for k, v in net.state_dict().items()}
    state.update(
        reference=torch.from_numpy(ref.astype(np.float32)),
        align=torch.from_numpy(align.astype(np.int32)),
        inputs=torch.from_numpy(input_idx.astype(np.int32)),
        outputs=torch.from_numpy(OUTPUTS.astype(np.int32)),
        feature_mean=mean,
        feature_std=std,
    )
    config = {"layers": layers, "hidden": hidden, "inputs": inputs, "n_features": int(f.shape[1])}
    meta = {
        "teacher": "MediaPipe Face Landmarker float16/1 face_blendshapes.tflite (sha256 4f36dded049db18d...)",
        "data": f"training split of {len(tr.points)} crops (AFLW + expression set)",
        "recipe": json.dumps(
            {
                "epochs": epochs,
                "batch": batch,
                "lr": lr,
                "noise": noise,
                "mirror": mirror,
                "pose_features": pose_features,
                "mesh468": mesh468,
                "rungs": n_rung,
                "rung_repeat": rung_repeat,
                "seed": seed,
            }
        ),  # fmt: skip
    }
    save_weights(out, state, arch=ARCH, config=config, metadata=meta)
    report = evaluate_file(out, cache, tr=None, ho=ho, videos=videos)
    report["train_s"] = time.perf_counter() - t0
    return report


def evaluate_file(
    path: Path, cache: Path, tr=None, ho: Split | None = None, videos=None, noise_levels=(0.0, 0.02, 0.04)
) -> dict:
    """Metrics of a weights file through the numpy run-time model: held-out crops and each video, clean and
    with point noise (σ as a fraction of the outer-eye-corner distance)."""
    from face3d_live.expression.blendshapes import BlendshapeModel

    model = BlendshapeModel(path)
    if ho is None:
        _, ho = load_crops(cache)
    videos = videos if videos is not None else load_videos(cache)
    rng = np.random.default_rng(123)
    report: dict = {}
    sets = {"heldout_crops": ho, **{f"video_{k}": v for k, v in videos.items()}}
    if videos:
        sets["videos_all"] = Split(
            np.concatenate([v.points for v in videos.values()]),
            np.concatenate([v.targets for v in videos.values()]),
            np.concatenate([v.names for v in videos.values()]),
            None
            if any(v.mesh468 is None for v in videos.values())
            else np.concatenate([v.mesh468 for v in videos.values()]),
        )
    for name, s in list(sets.items()):
        if s.mesh468 is not None:
            ok = ~np.isnan(s.mesh468).any((1, 2))
            sets[f"{name}[mesh468]"] = Split(s.mesh468[ok], s.targets[ok], s.names[ok])
    for name, s in sets.items():
        for nz in noise_levels:
            pts = add_noise(s.points.astype(np.float64), nz, rng) if nz else s.points
            report[f"{name}@{nz:g}"] = evaluate(model.predict(pts), s.targets)
    report["checks"] = sanity_checks(model, ho, sets.get("videos_all"))
    return report


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """Inner-lip gap (13 upper, 14 lower) over the outer-eye-corner distance: a geometric jawOpen proxy."""
    gap = np.linalg.norm(points[:, 13, :2] - points[:, 14, :2], axis=1)
    return gap / np.linalg.norm(points[:, 33, :2] - points[:, 263, :2], axis=1)


def sanity_checks(model, ho: Split, videos: Split | None, labels_csv: Path | None = None) -> dict:
    """Smiles on the expression set's "happiness" crops vs "neutral" ones (held out), jawOpen vs the mouth's
    geometric opening (Pearson r), for the network and for the teacher."""
    import csv

    from face3d_live.training.data import default_data_dir

    out: dict = {}
    smile = [ARKIT_INDEX["mouthSmileLeft"], ARKIT_INDEX["mouthSmileRight"]]
    jaw = ARKIT_INDEX["jawOpen"]
    csv_path = labels_csv or default_data_dir() / "faces" / "expressions_labels.csv"
    if csv_path.is_file():
        with open(csv_path, newline="") as f:
            emotion = {r["image"]: r["emotion"] for r in csv.DictReader(f)}
        emo = np.array([emotion.get(str(n), "") for n in ho.names])
        pred = model.predict(ho.points)
        for lab in ("happiness", "neutral"):
            k = emo == lab
            if k.any():
                out[f"smile_{lab}"] = {
                    "n": int(k.sum()),
                    "model_mean": float(pred[k][:, smile].mean()),
                    "teacher_mean": float(ho.targets[k][:, smile].mean()),
                    "model_frac_over_0.5": float((pred[k][:, smile].mean(1) > 0.5).mean()),
                }
    for name, s in (("heldout_crops", ho), ("videos", videos)):
        if s is None:
            continue
        gap = mouth_opening(s.points)
        out[f"jawOpen_vs_mouth_gap_r_{name}"] = {
            "model": float(np.corrcoef(model.predict(s.points)[:, jaw], gap)[0, 1]),
            "teacher": float(np.corrcoef(s.targets[:, jaw], gap)[0, 1]),
        }
    return out


def summary_lines(report: dict) -> list[str]:
    lines = []
    for k, v in report.items():
        if not isinstance(v, dict) or "median_r" not in v:
            continue
        weak = sorted(v["per_shape"].items(), key=lambda kv: kv[1]["r"])[:4]
        lines.append(
            f"{k:28s} n={v['n']:5d} MAE {v['mae']:.4f} (moving {v['mae_moving']:.4f}) median r {v['median_r']:.3f} "
            f"over {v['moving']} moving; weakest " + ", ".join(f"{n} {m['r']:.2f}" for n, m in weak)
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="train the blendshape MLP from the landmarker teacher's cache")
    ap.add_argument("--cache", type=Path, default=Path(".cache/teacher"))
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    ap.add_argument("--inputs", choices=("teacher146", "all478"), default="teacher146")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--noise", type=float, default=0.06, help="max point-noise σ / outer-eye-corner distance")
    ap.add_argument("--mirror", action="store_true", help="add horizontally mirrored faces (measured worse)")
    ap.add_argument("--no-pose", action="store_true", help="do not feed the fitted rotation to the network")
    ap.add_argument("--no-mesh468", action="store_true", help="train on the landmarker's points only")
    ap.add_argument("--label-mesh468", action="store_true", help="make the mediapipe-mesh input caches first")
    ap.add_argument(
        "--label-rung",
        nargs="*",
        default=[],
        metavar="MODEL",
        help="make face3d-model input caches first (e.g. r50-int8 r50) for --rung-limit training crops",
    )
    ap.add_argument(
        "--rung-limit",
        type=int,
        nargs="*",
        default=[8000],
        help="training crops to label per --label-rung model (one value, or one per model)",
    )
    ap.add_argument("--no-rungs", action="store_true", help="do not train on the face3d-model input caches")
    ap.add_argument(
        "--rung-repeat", type=int, default=1, help="times each face3d-model input is seen per epoch"
    )
    ap.add_argument("--label-only", action="store_true", help="make the input caches, do not train")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-only", action="store_true", help="only evaluate --out")
    ap.add_argument("--report", type=Path, default=None, help="write the metrics as JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.label_mesh468:
        label_mesh468_inputs(args.cache)
    for i, m in enumerate(args.label_rung):
        label_rung_inputs(args.cache, m, args.rung_limit[min(i, len(args.rung_limit) - 1)], seed=args.seed)
    if args.label_only:
        return
    if args.eval_only:
        report = evaluate_file(args.out, args.cache)
    else:
        report = train(
            args.cache, args.out, inputs=args.inputs, hidden=args.hidden, layers=args.layers, epochs=args.epochs,
            noise=args.noise, mirror=args.mirror, pose_features=not args.no_pose,
            mesh468=not args.no_mesh468, rungs=not args.no_rungs, rung_repeat=args.rung_repeat, seed=args.seed,
        )  # fmt: skip
    for line in summary_lines(report):
        log.info("%s", line)
    log.info("checks: %s", json.dumps(report.get("checks", {})))
    if args.report:
        args.report.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
