"""The frame-source interface shared by camera, video, image, folder and demo sources."""

from __future__ import annotations

import abc
from dataclasses import dataclass

from face3d_live.types import Frame


@dataclass
class SourceStats:
    """frames: delivered; corrupt: unreadable frames skipped; dropped: stale frames replaced (live sources)."""

    frames: int = 0
    corrupt: int = 0
    dropped: int = 0


class FrameSource(abc.ABC):
    """``read()`` returns the next Frame (RGB uint8) or None at the end. Usable as a context manager
    and as an iterator. ``live`` sources (camera, paced demo) deliver only the newest frame."""

    name: str = "source"
    live: bool = False
    still: bool = False  # independent still images (no temporal smoothing)

    def __init__(self) -> None:
        self.stats = SourceStats()

    @property
    def fps(self) -> float:
        return 30.0

    @property
    def frame_count(self) -> int | None:
        """Number of frames if known in advance (files), else None."""
        return None

    @abc.abstractmethod
    def read(self) -> Frame | None: ...

    def rewind(self) -> bool:
        """Start again from the first frame, if this source can (files); False: reopen it instead."""
        return False

    def close(self) -> None:  # noqa: B027 - sources without resources need no close
        """Release the source (idempotent)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self):
        while (frame := self.read()) is not None:
            yield frame
