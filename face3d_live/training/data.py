"""Readers for the shared face data (../shared/data): AFLW crops with manual landmarks, expressions set.

Nothing from there is ever copied into the repository; callers pass the data folder.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from face3d_live.errors import SourceError


def default_data_dir() -> Path:
    """$FACE3D_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("FACE3D_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass(frozen=True)
class AflwLabels:
    """AFLW labels, row i ↔ ``names[i]``. pts21 (N, 2, 21) original-image px (-1 = missing),
    roi (N, 4) crop box [sx, sy, ex, ey] in original px, yaw (N,) degrees."""

    names: list[str]
    pts21: np.ndarray
    roi: np.ndarray
    yaw: np.ndarray

    def points_in_crop(self, i: int, crop_size: int = 120) -> np.ndarray:
        """(21, 2) manual landmarks in crop pixels; NaN where not annotated."""
        sx, sy, ex, ey = self.roi[i]
        pts = self.pts21[i].T.astype(np.float64)
        out = np.empty_like(pts)
        out[:, 0] = (pts[:, 0] - sx) / (ex - sx) * crop_size
        out[:, 1] = (pts[:, 1] - sy) / (ey - sy) * crop_size
        out[(pts < 0).any(axis=1)] = np.nan
        return out


def load_aflw_labels(data_dir: Path) -> AflwLabels:
    faces = Path(data_dir) / "faces"
    try:
        names = (faces / "aflw_list.txt").read_text().split()
        return AflwLabels(
            names=names,
            pts21=np.load(faces / "aflw_pts21.npy"),
            roi=np.load(faces / "aflw_roi_box.npy"),
            yaw=np.load(faces / "aflw_yaw.npy"),
        )
    except OSError as exc:
        raise SourceError(f"AFLW labels not found under {faces}: {exc}") from exc


def iter_tar_images(tar_path: Path, flags: int = cv2.IMREAD_COLOR) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (file name without folder, RGB uint8 image) for every JPEG/PNG in one tar shard."""
    with tarfile.open(tar_path) as tar:
        for member in tar:
            if not member.isfile() or not member.name.lower().endswith((".jpg", ".jpeg", ".png")):
                continue
            buf = np.frombuffer(tar.extractfile(member).read(), np.uint8)
            img = cv2.imdecode(buf, flags)
            if img is None:
                continue
            yield os.path.basename(member.name), cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def aflw_shards(data_dir: Path) -> list[Path]:
    return sorted((Path(data_dir) / "faces").glob("aflw_crops-*.tar"))
