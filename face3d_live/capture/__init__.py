"""Frame sources: camera, video file, image file, folder of images, built-in demo.

``open_source(spec)``: "demo", a camera index ("0"), or a path (folder, image or video file).
"""

from __future__ import annotations

from pathlib import Path

from face3d_live.capture.base import FrameSource, SourceStats
from face3d_live.errors import SourceError

__all__ = ["FrameSource", "SourceStats", "open_source"]


def open_source(
    spec: str | int, *, realtime_demo: bool = False, demo_frames: int | None = None
) -> FrameSource:
    """Open a source from a command-line spec; SourceError (one line, with the fix) if it cannot be opened."""
    text = str(spec).strip()
    if text == "demo":
        from face3d_live.capture.demo import DemoSource

        return DemoSource(num_frames=demo_frames, realtime=realtime_demo)
    if text.isdigit():
        from face3d_live.capture.camera import CameraSource

        return CameraSource(int(text))
    path = Path(text).expanduser()
    if not path.exists():
        raise SourceError(
            f"no such file or folder: {path} (give a video, an image, a folder, a camera index or 'demo')"
        )
    if path.is_dir():
        from face3d_live.capture.images import ImageFolderSource

        return ImageFolderSource(path)
    from face3d_live.capture.images import IMAGE_SUFFIXES, ImageFileSource

    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFileSource(path)
    from face3d_live.capture.video import VideoFileSource

    return VideoFileSource(path)
