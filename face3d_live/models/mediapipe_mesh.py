"""The teacher: MediaPipe's face_landmark.tflite (468 points) run on our aligned crop, plus the iris from
iris_landmark.tflite on eye crops cut from that mesh (copies ship in assets/mediapipe/)."""

from __future__ import annotations

import numpy as np

from face3d_live.models.output import ModelOutput
from face3d_live.models.tflite import TFLiteModel, bundled_model_path


class MediaPipeMeshModel:
    """Face model: ``predict(crops uint8 (N, S, S, 3) RGB) -> ModelOutput`` (crop px of ``input_size`` = 192;
    z is relative depth in the same units, smaller = closer to the camera). It has no 68-point output: the
    Reconstructor blends those from the mesh. ``with_iris=False`` skips the iris model (teacher labelling)."""

    name = "mediapipe"
    input_size = 192

    def __init__(self, num_threads: int | None = None, with_iris: bool = True) -> None:
        self.model = TFLiteModel(bundled_model_path("face_landmark.tflite"), num_threads)
        self.iris_model = None
        if with_iris:
            from face3d_live.models.iris import IrisModel

            self.iris_model = IrisModel(num_threads=num_threads)

    def predict(self, crops: np.ndarray) -> ModelOutput:
        n = crops.shape[0]
        verts = np.empty((n, 468, 3), np.float32)
        iris = np.zeros((n, 10, 3), np.float32)
        scores = np.empty((n,), np.float32)
        for i in range(n):  # the tflite model has a fixed batch of 1
            x = crops[i : i + 1].astype(np.float32) * (1.0 / 255.0)
            landmarks, flag = self.model.run(x)
            verts[i] = landmarks.reshape(468, 3)
            scores[i] = 1.0 / (1.0 + np.exp(-float(flag.ravel()[0])))
            if self.iris_model is not None:
                iris[i] = self.iris_model.predict(crops[i], verts[i])
        return ModelOutput(vertices=verts, iris=iris, landmarks68=None, scores=scores)

    def close(self) -> None:
        pass
