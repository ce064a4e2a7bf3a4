"""The teacher: MediaPipe's face_landmark.tflite (468 points) run on our aligned crop."""

from __future__ import annotations

import numpy as np

from face3d_live.models.tflite import TFLiteModel, mediapipe_model_path


class MediaPipeMeshModel:
    """Face model: ``predict(crops uint8 (N, S, S, 3) RGB) -> (vertices (N, 468, 3) crop px, scores (N,))``.

    Vertices are in crop pixels of the model's own input size (``input_size`` = 192); z is relative
    depth in the same units, smaller = closer to the camera.
    """

    name = "mediapipe"
    input_size = 192

    def __init__(self, num_threads: int | None = None) -> None:
        self.model = TFLiteModel(mediapipe_model_path("face_landmark/face_landmark.tflite"), num_threads)

    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = crops.shape[0]
        verts = np.empty((n, 468, 3), np.float32)
        scores = np.empty((n,), np.float32)
        for i in range(n):  # the tflite model has a fixed batch of 1
            x = crops[i : i + 1].astype(np.float32) * (1.0 / 255.0)
            landmarks, flag = self.model.run(x)
            verts[i] = landmarks.reshape(468, 3)
            scores[i] = 1.0 / (1.0 + np.exp(-float(flag.ravel()[0])))
        return verts, scores

    def close(self) -> None:
        pass
