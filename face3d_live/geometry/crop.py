"""Similarity-aligned square face crops and their exact inverse.

A crop is defined in image pixels by its centre, side length and in-plane angle. The crop is upright:
the face's eye line (angle ``angle`` in the image) becomes horizontal. Depth (z) scales like x and y.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CropTransform:
    """Image → crop similarity. ``center`` (x, y) and ``size`` in image pixels, ``angle`` in radians."""

    center: tuple[float, float]
    size: float
    angle: float
    out_size: int = 224

    @property
    def scale(self) -> float:
        """Crop pixels per image pixel."""
        return self.out_size / self.size

    def matrix(self) -> np.ndarray:
        """(2, 3) float64 affine mapping image pixels to crop pixels."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        k = self.scale
        rot = np.array([[c, s], [-s, c]]) * k  # rotate by -angle, then scale
        half = self.out_size / 2.0
        t = np.array([half, half]) - rot @ np.asarray(self.center, dtype=np.float64)
        return np.hstack([rot, t[:, None]])

    def inverse_matrix(self) -> np.ndarray:
        """(2, 3) float64 affine mapping crop pixels back to image pixels."""
        return cv2.invertAffineTransform(self.matrix())

    def with_out_size(self, out_size: int) -> CropTransform:
        return CropTransform(self.center, self.size, self.angle, out_size)

    def warp(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Cut the crop out of ``image`` (H, W, C) → (out_size, out_size, C); outside is edge-replicated.
        ``out``: a contiguous array of that shape and the image's dtype to write it into (a batch's row).

        Bilinear sampling reads 2×2 pixels per crop pixel: where a crop pixel spans more than two image
        pixels (a face over 448 px wide in a phone photo) it would skip pixels and alias, so the covered part
        of the image is first halved with ``pyrDown`` (Gaussian) until it spans at most two."""
        size = (self.out_size, self.out_size)
        if out is not None and (
            out.shape != (*size, *image.shape[2:]) or out.dtype != image.dtype or not out.flags.c_contiguous
        ):  # OpenCV would silently write a new array instead
            raise ValueError(
                f"warp: out is {out.shape} {out.dtype}, the crop {size} of a {image.dtype} image"
            )
        image, m = _prefiltered(image, self.matrix(), self.scale, self.out_size)
        return cv2.warpAffine(
            image, m, size, dst=out, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )

    def to_image(self, pts: np.ndarray) -> np.ndarray:
        """Crop-space points (N, 2|3) → image pixels; z is rescaled only (crop z is relative depth)."""
        return crops_to_image([self], np.asarray(pts)[None])[0]

    def to_crop(self, pts: np.ndarray) -> np.ndarray:
        """Image-space points (N, 2|3) → crop pixels (exact inverse of ``to_image``)."""
        pts = np.asarray(pts, dtype=np.float64)
        m = self.matrix()
        out = np.empty_like(pts)
        out[..., :2] = pts[..., :2] @ m[:, :2].T + m[:, 2]
        if pts.shape[-1] == 3:
            out[..., 2] = pts[..., 2] * self.scale
        return out

    @classmethod
    def around_points(
        cls,
        points: np.ndarray,
        eye_right: np.ndarray,
        eye_left: np.ndarray,
        margin: float = 1.5,
        out_size: int = 224,
    ) -> CropTransform:
        """Square crop around ``points`` (N, 2+), rotated so the eye line is level.

        The box is taken in the rotated frame (tight for tilted faces), then grown by ``margin``
        (MediaPipe's ROI uses 1.5). ``eye_right`` is the subject's right eye (image left when frontal).
        """
        d = np.asarray(eye_left[:2], np.float64) - np.asarray(eye_right[:2], np.float64)
        angle = float(np.arctan2(d[1], d[0]))
        c, s = np.cos(angle), np.sin(angle)
        p = np.asarray(points, dtype=np.float64)[:, :2]
        rot = np.array([[c, s], [-s, c]])
        q = p @ rot.T
        lo, hi = q.min(axis=0), q.max(axis=0)
        mid = (lo + hi) / 2.0
        center = rot.T @ mid
        size = float(max(hi - lo)) * margin
        return cls((float(center[0]), float(center[1])), max(size, 1.0), angle, out_size)


def crops_to_image(rois: Sequence[CropTransform], pts: np.ndarray) -> np.ndarray:
    """``to_image`` for F crops at once: (F, N, 2|3) crop-space points of F crops → image pixels (float64)."""
    pts = np.asarray(pts, dtype=np.float64)
    inv = np.stack([r.inverse_matrix() for r in rois])[:, None]  # (F, 1, 2, 3)
    out = np.empty_like(pts)
    x, y = pts[..., 0], pts[..., 1]
    # elementwise, not matmul: a face's result must not depend on how many faces share the call (BLAS and
    # numpy's stacked matmul round differently in the last bit)
    out[..., 0] = x * inv[..., 0, 0] + y * inv[..., 0, 1] + inv[..., 0, 2]
    out[..., 1] = x * inv[..., 1, 0] + y * inv[..., 1, 1] + inv[..., 1, 2]
    if pts.shape[-1] == 3:
        out[..., 2] = pts[..., 2] / np.array([r.scale for r in rois])[:, None]
    return out


def _prefiltered(image: np.ndarray, m: np.ndarray, scale: float, out: int) -> tuple[np.ndarray, np.ndarray]:
    """(the image, or the part the crop covers halved with pyrDown until scale ≥ 0.5, the matrix for it)."""
    if scale >= 0.5:
        return image, m
    h, w = image.shape[:2]
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0, 1], [out, 0, 1], [0, out, 1], [out, out, 1]], np.float64) @ inv.T
    pad = 2.0 / scale + 4.0  # two crop pixels of context, for the Gaussian and the bilinear taps at the edge
    x0, y0 = (max(0, int(np.floor(v - pad))) for v in corners.min(0))
    x1, y1 = min(w, int(np.ceil(corners[:, 0].max() + pad))), min(h, int(np.ceil(corners[:, 1].max() + pad)))
    if x1 - x0 < 8 or y1 - y0 < 8:  # (almost) all outside the image: edge replication as before
        return image, m
    roi = image[y0:y1, x0:x1]
    m = m.copy()
    m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)  # the same crop, from the ROI's pixels
    while scale < 0.5 and min(roi.shape[:2]) >= 8:
        roi = cv2.pyrDown(roi)  # dst pixel i is centred on src pixel 2i
        m[:, :2] *= 2.0
        scale *= 2.0
    return roi, m
