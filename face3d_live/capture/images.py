"""Still-image sources: one image file, or a folder of images (sorted by name)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np

from face3d_live.capture.base import FrameSource
from face3d_live.errors import SourceError
from face3d_live.types import Frame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8; SourceError with the reason if it is missing or not an image."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"no such image file: {path}")
    data = np.fromfile(str(path), np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise SourceError(f"{path} is not a readable image (corrupt or not an image file)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class ImageFileSource(FrameSource):
    name = "image"
    still = True

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._image: np.ndarray | None = read_image(self.path)  # fail at construction, not mid-run

    @property
    def frame_count(self) -> int:
        return 1

    def read(self) -> Frame | None:
        if self._image is None:
            return None
        img, self._image = self._image, None
        self.stats.frames += 1
        return Frame(frame_id=0, image=img, t_capture_ns=time.perf_counter_ns(), timestamp_s=0.0)


class ImageFolderSource(FrameSource):
    """Every image in a folder, in name order. Unreadable files are skipped and counted as corrupt."""

    name = "folder"
    still = True

    def __init__(self, folder: str | Path) -> None:
        super().__init__()
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SourceError(f"no such folder: {self.folder}")
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {self.folder}")
        self._next = 0

    @property
    def frame_count(self) -> int:
        return len(self.files)

    def read(self) -> Frame | None:
        while self._next < len(self.files):
            index = self._next
            self._next += 1
            try:
                img = read_image(self.files[index])
            except SourceError as exc:
                self.stats.corrupt += 1
                log.warning("skipped: %s", exc)
                continue
            self.stats.frames += 1
            return Frame(
                frame_id=index, image=img, t_capture_ns=time.perf_counter_ns(), timestamp_s=index / self.fps
            )
        return None
