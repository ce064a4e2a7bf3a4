"""model="r50": the FaceModel adapter over the inference backends.

``predict(crops uint8 (N, 224, 224, 3) RGB)`` -> backend (uint8 NHWC input: the conversion to float
NCHW in [0, 1] runs inside the backend's graph) -> ``ModelOutput``: vertices (N, 468, 3), iris (N, 10, 3)
and 68 points (N, 68, 3) in crop pixels, presence scores (N,) (sigmoid of the logit).

Weights: ``face3d_live/models/weights/face3d-r50.safetensors`` (or $FACE3D_R50_WEIGHTS), FP16
safetensors with a sha256 check (models/weights.py).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from face3d_live.errors import ConfigError, ModelError
from face3d_live.inference.spec import ModelSpec
from face3d_live.models.layout import check_head, decode
from face3d_live.models.output import ModelOutput
from face3d_live.models.weights import TRAIN_HINT, default_r50_weights, load_into, read_metadata

if TYPE_CHECKING:
    from face3d_live.models.r50 import FaceR50

log = logging.getLogger(__name__)

ARCH = "FaceR50"
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")


def build_r50(weights: str | Path | None = None) -> FaceR50:
    """FaceR50 with its trained weights (architecture arguments come from the file)."""
    from face3d_live.models.r50 import FaceR50

    path = Path(weights) if weights else default_r50_weights()
    config = json.loads(read_metadata(path).get("config") or "{}")
    try:
        model = FaceR50(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    except TypeError as exc:
        raise ModelError(f"{path}: architecture arguments {config} do not fit FaceR50 ({exc})") from None
    check_head(model_head_rows(path), path)  # a v1 file (no iris / 68 heads) gets a clear error
    load_into(model, path, arch=ARCH)  # checks arch, sha256, names and shapes
    return model.eval()


def model_head_rows(path: str | Path) -> int:
    """Output rows of the file's head (``head.weight``), read from the safetensors header only."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        return int(f.get_slice("head.weight").get_shape()[0])


def check_crops(crops: np.ndarray, size: int) -> None:
    if crops.ndim != 4 or crops.shape[1:] != (size, size, 3) or crops.dtype != np.uint8:
        raise ValueError(f"expected (N, {size}, {size}, 3) uint8 RGB crops, got {crops.shape} {crops.dtype}")


def save_r50(model: FaceR50, path: str | Path, **metadata: str) -> str:
    """Save a FaceR50 as FP16 safetensors with its architecture arguments; returns the sha256."""
    from face3d_live.models.weights import save_weights

    config = {"width": model.stem[0].out_channels, "blocks": [len(stage) for stage in model.layers]}
    return save_weights(path, model.state_dict(), arch=ARCH, config=config, metadata=metadata)


def calibration_crops(n: int = 64, size: int = 224, seed: int = 0) -> np.ndarray:
    """(n, 3, size, size) float32 face crops in [0, 1] for INT8 calibration.

    Real AFLW crops from the shared data when present (varied pose and lighting), else jittered crops
    of the demo astronaut face (enough for shapes, a poor range estimate: logged).
    """
    import cv2

    from face3d_live.training.data import aflw_shards, default_data_dir, iter_tar_images

    rng = np.random.default_rng(seed)
    crops: list[np.ndarray] = []
    shards = aflw_shards(default_data_dir())
    if shards:
        for i, (_, img) in enumerate(iter_tar_images(shards[0])):
            if i % 7 == 0:  # spread over the shard
                crops.append(cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR))
            if len(crops) == n:
                break
    if len(crops) < n:
        from face3d_live.capture.demo import demo_photo
        from face3d_live.geometry.crop import CropTransform

        log.warning(
            "INT8 calibration on astronaut crops (shared face data not found): ranges are approximate"
        )
        img = demo_photo()
        while len(crops) < n:
            c = (215 + rng.normal(0, 8), 120 + rng.normal(0, 8))
            crops.append(CropTransform(c, 190 * rng.uniform(0.85, 1.2), rng.normal(0, 0.2), size).warp(img))
    return np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def r50_spec(weights: str | Path | None = None) -> ModelSpec:
    """ModelSpec for the trained r50 (lazy: the file is checked now, loaded on first use)."""
    path = Path(weights) if weights else default_r50_weights()
    if not path.is_file():
        raise ModelError(f"r50 weights {path} not found; {TRAIN_HINT}")
    return ModelSpec(name="r50", module=lambda: build_r50(path), calibration=calibration_crops, weights=path)


class R50FaceModel:
    """FaceModel over any backend: ``predict(crops uint8 (N, 224, 224, 3) RGB) -> ModelOutput``."""

    name = "r50"
    input_size = 224

    def __init__(
        self,
        backend: str = "auto",
        *,
        spec: ModelSpec | None = None,
        precision: str | None = None,
        device: str | None = None,
    ) -> None:
        from face3d_live.inference import create_backend

        if backend not in BACKENDS:
            raise ConfigError(f"model 'r50' runs on backend {', '.join(BACKENDS)}, not {backend!r}")
        # uint8 NHWC in: the crops go to the backend as they are; scaling and layout happen in its graph
        self.backend = create_backend(
            backend, model=spec or r50_spec(), precision=precision, device=device, input_format="uint8"
        )

    @property
    def steady_batch(self) -> int:
        """The smallest batch whose every crop gets the answer it gets in any larger batch: onnxruntime runs
        a batch of one through other kernels (r50-int8: 4e-5 px apart), which a photo's second pass, cut
        from the first one's mesh, turns into 0.2 px (Reconstructor pads the first pass to this)."""
        return 2 if self.backend.name == "onnxruntime" else 1

    def predict(self, crops: np.ndarray) -> ModelOutput:
        check_crops(crops, self.input_size)
        return decode(self.backend.infer_sync(crops), self.input_size)

    def close(self) -> None:
        self.backend.deactivate()
