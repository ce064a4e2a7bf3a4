"""Video file source (OpenCV/FFmpeg). Corrupt frames are skipped and counted, not fatal."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

# FFmpeg prints every decode error to stderr; we count and report corrupt frames ourselves.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402

from face3d_live.capture.base import FrameSource  # noqa: E402
from face3d_live.errors import SourceError  # noqa: E402
from face3d_live.types import Frame  # noqa: E402

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_FAILURES = 25  # beyond this the rest of the file is unreadable (truncated)
# FFmpeg decodes with one thread per core by default: right for one video, not for many workers each
# decoding several (16 workers × 4 videos × 16 threads on 16 cores). 0 = FFmpeg's choice.
_decode_threads = 0


def set_decode_threads(threads: int) -> None:
    """Decoder threads of every video opened from now on in this process (0: FFmpeg's default)."""
    global _decode_threads
    _decode_threads = max(0, int(threads))


class VideoFileSource(FrameSource):
    name = "video"

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"no such video file: {self.path}")
        if _decode_threads:
            self._cap = cv2.VideoCapture(
                str(self.path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, _decode_threads]
            )
        else:
            self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise SourceError(f"cannot read {self.path} as video (unreadable, truncated or not a video file)")
        self._fps = self._cap.get(cv2.CAP_PROP_FPS) or 30.0
        n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self._count = n if n > 0 else None
        self._index = 0  # index of the next frame in the file
        ok, first = self._cap.read()
        if not ok or first is None:
            raise SourceError(f"{self.path} opens but no frame can be decoded (corrupt or truncated video)")
        self._pending = first

    @property
    def fps(self) -> float:
        return float(self._fps)

    @property
    def frame_count(self) -> int | None:
        return self._count

    def read(self) -> Frame | None:
        if self._pending is not None:
            bgr, self._pending = self._pending, None
        else:
            bgr = self._next_decodable()
            if bgr is None:
                return None
        index = self._index
        self._index += 1
        self.stats.frames += 1
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return Frame(
            frame_id=index, image=rgb, t_capture_ns=time.perf_counter_ns(), timestamp_s=index / self._fps
        )

    def _next_decodable(self):
        """Next good frame; corrupt frames are skipped (their index stays used so timestamps stay right)."""
        failures = 0
        while self._count is None or self._index + failures < self._count:
            ok, bgr = self._cap.read()
            if ok and bgr is not None:
                if failures:
                    log.warning(
                        "%s: %d corrupt frame(s) before frame %d skipped",
                        self.path,
                        failures,
                        self._index + failures,
                    )
                self.stats.corrupt += failures
                self._index += failures
                return bgr
            failures += 1
            if self._count is None or failures > MAX_CONSECUTIVE_FAILURES:
                break
        if self._count is not None and self._index < self._count:
            # the container's frame count is an estimate (duration x fps); often an audio track is longer
            log.info(
                "%s: stream ends at frame %d; the container announced %d", self.path, self._index, self._count
            )
        return None

    def rewind(self) -> bool:
        """Seek back to frame 0 (a few ms; reopening the file costs 12-25 ms, a visible stall when looping
        at 120 frames/s)."""
        if self._cap is None or not self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            return False
        ok, first = self._cap.read()
        if not ok or first is None:
            return False
        self._pending, self._index = first, 0
        return True

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
