"""BlazeFace short-range face detector (the model shipped in mediapipe 0.10.21), decoded in numpy.

Anchor layout and decoding follow mediapipe's face_detection_short_range graph:
4 SSD layers, strides 8/16/16/16, 2 anchors per cell, fixed anchor size, 896 anchors in all.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from face3d_live.models.tflite import TFLiteModel, mediapipe_model_path

INPUT_SIZE = 128


@dataclass(frozen=True)
class Detection:
    """A detected face. box (x0, y0, x1, y1) and keypoints (6, 2) in image pixels.

    Keypoints: subject's right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion.
    """

    box: tuple[float, float, float, float]
    keypoints: np.ndarray
    score: float


def _anchors() -> np.ndarray:
    strides = (8, 16, 16, 16)
    rows = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        per_cell = 0
        while layer < len(strides) and strides[layer] == stride:
            per_cell += 2  # aspect ratio 1.0 + the interpolated scale
            layer += 1
        n = int(np.ceil(INPUT_SIZE / stride))
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], axis=1)
        rows.append(np.repeat(cells, per_cell, axis=0))
    return np.concatenate(rows).astype(np.float32)


_ANCHORS = _anchors()


class BlazeFaceDetector:
    """``detect(rgb) -> list[Detection]``, highest score first."""

    def __init__(self, min_score: float = 0.5, nms_iou: float = 0.3, num_threads: int | None = None) -> None:
        self.model = TFLiteModel(mediapipe_model_path("face_detection/face_detection_short_range.tflite"), num_threads)
        assert _ANCHORS.shape[0] == 896
        self.min_score = min_score
        self.nms_iou = nms_iou

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        side = max(h, w)
        # letterbox into a square (keeps aspect ratio, like mediapipe's FIT scale mode)
        scale = INPUT_SIZE / side
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        ox, oy = (INPUT_SIZE - nw) // 2, (INPUT_SIZE - nh) // 2
        canvas[oy : oy + nh, ox : ox + nw] = resized
        x = canvas.astype(np.float32)[None] / 127.5 - 1.0
        regressors, scores = self.model.run(x)
        raw = regressors[0]
        prob = 1.0 / (1.0 + np.exp(-np.clip(scores[0, :, 0], -80.0, 80.0)))
        keep = np.nonzero(prob >= self.min_score)[0]
        if keep.size == 0:
            return []
        raw, prob, anc = raw[keep], prob[keep], _ANCHORS[keep]
        cx = raw[:, 0] / INPUT_SIZE + anc[:, 0]
        cy = raw[:, 1] / INPUT_SIZE + anc[:, 1]
        bw, bh = raw[:, 2] / INPUT_SIZE, raw[:, 3] / INPUT_SIZE
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        kps = raw[:, 4:16].reshape(-1, 6, 2) / INPUT_SIZE + anc[:, None, :]
        # undo letterbox: normalised 128-square → image pixels
        offset = np.array([ox, oy], np.float32) / INPUT_SIZE
        to_px = side
        boxes = (boxes - np.tile(offset, 2)) * to_px
        kps = (kps - offset) * to_px
        return self._weighted_nms(boxes, kps, prob)

    def _weighted_nms(self, boxes: np.ndarray, kps: np.ndarray, prob: np.ndarray) -> list[Detection]:
        """mediapipe's WEIGHTED non-max suppression: overlapping candidates are averaged by score."""
        order = np.argsort(-prob)
        remaining = list(order)
        out: list[Detection] = []
        while remaining:
            top = remaining[0]
            ious = _iou(boxes[top], boxes[remaining])
            group = [remaining[i] for i in np.nonzero(ious > self.nms_iou)[0]]
            wts = prob[group][:, None]
            box = (boxes[group] * wts).sum(0) / wts.sum()
            kp = (kps[group] * wts[:, :, None]).sum(0) / wts.sum()
            out.append(Detection(tuple(float(v) for v in box), kp.astype(np.float32), float(prob[top])))
            remaining = [r for r in remaining if r not in set(group)]
        return out

    def close(self) -> None:
        pass


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)
