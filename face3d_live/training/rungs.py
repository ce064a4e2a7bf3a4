"""The ladder's rungs as face models (``create_model("r50-lite")`` / ``Reconstructor(model="r50-int8")``).

| model           | file (models/weights/)          | what runs                                                |
|-----------------|---------------------------------|----------------------------------------------------------|
| r50-lite        | face3d-r50-lite.safetensors     | pruned + distilled FaceR50Slim; FP32 on CPU, FP16 on GPU |
| r50-lite-fp16   | (same file)                     | the same, forced FP16 (torch CUDA / TensorRT)            |
| r50-int8        | face3d-r50-int8.safetensors     | QAT INT8 Q/DQ ONNX: onnxruntime CPU or TensorRT          |

The ONNX files are written from the rung files on first use without torch (models/onnx_build.py) and
cached (``engines/onnx``), keyed by the file's sha256: ``trt`` (symmetric INT8) for TensorRT, ``ort`` (same grid, UINT8 activations)
for onnxruntime.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from face3d_live.errors import BackendUnavailable, ConfigError, EngineBuildError, ModelError
from face3d_live.models.layout import decode
from face3d_live.models.output import ModelOutput
from face3d_live.models.r50_face import BACKENDS, R50FaceModel, calibration_crops, check_crops
from face3d_live.models.weights import WEIGHTS_DIR, read_metadata

log = logging.getLogger(__name__)

LITE_FILE = WEIGHTS_DIR / "face3d-r50-lite.safetensors"
INT8_FILE = WEIGHTS_DIR / "face3d-r50-int8.safetensors"
LITE_ENV, INT8_ENV = "FACE3D_R50_LITE_WEIGHTS", "FACE3D_R50_INT8_WEIGHTS"
HINT = "make it with `face3d-live optimize` (see README), or point {env} at a rung file"
RUNGS = ("r50-lite", "r50-lite-fp16", "r50-int8")


def lite_weights() -> Path:
    return Path(os.environ.get(LITE_ENV) or LITE_FILE)


def int8_weights() -> Path:
    return Path(os.environ.get(INT8_ENV) or INT8_FILE)


def _check(path: Path, env: str) -> Path:
    if not path.is_file():
        raise ModelError(f"rung weights {path} not found; {HINT.format(env=env)}")
    return path


def lite_spec(path: str | Path | None = None, name: str = "r50-lite"):
    from face3d_live.inference.spec import ModelSpec

    def module():
        from face3d_live.training.slim import load_slim  # torch: only for the torch backend

        return load_slim(path)

    path = _check(Path(path) if path else lite_weights(), LITE_ENV)
    return ModelSpec(name=name, module=module, calibration=calibration_crops, weights=path)


def int8_onnx(
    path: str | Path | None = None, flavour: str = "ort", cache_dir: str | Path | None = None
) -> Path:
    """The INT8 Q/DQ ONNX of a rung file: ``flavour`` "trt" (symmetric) or "ort" (UINT8 activations)."""
    from face3d_live.inference.spec import default_cache_dir
    from face3d_live.models.onnx_build import ort_flavour, write_onnx

    if flavour not in ("trt", "ort"):
        raise ConfigError(f"INT8 ONNX flavour must be 'trt' or 'ort', got {flavour!r}")
    path = _check(Path(path) if path else int8_weights(), INT8_ENV)
    digest = read_metadata(path)["sha256"][:16]
    folder = Path(cache_dir or default_cache_dir()) / "onnx"
    trt_path = folder / f"r50-int8-{digest}-trt.onnx"
    if not trt_path.is_file():
        log.info("exporting %s to INT8 Q/DQ ONNX -> %s", path.name, trt_path)
        write_onnx(path, trt_path)  # torch-free: the same graph as qat.export_qdq (tests/test_onnx_build.py)
    if flavour == "trt":
        return trt_path
    ort_path = folder / f"r50-int8-{digest}-ort2.onnx"  # ort2: post-ReLU range kept (qat.ort_flavour)
    if not ort_path.is_file():
        tmp = ort_path.with_suffix(".partial.onnx")
        ort_flavour(trt_path, tmp)
        tmp.replace(ort_path)
    return ort_path


class Int8FaceModel(R50FaceModel):
    """model="r50-int8": the QAT INT8 network on onnxruntime (CPU, real INT8 kernels) or TensorRT."""

    name = "r50-int8"

    def __init__(
        self, backend: str = "auto", *, weights: str | Path | None = None, device: str | None = None
    ) -> None:
        from face3d_live.inference import create_backend
        from face3d_live.inference.cuda import cuda_status
        from face3d_live.inference.spec import ModelSpec

        if backend not in BACKENDS:
            raise ConfigError(f"model 'r50-int8' runs on backend {', '.join(BACKENDS)}, not {backend!r}")
        if backend == "torch":
            raise ConfigError(
                "model 'r50-int8' runs on onnxruntime or tensorrt (torch has no INT8 path here); use r50-lite"
            )
        order = (
            [backend]
            if backend != "auto"
            else (["tensorrt", "onnxruntime"] if not cuda_status() else ["onnxruntime"])
        )
        errors = []
        for name in order:
            flavour = "trt" if name == "tensorrt" else "ort"
            spec = ModelSpec(name=f"r50-int8-{flavour}", onnx_files={"int8": int8_onnx(weights, flavour)})
            try:
                self.backend = create_backend(
                    name, model=spec, precision="int8", device=device, input_format="float32"
                )
                return
            except (BackendUnavailable, EngineBuildError) as exc:
                if backend != "auto":
                    raise
                errors.append(f"{name}: {exc}")
        raise BackendUnavailable("r50-int8: no INT8 backend works here: " + "; ".join(errors))

    def predict(self, crops: np.ndarray) -> ModelOutput:
        check_crops(crops, self.input_size)
        x = crops.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1.0 / 255.0)
        return decode(self.backend.infer_sync(x), self.input_size)


def create_rung(name: str, backend: str = "auto"):
    """The FaceModel of a ladder rung (see module docstring)."""
    if name == "r50-int8":
        return Int8FaceModel(backend)
    if name not in RUNGS:
        raise ConfigError(f"unknown ladder rung {name!r}; choose one of: {', '.join(RUNGS)}")
    precision = "fp16" if name == "r50-lite-fp16" else None
    if precision == "fp16" and backend == "onnxruntime":
        raise ConfigError(
            "model 'r50-lite-fp16' needs a GPU backend (torch or tensorrt); use r50-lite on the CPU"
        )
    model = R50FaceModel(backend, spec=lite_spec(name=name), precision=precision)
    model.name = name
    return model
