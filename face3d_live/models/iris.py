"""Iris points from MediaPipe's iris_landmark.tflite (a copy ships in assets/mediapipe/), run on eye
crops cut from a 468-point face mesh the way MediaPipe's iris graph cuts them.

Per eye (``iris_landmark_landmarks_to_roi.pbtxt`` / ``iris_landmark_cpu.pbtxt``): the ROI is centred
between the two eye corners, rotated so the corner-to-corner line is level, side = 2.3 × the longer side of
the corners' axis-aligned box (``square_long``), warped to 64 × 64 with edge replication, RGB in [0, 1].
The model was trained on the image-left eye (the subject's right eye, corners 33 → 133); the other eye
(362 → 263) is mirrored before the model and its x mirrored back after. Outputs: 71 eye-contour points and
5 iris points (centre, then 4 on the rim), x/y/z in the 64 px input.

Output order is MediaPipe's 478-point mesh's (``Face.iris``): 468-472 the subject's right eye, 473-477
the left; each eye centre first, then the rim at image +x, -y, -x, +y (the mirrored eye's rim comes out
with ±x swapped and is re-ordered).

Depth: the model's z is relative to its own crop and on another scale (its iris centre sits ~2.7 eye
widths in front of its contour's mean, whose 71 points include the brow), and agrees poorly with the
Face Landmarker's iris depth (r 0.24 on 200 AFLW eyes). The landmarker puts the iris at the eye ring's
depth (centre − ring mean = −0.02 ± 0.20 eye widths, rim − centre 0.00), so the iris z here is the mesh's
eye-ring mean depth for all five points of that eye.
"""

from __future__ import annotations

import numpy as np

from face3d_live.geometry.crop import CropTransform
from face3d_live.models.tflite import TFLiteModel, bundled_model_path

INPUT_SIZE = 64
ROI_SCALE = 2.3
# (start corner, end corner, mirrored) per eye, in Face.iris order: subject's right eye, then left
EYES = ((33, 133, False), (362, 263, True))
# the mesh's eye rings (upper + lower lid contour) for the depth offset
EYE_RINGS = (
    (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
    (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466),
)
_RING_INDEX = [np.array(ring) for ring in EYE_RINGS]
_RIM_UNMIRROR = np.array([0, 3, 2, 1, 4])  # after mirroring back, the +x and -x rim points trade places


def eye_roi(vertices: np.ndarray, start: int, end: int) -> CropTransform:
    """MediaPipe's eye ROI from two corners: centre of their box, level corner line, 2.3 × the box's long side."""
    a = np.asarray(vertices[start, :2], np.float64)
    b = np.asarray(vertices[end, :2], np.float64)
    d = b - a
    size = ROI_SCALE * float(max(abs(d[0]), abs(d[1])))
    return CropTransform(tuple((a + b) / 2.0), max(size, 1.0), float(np.arctan2(d[1], d[0])), INPUT_SIZE)


class IrisModel:
    """``predict(crop_rgb (S, S, 3) uint8, vertices (468, 3) in that crop's px) -> (10, 3) float32`` iris
    points in the same px (MediaPipe's 478 order). ``predict_eyes`` also returns the 71-point contours."""

    input_size = INPUT_SIZE

    def __init__(self, num_threads: int | None = None) -> None:
        self.model = TFLiteModel(bundled_model_path("iris_landmark.tflite"), num_threads)
        shapes = [int(np.prod(o["shape"])) for o in self.model._interp.get_output_details()]
        self._iris_out = shapes.index(15)  # outputs told apart by size: 213 = 71 contour points, 15 = iris
        self._contour_out = shapes.index(213)

    def predict_eyes(self, image: np.ndarray, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(iris (10, 3), contours (2, 71, 3)) in ``image`` px, eyes in Face.iris order (contour z: the ring's)."""
        iris = np.empty((10, 3), np.float32)
        contours = np.empty((2, 71, 3), np.float32)
        for e, (start, end, mirrored) in enumerate(EYES):
            roi = eye_roi(vertices, start, end)
            crop = roi.warp(image)
            if mirrored:
                crop = crop[:, ::-1]
            x = np.ascontiguousarray(crop, np.float32)[None] * (1.0 / 255.0)
            outs = self.model.run(x)
            pts = outs[self._iris_out].reshape(5, 3).astype(np.float64)
            con = outs[self._contour_out].reshape(71, 3).astype(np.float64)
            if mirrored:
                pts[:, 0] = INPUT_SIZE - pts[:, 0]
                con[:, 0] = INPUT_SIZE - con[:, 0]
                pts = pts[_RIM_UNMIRROR]
            pts, con = roi.to_image(pts), roi.to_image(con)
            # depth from the mesh (see module docstring): the model's own z is on another scale
            ring_z = float(np.mean(np.asarray(vertices)[_RING_INDEX[e], 2]))
            pts[:, 2] = ring_z
            con[:, 2] = ring_z
            iris[5 * e : 5 * e + 5] = pts
            contours[e] = con
        return iris, contours

    def predict(self, crop_rgb: np.ndarray, vertices: np.ndarray) -> np.ndarray:
        return self.predict_eyes(crop_rgb, vertices)[0]

    def close(self) -> None:
        pass
