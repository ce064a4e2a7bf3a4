"""Built-in demo source: NASA's astronaut portrait (assets/astronaut.jpg) moved along a smooth head-motion path.

Needs no download or camera. ``realtime=True`` paces frames at ``fps`` like a camera would.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import cv2
import numpy as np

from face3d_live.capture.base import FrameSource
from face3d_live.errors import SourceError
from face3d_live.types import Frame

DEMO_PHOTO = Path(__file__).resolve().parents[1] / "assets" / "astronaut.jpg"


@functools.cache
def demo_photo() -> np.ndarray:
    """The demo face: NASA's portrait of Eileen Collins (public domain; the photo scikit-image ships as
    ``data.astronaut()``), 512x512 RGB, kept in the package so the demo needs no scikit-image."""
    image = cv2.imread(str(DEMO_PHOTO), cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"demo photo {DEMO_PHOTO} unreadable; reinstall face3d-live")
    image = np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    image.setflags(write=False)  # shared by every caller
    return image


class DemoSource(FrameSource):
    name = "demo"

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        num_frames: int | None = None,
        realtime: bool = False,
    ) -> None:
        super().__init__()
        self._photo = demo_photo()  # 512x512 RGB, face near (225, 125)
        self.size = (width, height)
        self._fps = fps
        self._count = num_frames
        self.live = realtime
        self._index = 0
        self._t0 = time.perf_counter()

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def frame_count(self) -> int | None:
        return self._count

    def transform(self, t: float) -> np.ndarray:
        """2x3 photo → frame similarity at time t: sway, nod-like bob, zoom and in-plane roll."""
        w, h = self.size
        face = np.array([225.0, 130.0])
        angle = 12.0 * np.sin(2 * np.pi * 0.21 * t)
        scale = 1.6 * (1.0 + 0.12 * np.sin(2 * np.pi * 0.13 * t + 1.0))
        m = cv2.getRotationMatrix2D((float(face[0]), float(face[1])), angle, scale)
        target = np.array(
            [w / 2 + 0.15 * w * np.sin(2 * np.pi * 0.17 * t), h / 2 + 0.06 * h * np.sin(2 * np.pi * 0.29 * t)]
        )
        m[:, 2] += target - face
        return m

    def read(self) -> Frame | None:
        if self._count is not None and self._index >= self._count:
            return None
        t = self._index / self._fps
        if self.live:  # emulate a camera's frame clock
            delay = self._t0 + t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        img = cv2.warpAffine(
            self._photo, self.transform(t), self.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        frame = Frame(frame_id=self._index, image=img, t_capture_ns=time.perf_counter_ns(), timestamp_s=t)
        self._index += 1
        self.stats.frames += 1
        return frame
