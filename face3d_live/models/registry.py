"""Face model registry: name → factory. A face model has ``name``, ``input_size`` (square crop side),
``predict(crops uint8 (N, S, S, 3) RGB) -> (vertices (N, 468, 3) in crop px, scores (N,))`` and ``close()``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from face3d_live.errors import ConfigError


class FaceModel(Protocol):
    name: str
    input_size: int

    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def close(self) -> None: ...


def _mediapipe(backend: str) -> FaceModel:
    if backend not in ("auto", "litert", "cpu"):
        raise ConfigError(f"model 'mediapipe' runs on the tflite CPU runtime only, not backend {backend!r}")
    from face3d_live.models.mediapipe_mesh import MediaPipeMeshModel

    return MediaPipeMeshModel()


def _r50(backend: str) -> FaceModel:
    from face3d_live.models.r50_face import R50FaceModel

    return R50FaceModel(backend)  # backend: "auto", "torch", "onnxruntime", "tensorrt"


def _rung(name: str) -> Callable[[str], FaceModel]:
    def factory(backend: str) -> FaceModel:
        from face3d_live.training.rungs import create_rung  # lightweighting ladder (pruned / INT8 r50)

        return create_rung(name, backend)

    return factory


MODELS: dict[str, Callable[[str], FaceModel]] = {
    "mediapipe": _mediapipe,
    "r50": _r50,
    **{name: _rung(name) for name in ("r50-lite", "r50-lite-fp16", "r50-int8")},
}

# face3d-r50 beats its teacher in every AFLW yaw bin (README, "face3d-r50"), so it is the default.
DEFAULT_MODEL = "r50"
# On a CPU-only machine r50 runs at a few frames/s; the live app then uses the teacher, which is real-time.
LIVE_CPU_MODEL = "mediapipe"


def default_live_model() -> str:
    """The live app's model: r50 where a CUDA GPU runs it in real time, else the (real-time on CPU) teacher."""
    from face3d_live.inference.cuda import cuda_status

    return DEFAULT_MODEL if not cuda_status() else LIVE_CPU_MODEL


def create_model(name: str, backend: str = "auto") -> FaceModel:
    try:
        factory = MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}") from None
    return factory(backend)
