"""Face model registry: name → factory. A face model has ``name``, ``input_size`` (square crop side),
``predict(crops uint8 (N, S, S, 3) RGB) -> ModelOutput`` (models/output.py) and ``close()``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from face3d_live.errors import ConfigError
from face3d_live.models.output import ModelOutput


class FaceModel(Protocol):
    name: str
    input_size: int

    def predict(self, crops: np.ndarray) -> ModelOutput: ...

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

# face3d-r50 beats its teachers (README, "face3d-r50"), so it is the default of the Python API.
DEFAULT_MODEL = "r50"
# Without a CUDA GPU r50 FP32 runs at a few frames/s; its INT8 rung on onnxruntime is real-time on two cores
# at the same accuracy, so `app`, `process` and `record` pick it there.
CPU_MODEL = "r50-int8"


def default_model() -> str:
    """The commands' model: r50 where a CUDA GPU runs it, else the INT8 rung (onnxruntime)."""
    from face3d_live.inference.cuda import cuda_status

    reason = cuda_status()
    if reason:
        import logging

        logging.getLogger(__name__).info("no CUDA GPU (%s): default model %s", reason, CPU_MODEL)
        return CPU_MODEL
    return DEFAULT_MODEL


def create_model(name: str, backend: str = "auto") -> FaceModel:
    try:
        factory = MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}") from None
    return factory(backend)
