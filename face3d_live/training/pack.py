"""Training data in parts small enough for the accelerator machine's upload (≤ ~60 MB each).

Each part is one .npz: the images as WebP (canvas px, RGB), the 478 teacher points as uint8 steps of each
mesh's own range (max error range/510 ≈ 0.2 px on a 120 px crop, far below teacher noise), the 68-point
labels as float16, and the small per-sample arrays. ``load_parts`` rebuilds one ``TrainData``; nothing else
(no mediapipe, no teacher models, no tar shards) is needed on that machine.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from face3d_live.errors import SourceError
from face3d_live.training.dataset import TrainData

log = logging.getLogger(__name__)

SMALL_FIELDS = ("yaw", "teacher_ok", "mesh_crop", "box_crop", "held_out", "shape")


def _quantise(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lo = v.min(1)
    step = np.maximum(v.max(1) - lo, 1e-6) / 255.0
    return np.round((v - lo[:, None]) / step[:, None]).astype(np.uint8), lo, step


def pack_parts(
    data: TrainData,
    out_dir: Path,
    part_mb: float = 58.0,
    quality: int = 82,
    seed: int = 0,
    prefix: str = "part",
) -> list[Path]:
    """Write every sample of ``data`` (shuffled, so each part is a fair sample) into parts of ≤ part_mb,
    ``out_dir/{prefix}N.npz``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed).permutation(len(data))
    params = [cv2.IMWRITE_WEBP_QUALITY, quality]

    def encode(i: int) -> bytes:
        ok, buf = cv2.imencode(".webp", cv2.cvtColor(data.images[i], cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise SourceError(f"sample {data.names[i]} does not encode as WebP")
        return buf.tobytes()

    with ThreadPoolExecutor(2) as pool:
        blobs = list(tqdm(pool.map(encode, order), total=len(order), desc="pack", unit="img"))
    label_bytes = 478 * 3 + 68 * 3 * 2 + 21 * 2 * 2 + 64  # per sample, beside its image
    parts, start, size = [], 0, 0.0
    for k, b in enumerate(blobs):
        size += len(b) + label_bytes
        if size > part_mb * 1e6 * 0.97 and k > start:
            parts.append((start, k))
            start, size = k, len(b) + label_bytes
    parts.append((start, len(blobs)))
    paths = []
    for p, (a, b) in enumerate(parts):
        idx = order[a:b]
        q, lo, step = _quantise(data.verts[idx])
        path = out_dir / f"{prefix}{p}.npz"
        np.savez(
            path,
            blob=np.frombuffer(b"".join(blobs[a:b]), np.uint8),
            offsets=np.cumsum([0] + [len(x) for x in blobs[a:b]]).astype(np.int64),
            canvas=data.images.shape[1],
            q=q,
            lo=lo,
            step=step,
            lm68=data.lm68[idx].astype(np.float16),
            points=data.points[idx].astype(np.float16),
            names=data.names[idx],
            **{f: getattr(data, f)[idx] for f in SMALL_FIELDS},
        )
        paths.append(path)
        log.info("%s: %d samples, %.1f MB", path, len(idx), path.stat().st_size / 1e6)
    return paths


def decode_images(z, path: Path) -> np.ndarray:
    """The (N, canvas, canvas, 3) RGB images of a pack (``blob`` of encoded images cut at ``offsets``)."""
    blob, offsets, canvas = z["blob"], z["offsets"], int(z["canvas"])
    images = np.zeros((len(offsets) - 1, canvas, canvas, 3), np.uint8)
    for i in range(len(images)):
        img = cv2.imdecode(blob[offsets[i] : offsets[i + 1]], cv2.IMREAD_COLOR)
        if img is None:
            raise SourceError(f"{path}: image {i} does not decode")
        images[i] = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return images


def load_part(path: Path) -> TrainData:
    try:
        z = np.load(path)
    except (OSError, ValueError) as exc:
        raise SourceError(f"{path}: not a training data part ({exc})") from None
    with z:
        images = decode_images(z, path)
        verts = z["lo"][:, None] + z["q"].astype(np.float32) * z["step"][:, None]
        return TrainData(
            images=images,
            verts=verts.astype(np.float32),
            lm68=z["lm68"].astype(np.float32),
            points=z["points"].astype(np.float32),
            names=z["names"],
            **{f: z[f] for f in SMALL_FIELDS},
        )


def load_parts(paths: list[Path]) -> TrainData:
    if not paths:
        raise SourceError("no training data parts given")
    with ThreadPoolExecutor(min(len(paths), 8)) as pool:
        return TrainData.concat(list(pool.map(load_part, paths)))


def load_any(paths: list[Path]) -> TrainData:
    """Parts from ``pack_parts``, or a single image-only pack from ``distill.pack_data`` (ladder runs)."""
    with np.load(paths[0]) as z:
        is_part = "q" in z.files
    if is_part:
        return load_parts(paths)
    from face3d_live.training.distill import load_packed

    if len(paths) != 1:
        raise SourceError("a distill.pack_data pack is one file; give it alone")
    return load_packed(paths[0])
