"""Run MediaPipe's .tflite models (the project's own copies, assets/mediapipe/) with ai-edge-litert (CPU)."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

from face3d_live.errors import ModelError

BUNDLED_DIR = Path(__file__).resolve().parents[1] / "assets" / "mediapipe"
# name -> sha256 (assets/mediapipe/README.md: provenance and license)
BUNDLED = {
    "face_detection_short_range.tflite": "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    "face_detection_full_range_sparse.tflite": "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    "face_landmark.tflite": "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
    "iris_landmark.tflite": "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
}


@functools.cache
def bundled_model_path(name: str) -> Path:
    """Path of one of the MediaPipe models shipped in the package, checked against its sha256."""
    if name not in BUNDLED:
        raise ModelError(f"no bundled model {name!r}; known: {', '.join(sorted(BUNDLED))}")
    path = BUNDLED_DIR / name
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise ModelError(f"bundled model {path} unreadable ({exc}); reinstall face3d-live") from None
    if digest != BUNDLED[name]:
        raise ModelError(f"bundled model {path} is corrupt (sha256 mismatch); reinstall face3d-live")
    return path


class TFLiteModel:
    """A single-input tflite model. ``run(x)`` returns the outputs in the model's output order."""

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            # one thread: these models take 1-2 ms, where XNNPACK's thread pool costs more than it saves
            # (390 vs 297 frames/s on 2 cores), and the pipeline's decode thread wants the other core
            self._interp = Interpreter(model_path=str(path), num_threads=num_threads or 1)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load tflite model {path}: {exc}") from exc
        self._interp.allocate_tensors()
        inp = self._interp.get_input_details()[0]
        self.input_index = inp["index"]
        self.input_shape = tuple(int(v) for v in inp["shape"])
        self._outputs = [o["index"] for o in self._interp.get_output_details()]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        self._interp.set_tensor(self.input_index, x)
        self._interp.invoke()
        return [self._interp.get_tensor(i) for i in self._outputs]
