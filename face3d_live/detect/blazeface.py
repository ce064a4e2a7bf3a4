"""BlazeFace short-range face detector (the model shipped in mediapipe 0.10.21), decoded in numpy.

Anchor layout and decoding follow mediapipe's face_detection_short_range graph:
4 SSD layers, strides 8/16/16/16, 2 anchors per cell, fixed anchor size, 896 anchors in all.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from face3d_live.models.tflite import TFLiteModel, bundled_model_path


def shrink(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The image at (width, height) for the detector: halved with ``pyrDown`` while it is still 3× too large,
    then INTER_AREA. OpenCV's INTER_AREA at a large non-integer ratio is slow (a 4000×3000 photo: 36.7 ms on
    this 2-core CPU, 10.1 ms with halving; 640×480 → 192: 0.87 → 0.54 ms, the service's case), and the
    detections stay the same (full-range recall on 1,099 faces pasted into 4000×3000 and 1920×1080 scenes:
    509 → 512 when halving down to 4×; down to 3×, on 600 faces pasted into 640×480 to 1920×1080 scenes: 409
    → 409, faces in 177 of 177 video frames against 176). Halving further (down to 2×) blurs more than the
    area filter would (each pyrDown is a Gaussian): 5.9 grey levels off INTER_AREA's result on a 4096-px
    photo, against 2.9."""
    while image.shape[1] >= 3 * width and image.shape[0] >= 3 * height:
        image = cv2.pyrDown(image)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class _ModelSpec:
    file: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_layer: int  # 2 with the interpolated scale, else 1


SHORT_RANGE = _ModelSpec("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 2)
FULL_RANGE = _ModelSpec("face_detection_full_range_sparse.tflite", 192, (4,), 1)


@dataclass(frozen=True)
class Detection:
    """A detected face. box (x0, y0, x1, y1) and keypoints (6, 2) in image pixels.

    Keypoints: subject's right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion.
    """

    box: tuple[float, float, float, float]
    keypoints: np.ndarray
    score: float


def _anchors(spec: _ModelSpec) -> np.ndarray:
    strides, size = spec.strides, spec.input_size
    rows = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        per_cell = 0
        while layer < len(strides) and strides[layer] == stride:
            per_cell += spec.anchors_per_layer
            layer += 1
        n = int(np.ceil(size / stride))
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], axis=1)
        rows.append(np.repeat(cells, per_cell, axis=0))
    return np.concatenate(rows).astype(np.float32)


def letterbox(h: int, w: int, size: int) -> tuple[int, int, int, int]:
    """(nw, nh, ox, oy): the image's size inside the detector's square input and its offset there (keeps the
    aspect ratio, like mediapipe's FIT scale mode); shared with the torch port (detect.blazeface_torch)."""
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    return nw, nh, (size - nw) // 2, (size - nh) // 2


class BlazeFaceDecoder:
    """Raw model outputs → detections (anchors, box decoding, weighted NMS) for one BlazeFace model. The
    tflite detector and the torch port (detect.blazeface_torch) share it, so both decode the same way."""

    def __init__(self, spec: _ModelSpec, min_score: float = 0.5, nms_iou: float = 0.3) -> None:
        self.size = spec.input_size
        self.anchors = _anchors(spec)
        self.min_score = min_score
        self.nms_iou = nms_iou

    def finds_any(self, logits: np.ndarray) -> bool:
        """Whether ``decode`` finds at least one face in these score logits (A,) (its threshold, no boxes)."""
        if not logits.size:
            return False
        top = np.max(logits)[None]  # the same dtype and formula as decode's scores
        return bool((1.0 / (1.0 + np.exp(-np.clip(top, -80.0, 80.0))) >= self.min_score)[0])

    def decode(self, raw: np.ndarray, logits: np.ndarray, ox: int, oy: int, side: int) -> list[Detection]:
        """One image's regressors (A, 16) and score logits (A,) → detections in image pixels, highest score
        first. (ox, oy): the letterbox offset in the input square; side: the image's longer side."""
        size = self.size
        prob = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
        keep = np.nonzero(prob >= self.min_score)[0]
        if keep.size == 0:
            return []
        raw, prob, anc = raw[keep], prob[keep], self.anchors[keep]
        cx = raw[:, 0] / size + anc[:, 0]
        cy = raw[:, 1] / size + anc[:, 1]
        bw, bh = raw[:, 2] / size, raw[:, 3] / size
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        kps = raw[:, 4:16].reshape(-1, 6, 2) / size + anc[:, None, :]
        # undo letterbox: normalised 128-square → image pixels
        offset = np.array([ox, oy], np.float32) / size
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


class BlazeFaceDetector(BlazeFaceDecoder):
    """``detect(rgb) -> list[Detection]``, highest score first.

    ``full_range=False``: the short-range model (faces within ~2 m, the webcam case, 128² input, fast);
    ``True``: the full-range sparse model (small faces in group photos, 192² input).
    """

    def __init__(
        self,
        min_score: float = 0.5,
        nms_iou: float = 0.3,
        full_range: bool = False,
        num_threads: int | None = None,
    ) -> None:
        spec = FULL_RANGE if full_range else SHORT_RANGE
        self.model = TFLiteModel(bundled_model_path(spec.file), num_threads)
        super().__init__(spec, min_score, nms_iou)

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        size = self.size
        nw, nh, ox, oy = letterbox(h, w, size)
        resized = shrink(image, nw, nh)
        canvas = np.zeros((size, size, 3), np.uint8)
        canvas[oy : oy + nh, ox : ox + nw] = resized
        x = canvas.astype(np.float32)[None] / 127.5 - 1.0
        regressors, scores = self.model.run(x)
        return self.decode(regressors[0], scores[0, :, 0], ox, oy, max(h, w))

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
