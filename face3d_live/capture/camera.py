"""Camera source: a capture thread grabs frames as fast as the camera delivers and keeps only the
newest one (LatestSlot), so a slow consumer never processes stale frames."""

from __future__ import annotations

import logging
import threading
import time

import cv2

from face3d_live.capture.base import FrameSource
from face3d_live.errors import CaptureError
from face3d_live.pipeline.channels import Closed, LatestSlot
from face3d_live.types import Frame

log = logging.getLogger(__name__)


class CameraSource(FrameSource):
    name = "camera"
    live = True

    def __init__(
        self, index: int = 0, width: int | None = None, height: int | None = None, read_timeout: float = 2.0
    ) -> None:
        super().__init__()
        self.index = index
        self.read_timeout = read_timeout
        level = cv2.getLogLevel()
        cv2.setLogLevel(0)  # silent: OpenCV's own open errors would repeat ours over several lines
        try:
            self._cap = cv2.VideoCapture(index)
        finally:
            cv2.setLogLevel(level)
        if not self._cap.isOpened():
            self._cap.release()
            raise CaptureError(
                f"no camera at index {index}: use --source FILE (video, image or folder) or --source demo"
            )
        if width and height:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self._fps = self._cap.get(cv2.CAP_PROP_FPS) or 30.0
        self._slot: LatestSlot[Frame] = LatestSlot()
        self._stop = threading.Event()
        self._error: str | None = None
        self._t0 = time.perf_counter_ns()
        self._thread = threading.Thread(target=self._grab_loop, name=f"camera-{index}", daemon=True)
        self._thread.start()

    @property
    def fps(self) -> float:
        return float(self._fps)

    def _grab_loop(self) -> None:
        frame_id = 0
        failures = 0
        while not self._stop.is_set():
            ok, bgr = self._cap.read()  # blocks until the camera delivers
            t_capture = time.perf_counter_ns()
            if not ok or bgr is None:
                failures += 1
                if failures > 30:
                    self._error = f"camera {self.index} stopped delivering frames"
                    break
                continue
            failures = 0
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            self._slot.put(Frame(frame_id, rgb, t_capture, (t_capture - self._t0) / 1e9))
            frame_id += 1
        self._slot.close()

    def read(self) -> Frame | None:
        try:
            frame = self._slot.get(timeout=self.read_timeout)
        except Closed:
            if self._error:
                raise CaptureError(self._error) from None
            return None
        if frame is None:
            raise CaptureError(f"camera {self.index} delivered no frame within {self.read_timeout:.1f} s")
        self.stats.frames += 1
        self.stats.dropped = self._slot.dropped
        return frame

    def close(self) -> None:
        if self._cap is None:
            return
        self._stop.set()
        self._thread.join(timeout=1.0)
        self._cap.release()
        self._cap = None
