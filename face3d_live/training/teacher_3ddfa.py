"""3DDFA_V2's MobileNet-0.5 as a training-only teacher for 68 3D landmarks (iBUG order, 3DMM convention).

The 3DMM ("morphable model") convention of AFLW2000-3D / 300W-LP: the jaw points 0-16 are the 3D jaw line,
visible or not (not the 2D silhouette). The network regresses 62 3DMM parameters from a 120x120 BGR crop of
a ROI box; the 68 points are its keypoint rows of the BFM. Weights and bases are read from the teacher pack
(``../shared/teachers/3ddfa_v2``, or ``$FACE3D_TEACHERS/3ddfa_v2``); they are research-only (BFM terms) and
nothing shipped to users may import this module.

Output convention (the project's): x right, y down in image pixels, z in pixels with **+z away from the
camera** (3DDFA's z is larger = nearer, so it is negated), then shifted so its mean over the 68 points is 0.

Cache (one file per source): ``<cache>/3ddfa-<stem>.npz`` with ``names`` (N,) sorted, ``lm68`` (N, 68, 3)
float32 in the source image's pixels, ``roi`` (N, 4) of the last pass, ``hw`` (N, 2) image sizes,
``held_out`` (N,) (teacher.py's split), ``source``; for AFLW shards also ``lm68_manual`` (the manual points
win, see `manual_override`) and ``n_manual`` (N,) how many of the 16 mapped points were annotated.

Protocol (measured on 1500 AFLW crops against the manual points, see `compare_protocols`): two passes, the
whole crop as the first ROI, then `roi_from_landmarks` of the first pass (3DDFA_V2's tracking). NME % by
|yaw| [0,30] / (30,60] / (60,90]: whole crop 4.94 / 5.26 / 5.65; roi_from_bbox(crop) 8.64 / 9.84 / 11.27;
whole crop + landmark ROI 4.91 / 5.09 / 5.60; bbox + landmark ROI 4.99 / 5.29 / 6.11 (all 19,078 annotated
crops with the chosen one: 4.96 / 5.28 / 5.62). The expression crops (no manual points) are framed tighter
(face 0.82 of the image, centred 0.64 down, vs 0.69 and 0.50 on AFLW); the same AFLW crops re-cut to that
framing keep the ranking (5.01 / 5.34 / 5.80 vs whole crop 5.02 / 5.34 / 5.86, bbox 6.44 / 7.38 / 8.29),
so one protocol serves both.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from face3d_live.errors import SourceError

log = logging.getLogger(__name__)

INPUT_SIZE = 120
PACK_FILES = ("mb05_120x120.pth", "param_mean_std_62d.npz", "bfm_keypoints68.npz")

# AFLW-21 index (0-based, points21.py order) -> iBUG-68 index, for the 16 points both define.
# AFLW's "right" is the subject's right = image left on a frontal face, as iBUG 17-21 / 36-41 / 31 / 48.
AFLW_TO_IBUG: dict[int, int] = {
    0: 17, 1: 19, 2: 21,  # right brow: outer corner, centre, inner corner
    3: 22, 4: 24, 5: 26,  # left brow: inner, centre, outer
    6: 36, 8: 39,  # right eye: outer, inner corner
    9: 42, 11: 45,  # left eye: inner, outer corner
    13: 31, 14: 30, 15: 35,  # nostril, nose tip, nostril
    17: 48, 19: 54,  # mouth corners
    20: 8,  # chin
}  # fmt: skip
AFLW_IDX = np.array(list(AFLW_TO_IBUG), np.int64)
IBUG_IDX = np.array(list(AFLW_TO_IBUG.values()), np.int64)

YAW_BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))
OVERRIDE_DAMPING = 10.0  # manual_override: correction weight m / (m + 10) for m annotated points (measured)


def teachers_dir() -> Path:
    """The 3DDFA_V2 pack: $FACE3D_TEACHERS/3ddfa_v2, else ../shared/teachers/3ddfa_v2 beside the checkout."""
    env = os.environ.get("FACE3D_TEACHERS")
    root = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "teachers"
    return root / "3ddfa_v2"


def _check_pack(folder: Path) -> Path:
    missing = [f for f in PACK_FILES if not (Path(folder) / f).is_file()]
    if missing:
        raise SourceError(
            f"3DDFA_V2 teacher pack incomplete in {folder} (missing {', '.join(missing)}): "
            "set FACE3D_TEACHERS to the folder holding 3ddfa_v2/"
        )
    return Path(folder)


# ---------------------------------------------------------------------------------------------------------
# ROI boxes, cropping, crop frame -> image (all as 3DDFA_V2 does them)


def roi_from_bbox(box: Sequence[float]) -> np.ndarray:
    """3DDFA_V2 `parse_roi_box_from_bbox`: a square 1.58x the mean side, centred 0.14 side below the box."""
    left, top, right, bottom = (float(v) for v in box[:4])
    old = (right - left + bottom - top) / 2
    cx = right - (right - left) / 2.0
    cy = bottom - (bottom - top) / 2.0 + old * 0.14
    size = int(old * 1.58)  # truncated, as the original
    sx, sy = cx - size / 2, cy - size / 2
    return np.array([sx, sy, sx + size, sy + size], np.float64)


def roi_from_landmarks(pts: np.ndarray) -> np.ndarray:
    """3DDFA_V2 `parse_roi_box_from_landmark`: a square of side sqrt(2)·max(w, h) about the points' extent."""
    pts = np.asarray(pts, np.float64)[:, :2]
    lo, hi = pts.min(0), pts.max(0)
    c = (lo + hi) / 2
    side = np.sqrt(2.0) * float((hi - lo).max())
    return np.array([c[0] - side / 2, c[1] - side / 2, c[0] + side / 2, c[1] + side / 2], np.float64)


def crop_roi(img: np.ndarray, roi: Sequence[float]) -> np.ndarray:
    """3DDFA_V2 `crop_img`: rows sy..ey-1, columns sx..ex-1 of the rounded box, zero-filled outside."""
    h, w = img.shape[:2]
    sx, sy, ex, ey = (int(round(float(v))) for v in roi)  # Python round (half to even), as the original
    dh, dw = ey - sy, ex - sx
    out = np.zeros((max(dh, 1), max(dw, 1)) + img.shape[2:], np.uint8)
    x0, y0, x1, y1 = max(sx, 0), max(sy, 0), min(ex, w), min(ey, h)
    if x1 > x0 and y1 > y0:
        out[y0 - sy : y1 - sy, x0 - sx : x1 - sx] = img[y0:y1, x0:x1]
    return out


def to_image(pts_crop: np.ndarray, roi: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """(B, 68, 3) crop frame (x right, y up, 1-based) -> image px, project convention (+z away, mean 0).

    3DDFA_V2's `similar_transform` with the unrounded ROI; its z offset (-1, minus the min) drops out in
    the centring.
    """
    roi = np.asarray(roi, np.float64).reshape(-1, 4)
    kx = (roi[:, 2] - roi[:, 0]) / size
    ky = (roi[:, 3] - roi[:, 1]) / size
    out = np.empty(pts_crop.shape, np.float64)
    out[..., 0] = (pts_crop[..., 0] - 1) * kx[:, None] + roi[:, None, 0]
    out[..., 1] = (size - pts_crop[..., 1]) * ky[:, None] + roi[:, None, 1]
    z = -pts_crop[..., 2] * ((kx + ky) / 2)[:, None]  # negate: 3DDFA's larger z is nearer
    out[..., 2] = z - z.mean(1, keepdims=True)
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# the network


def _build_net():
    """MobileNetV1 width 0.5 with 3DDFA_V2's module names, so the checkpoint loads strictly."""
    import torch
    from torch import nn

    class DepthWiseBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv_dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
            self.bn_dw = nn.BatchNorm2d(cin)
            self.conv_sep = nn.Conv2d(cin, cout, 1, 1, 0, bias=False)
            self.bn_sep = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.relu(self.bn_dw(self.conv_dw(x)))
            return self.relu(self.bn_sep(self.conv_sep(x)))

    class MobileNet05(nn.Module):
        BLOCKS = (
            ("dw2_1", 16, 32, 1), ("dw2_2", 32, 64, 2), ("dw3_1", 64, 64, 1), ("dw3_2", 64, 128, 2),
            ("dw4_1", 128, 128, 1), ("dw4_2", 128, 256, 2), ("dw5_1", 256, 256, 1), ("dw5_2", 256, 256, 1),
            ("dw5_3", 256, 256, 1), ("dw5_4", 256, 256, 1), ("dw5_5", 256, 256, 1), ("dw5_6", 256, 512, 2),
            ("dw6", 512, 512, 1),
        )  # fmt: skip

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, 2, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.relu = nn.ReLU(inplace=True)
            for name, cin, cout, stride in self.BLOCKS:
                setattr(self, name, DepthWiseBlock(cin, cout, stride))
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.fc_param = nn.Linear(512, 62)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.relu(self.bn1(self.conv1(x)))
            for name, *_ in self.BLOCKS:
                x = getattr(self, name)(x)
            return self.fc_param(self.avg_pool(x).flatten(1))

    return MobileNet05()


class Teacher3DDFA:
    """3DDFA_V2 MobileNet-0.5 on CPU torch: images + ROI boxes -> (N, 68, 3) landmarks in image pixels."""

    def __init__(self, folder: Path | None = None, batch: int = 256, threads: int | None = None) -> None:
        import torch

        folder = _check_pack(Path(folder) if folder else teachers_dir())
        if threads:
            torch.set_num_threads(threads)
        ckpt = torch.load(folder / "mb05_120x120.pth", map_location="cpu", weights_only=True)
        state = {
            k.removeprefix("module."): v
            for k, v in ckpt.get("state_dict", ckpt).items()
            if not k.removeprefix("module.").startswith("fc_lm.")
        }
        self.net = _build_net()
        self.net.load_state_dict(state, strict=True)
        self.net.eval()
        with np.load(folder / "param_mean_std_62d.npz") as z:
            self.mean = z["mean"].astype(np.float64)
            self.std = z["std"].astype(np.float64)
        with np.load(folder / "bfm_keypoints68.npz") as z:
            self.u = z["u"].astype(np.float64)
            self.w_shp = z["w_shp"].astype(np.float64)
            self.w_exp = z["w_exp"].astype(np.float64)
        self.batch = batch

    @staticmethod
    def preprocess(img_rgb: np.ndarray, roi: Sequence[float]) -> np.ndarray:
        """One face -> (3, 120, 120) float32 network input: integer crop, bilinear resize, BGR, (x-127.5)/128."""
        if img_rgb.ndim == 2:
            img_rgb = np.repeat(img_rgb[..., None], 3, axis=2)
        crop = crop_roi(img_rgb, roi)
        crop = cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
        bgr = crop[..., ::-1].astype(np.float32)  # trained on cv2.imread's BGR
        return ((bgr - 127.5) / 128.0).transpose(2, 0, 1)

    def params(self, x: np.ndarray) -> np.ndarray:
        """(B, 3, 120, 120) inputs -> (B, 62) de-normalised 3DMM parameters."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(x), self.batch):
                out.append(self.net(torch.from_numpy(np.ascontiguousarray(x[i : i + self.batch]))).numpy())
        return np.concatenate(out).astype(np.float64) * self.std + self.mean

    def landmarks_crop(self, p: np.ndarray) -> np.ndarray:
        """(B, 62) parameters -> (B, 68, 3) points in the 120x120 crop frame (x right, y up, 1-based)."""
        m = p[:, :12].reshape(-1, 3, 4)
        v = self.u + p[:, 12:52] @ self.w_shp.T + p[:, 52:62] @ self.w_exp.T  # (B, 204), xyz interleaved
        v = v.reshape(-1, 68, 3)  # Fortran (3, 68) == point-major rows
        return np.einsum("bij,bkj->bki", m[:, :, :3], v) + m[:, None, :, 3]

    def predict(self, images_rgb: Iterable[np.ndarray] | np.ndarray, roi_boxes: np.ndarray) -> np.ndarray:
        """Images (RGB uint8) + ROI boxes (N, 4) [sx, sy, ex, ey] -> (N, 68, 3) float32 image px."""
        roi_boxes = np.asarray(roi_boxes, np.float64).reshape(-1, 4)
        x = np.stack([self.preprocess(img, r) for img, r in zip(images_rgb, roi_boxes)])
        if len(x) != len(roi_boxes):
            raise ValueError(f"{len(x)} images but {len(roi_boxes)} ROI boxes")
        return to_image(self.landmarks_crop(self.params(x)), roi_boxes)

    def predict_two_pass(self, images_rgb: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The chosen protocol: whole image as ROI, then `roi_from_landmarks` of pass 1 -> (lm68, roi2)."""
        roi1 = np.array([[0, 0, img.shape[1], img.shape[0]] for img in images_rgb], np.float64)
        lm1 = self.predict(images_rgb, roi1)
        roi2 = np.stack([roi_from_landmarks(p) for p in lm1])
        return self.predict(images_rgb, roi2), roi2


# ---------------------------------------------------------------------------------------------------------
# evaluation against the AFLW manual points


def nme(pred68: np.ndarray, pts21: np.ndarray) -> np.ndarray:
    """(N,) mean error over the annotated mapped points / sqrt(w·h) of all annotated manual points' box."""
    p = pred68[:, IBUG_IDX, :2].astype(np.float64)
    g = pts21[:, AFLW_IDX].astype(np.float64)
    lo, hi = np.nanmin(pts21, 1), np.nanmax(pts21, 1)
    norm = np.sqrt(np.prod(hi - lo, axis=1))
    d = np.linalg.norm(p - g, axis=2)
    return np.nanmean(d, axis=1) / norm


def nme_by_yaw(err: np.ndarray, yaw: np.ndarray) -> list[float]:
    """Mean NME (%) per |yaw| bin [0,30], (30,60], (60,90]."""
    a = np.abs(yaw)
    out = []
    for lo, hi in YAW_BINS:
        m = (a <= hi) & ((a > lo) if lo > 0 else (a >= lo)) & np.isfinite(err)
        out.append(100 * float(err[m].mean()) if m.any() else float("nan"))
    return out


def load_aflw_sample(data_dir: Path, n: int, seed: int = 0):
    """~n AFLW crops spread over the shards: (images, pts21 (n,21,2) crop px, yaw (n,), names)."""
    from face3d_live.training.data import aflw_shards, iter_tar_images, load_aflw_labels

    aflw = load_aflw_labels(data_dir)
    row = {name: i for i, name in enumerate(aflw.names)}
    rng = np.random.default_rng(seed)
    keep = set(rng.choice(len(aflw.names), size=min(n, len(aflw.names)), replace=False).tolist())
    imgs, pts, yaw, names = [], [], [], []
    for shard in aflw_shards(data_dir):
        for name, img in iter_tar_images(shard):
            i = row.get(name)
            if i is None or i not in keep:
                continue
            p = aflw.points_in_crop(i, img.shape[1])
            if np.isfinite(p[AFLW_IDX, 0]).sum() < 3:
                continue
            imgs.append(img)
            pts.append(p)
            yaw.append(aflw.yaw[i])
            names.append(name)
    return imgs, np.asarray(pts), np.asarray(yaw, np.float64), names


def compare_protocols(
    teacher: Teacher3DDFA, imgs: list[np.ndarray], pts: np.ndarray, yaw: np.ndarray
) -> dict:
    """NME (%) per |yaw| bin of the ROI choices: (a) whole crop, (b) roi_from_bbox(whole crop),
    (c) best of (a)/(b) then roi_from_landmarks of it (and (c') the other one, for reference)."""
    whole = np.array([[0, 0, im.shape[1], im.shape[0]] for im in imgs], np.float64)
    res: dict[str, list[float]] = {}
    lm = {
        "a_whole": teacher.predict(imgs, whole),
        "b_bbox": teacher.predict(imgs, np.stack([roi_from_bbox(r) for r in whole])),
    }
    for key in list(lm):
        lm[f"c_{key}+lmk"] = teacher.predict(imgs, np.stack([roi_from_landmarks(p) for p in lm[key]]))
    for key, v in lm.items():
        e = nme(v, pts)
        res[key] = nme_by_yaw(e, yaw) + [float(np.mean(nme_by_yaw(e, yaw)))]
    return res


# ---------------------------------------------------------------------------------------------------------
# manual points win


def _fit_transform(src: np.ndarray, dst: np.ndarray, kind: str) -> np.ndarray | None:
    """2x3 least-squares map src -> dst (2D): 'translation', 'similarity' or 'affine'; None if too few."""
    n = len(src)
    need = {"translation": 1, "similarity": 2, "affine": 3}[kind]
    if n < need:
        return None
    if kind == "translation":
        return np.hstack([np.eye(2), (dst - src).mean(0)[:, None]])
    if kind == "similarity":
        # x' = a x - b y + tx, y' = b x + a y + ty
        A = np.zeros((2 * n, 4))
        A[0::2] = np.stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)], 1)
        A[1::2] = np.stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)], 1)
        a, b, tx, ty = np.linalg.lstsq(A, dst.reshape(-1), rcond=None)[0]
        return np.array([[a, -b, tx], [b, a, ty]])
    A = np.hstack([src, np.ones((n, 1))])
    if np.linalg.matrix_rank(A) < 3:
        return None
    return np.linalg.lstsq(A, dst, rcond=None)[0].T


def _apply(T: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ T[:, :2].T + T[:, 2]


def manual_override(
    lm68: np.ndarray,
    points21: np.ndarray,
    correction: str = "similarity",
    damping: float = OVERRIDE_DAMPING,
) -> np.ndarray:
    """lm68 (N, 68, 3) teacher points, points21 (N, 21, 2) manual AFLW points in the same pixels (NaN = not
    annotated) -> (N, 68, 3): x, y of the 16 mapped iBUG points replaced where annotated, and the other points
    moved part of the way by a transform fitted on the replaced points' teacher->manual displacement.

    The correction (``correction`` 'none' | 'translation' | 'similarity' | 'affine', over the whole face) is
    damped by m / (m + damping) for m annotated points: the manual-vs-teacher displacements are mostly
    per-point (annotation noise, definition differences; their correlation between points is only ~0.15),
    so a full correction adds more noise than it removes. z is kept (the manual points are 2D).
    Measured (`evaluate_override`, 3000 AFLW crops; fit on half the annotated mapped points, error of the
    other half, % of the manual box; held-out split / training split): teacher as is (= replace only)
    5.33 / 4.98; similarity undamped 5.72 / 5.48; similarity m/(m+10) 5.14 / 4.83; translation m/(m+10)
    5.21 / 4.87; affine m/(m+10) 5.25 / 5.34 (better than similarity only with 3/4 of the points fitted,
    4.98 vs 5.06, and it can shear the hidden half of a profile: not used); undamped per-region
    corrections (brows / eyes / nose / mouth / jaw) were worse than the same over the whole face.
    """
    out = np.array(lm68, np.float32, copy=True)
    pts21 = np.asarray(points21, np.float64)
    for n in range(len(out)):
        g = pts21[n, AFLW_IDX]
        ok = np.isfinite(g).all(1)
        if not ok.any():
            continue
        ib = IBUG_IDX[ok]
        src, dst = out[n, ib, :2].astype(np.float64), g[ok]
        T = _fit_transform(src, dst, correction) if correction != "none" else None
        if T is not None:
            beta = len(ib) / (len(ib) + damping)
            rest = np.setdiff1d(np.arange(68), ib)
            q = out[n, rest, :2].astype(np.float64)
            out[n, rest, :2] = q + beta * (_apply(T, q) - q)
        out[n, ib, :2] = dst
    return out


def evaluate_override(
    lm68: np.ndarray,
    pts21: np.ndarray,
    variants: dict[str, tuple[str, float]] | None = None,
    fit_fraction: float = 0.5,
    seed: int = 0,
    repeats: int = 3,
) -> dict[str, float]:
    """Per face, fit the override on a random ``fit_fraction`` of the annotated mapped points and measure the
    error of the others (mean px / sqrt(w·h) of the manual box, %) for each (correction, damping) variant;
    'teacher' = the raw teacher points (no correction: replace only gives the same held-out error)."""
    if variants is None:
        variants = {"replace_only": ("none", 0.0)}
        for kind in ("translation", "similarity", "affine"):
            for damping in (0.0, 4.0, 8.0, 12.0, 16.0, 24.0):
                variants[f"{kind}/d{damping:g}"] = (kind, damping)
    rng = np.random.default_rng(seed)
    lo, hi = np.nanmin(pts21, 1), np.nanmax(pts21, 1)
    norm = np.sqrt(np.prod(hi - lo, axis=1))
    errs: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        fit = pts21.copy()
        held = np.zeros(pts21.shape[:2], bool)
        for n in range(len(pts21)):
            ann = AFLW_IDX[np.isfinite(pts21[n, AFLW_IDX, 0])]
            if len(ann) < 2:
                continue
            h = rng.permutation(ann)[: max(1, int(round(len(ann) * (1 - fit_fraction))))]
            held[n, h] = True
            fit[n, h] = np.nan
        mask = held[:, AFLW_IDX]
        for key, (kind, damping) in variants.items():
            pred = manual_override(lm68, fit, kind, damping)
            d = np.linalg.norm(pred[:, IBUG_IDX, :2] - pts21[:, AFLW_IDX], axis=2) / norm[:, None]
            errs[key].append(float(d[mask].mean()))
    return {k: 100 * float(np.mean(v)) for k, v in errs.items()}


# ---------------------------------------------------------------------------------------------------------
# labelling with cache


@dataclass(frozen=True)
class Labels3DDFA:
    """Cached 3DDFA labels of one source (see module docstring); row i <-> names[i]."""

    names: np.ndarray
    lm68: np.ndarray
    roi: np.ndarray
    held_out: np.ndarray
    source: str
    hw: np.ndarray | None = None
    lm68_manual: np.ndarray | None = None
    n_manual: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    def index(self) -> dict[str, int]:
        return {str(n): i for i, n in enumerate(self.names)}


def cache_path_3ddfa(cache_dir: Path, source: Path) -> Path:
    source = Path(source)
    stem = source.name[:-4] if source.name.endswith(".tar") else source.name
    return Path(cache_dir) / f"3ddfa-{stem}.npz"


def load_labels_3ddfa(path: Path) -> Labels3DDFA:
    try:
        with np.load(path, allow_pickle=False) as z:
            return Labels3DDFA(
                names=z["names"],
                lm68=z["lm68"],
                roi=z["roi"],
                held_out=z["held_out"],
                source=str(z["source"]),
                hw=z["hw"] if "hw" in z.files else None,
                lm68_manual=z["lm68_manual"] if "lm68_manual" in z.files else None,
                n_manual=z["n_manual"] if "n_manual" in z.files else None,
            )
    except (OSError, KeyError, ValueError) as exc:
        raise SourceError(f"3DDFA label cache {path} is unreadable ({exc}); delete it to relabel") from exc


def label_3ddfa(
    source: Path,
    cache_dir: Path,
    aflw=None,
    teacher: Teacher3DDFA | None = None,
    chunk: int = 1024,
    limit: int = 0,
    force: bool = False,
    progress: bool = True,
) -> Labels3DDFA:
    """3DDFA-label every image of ``source`` (tar shard or folder) once; later calls load the cache.

    ``aflw`` (data.AflwLabels, optional): where a name has manual points, also store ``lm68_manual``.
    """
    from tqdm import tqdm

    from face3d_live.training.teacher import is_held_out, iter_source

    out = cache_path_3ddfa(cache_dir, source)
    if out.exists() and not force:
        labels = load_labels_3ddfa(out)
        if not limit or len(labels) == limit:
            return labels
    teacher = teacher or Teacher3DDFA()
    out.parent.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    lms, rois, shapes = [], [], []
    imgs: list[np.ndarray] = []

    def flush() -> None:
        if imgs:
            lm, roi = teacher.predict_two_pass(imgs)
            lms.append(lm)
            rois.append(roi)
            imgs.clear()

    with tqdm(desc=f"3ddfa {Path(source).name}", disable=not progress, unit="img") as bar:
        for i, (name, img) in enumerate(iter_source(Path(source))):
            if limit and i >= limit:
                break
            names.append(name)
            shapes.append(img.shape[:2])
            imgs.append(img)
            if len(imgs) >= chunk:
                flush()
            bar.update(1)
        flush()
    if not names:
        raise SourceError(f"{source}: no images")
    order = np.argsort(np.array(names, dtype=object), kind="stable")
    names_arr = np.array([names[i] for i in order])
    lm68 = np.concatenate(lms)[order]
    fields = {
        "names": names_arr,
        "lm68": lm68,
        "roi": np.concatenate(rois)[order].astype(np.float32),
        "hw": np.asarray(shapes, np.int32)[order],
        "held_out": np.array([is_held_out(str(n)) for n in names_arr]),
        "source": str(source),
    }
    if aflw is not None:
        fields.update(_manual_fields(names_arr, lm68, fields["hw"], aflw))
    _save(out, fields)
    log.info("3ddfa labels: %s: %d images (%d held out)", out, len(names_arr), fields["held_out"].sum())
    return load_labels_3ddfa(out)


def aflw_points_for(names: np.ndarray, hw: np.ndarray, aflw) -> np.ndarray:
    """(N, 21, 2) manual AFLW points in each crop's pixels (an h x w crop of the AFLW ROI box), NaN where not
    annotated or the name has no AFLW row."""
    row = {n: i for i, n in enumerate(aflw.names)}
    pts = np.full((len(names), 21, 2), np.nan)
    for j, n in enumerate(names):
        i = row.get(str(n))
        if i is None:
            continue
        sx, sy, ex, ey = aflw.roi[i].astype(np.float64)
        p = aflw.pts21[i].T.astype(np.float64)
        pts[j, :, 0] = (p[:, 0] - sx) / (ex - sx) * hw[j, 1]
        pts[j, :, 1] = (p[:, 1] - sy) / (ey - sy) * hw[j, 0]
        pts[j][(p < 0).any(1)] = np.nan
    return pts


def _manual_fields(names: np.ndarray, lm68: np.ndarray, hw: np.ndarray, aflw) -> dict[str, np.ndarray]:
    pts = aflw_points_for(names, hw, aflw)
    if not np.isfinite(pts).any():
        return {}
    return {
        "lm68_manual": manual_override(lm68, pts),
        "n_manual": np.isfinite(pts[:, AFLW_IDX, 0]).sum(1).astype(np.int16),
    }


def _save(out: Path, fields: dict) -> None:
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, **fields)
    tmp.replace(out)


def refresh_manual(path: Path, aflw) -> Labels3DDFA:
    """Recompute ``lm68_manual`` of a cache (after a change to `manual_override`) without the network; crop
    sizes come from the cache's ``hw`` or, in older caches, from decoding the source once."""
    from face3d_live.training.teacher import iter_source

    with np.load(path, allow_pickle=False) as z:
        fields = {k: z[k] for k in z.files}
    if "hw" not in fields:
        shapes = {name: img.shape[:2] for name, img in iter_source(Path(str(fields["source"])))}
        fields["hw"] = np.array([shapes[str(n)] for n in fields["names"]], np.int32)
    fields.update(_manual_fields(fields["names"], fields["lm68"], fields["hw"], aflw))
    _save(Path(path), fields)
    return load_labels_3ddfa(path)


def main(argv: list[str] | None = None) -> None:
    from face3d_live.training.data import default_data_dir, load_aflw_labels
    from face3d_live.training.pipeline import find_sources

    p = argparse.ArgumentParser(prog="python -m face3d_live.training.teacher_3ddfa", description=__doc__)
    p.add_argument("--data", type=Path, default=default_data_dir(), help="data folder (sources in faces/)")
    p.add_argument("--cache", type=Path, default=Path(".cache/teacher"), help="label cache folder")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 leaves cores for others)")
    p.add_argument("--limit", type=int, default=0, help="first N images per source (0 = all)")
    p.add_argument("--force", action="store_true", help="relabel even if cached")
    p.add_argument("--compare", type=int, default=0, help="only measure the ROI protocols on N AFLW crops")
    p.add_argument("--refresh-manual", action="store_true", help="only recompute lm68_manual of the caches")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.refresh_manual:
        aflw = load_aflw_labels(args.data)
        for src in find_sources(args.data):
            path = cache_path_3ddfa(args.cache, src)
            if path.exists():
                labels = refresh_manual(path, aflw)
                n = 0 if labels.n_manual is None else int((labels.n_manual > 0).sum())
                log.info("%s: lm68_manual refreshed (%d faces with manual points)", path, n)
        return
    teacher = Teacher3DDFA(threads=args.threads)
    if args.compare:
        imgs, pts, yaw, _ = load_aflw_sample(args.data, args.compare)
        for key, v in compare_protocols(teacher, imgs, pts, yaw).items():
            log.info("ROI %-16s NME %% [0,30] %.2f (30,60] %.2f (60,90] %.2f mean %.2f", key, *v)
        lm, _ = teacher.predict_two_pass(imgs)
        for frac in (0.5, 0.75):
            for key, v in evaluate_override(lm, pts, fit_fraction=frac).items():
                log.info("override fit on %.0f%% %-20s held-out error %% %.3f", 100 * frac, key, v)
        return
    try:
        aflw = load_aflw_labels(args.data)
    except SourceError:
        aflw = None
    for src in find_sources(args.data):
        t0 = time.perf_counter()
        labels = label_3ddfa(src, args.cache, aflw=aflw, teacher=teacher, limit=args.limit, force=args.force)
        log.info("%s: %d images in %.0f s", src.name, len(labels), time.perf_counter() - t0)


if __name__ == "__main__":
    main()
