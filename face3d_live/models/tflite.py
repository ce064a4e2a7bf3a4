"""Run the .tflite models shipped inside the mediapipe 0.10.21 wheel with ai-edge-litert (CPU)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from face3d_live.errors import ModelError


def mediapipe_model_path(relative: str) -> Path:
    """Path of a model file inside the installed mediapipe package, e.g. 'face_landmark/face_landmark.tflite'."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("mediapipe is not installed: pip install 'mediapipe==0.10.21'")
    path = Path(list(spec.submodule_search_locations)[0]) / "modules" / relative
    if not path.is_file():
        raise ModelError(
            f"{relative} not found in mediapipe ({path.parent}); only mediapipe 0.10.21 ships the .tflite "
            "models: pip install 'mediapipe==0.10.21'"
        )
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
