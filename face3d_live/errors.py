"""Project exceptions. Each message says what went wrong and how to fix it (one line)."""

from __future__ import annotations


class Face3DError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""


class SourceError(Face3DError):
    """An input source cannot be opened or read (missing camera, unreadable file, not an image)."""


class CaptureError(SourceError):
    """A camera could not be opened or stopped delivering frames."""


class ModelError(Face3DError):
    """A model or its weights file is missing, corrupt or of the wrong kind."""


class BackendUnavailable(Face3DError):
    """An inference backend cannot run on this machine (missing package, no GPU, unsupported GPU)."""


class EngineBuildError(Face3DError):
    """A TensorRT engine could not be built or loaded."""


class ConfigError(Face3DError):
    """An option has an unknown name or an invalid value."""


class RecordError(Face3DError):
    """A recording cannot be written or recovered (disk full, unwritable path, damaged journal)."""


# optional extras (pyproject.toml) by the top-level module they provide
EXTRAS = {
    "torch": ("torch", "training, exports and the torch backend"),
    "torch_pruning": ("torch", "channel pruning"),
    "mediapipe": ("teacher", "the MediaPipe teacher (Python 3.10-3.12 only)"),
    "tensorrt_rtx": ("trt", "the TensorRT backend"),
    "cuda": ("trt", "the CUDA runtime path"),
    "ray": ("ray", "Ray scale-out"),
    "pyvirtualcam": ("vcam", "the virtual camera"),
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """One line saying which extra provides a missing optional module, or None if it is not one of ours."""
    top = (exc.name or "").split(".")[0]
    if top not in EXTRAS:
        return None
    extra, what = EXTRAS[top]
    return f"{top} is not installed (needed for {what}): pip install 'face3d-live[{extra}]'"
