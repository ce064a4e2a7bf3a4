"""CPU UV texture baking for recordings (a fallback until/unless the GL accumulator is available).

The UV layout is fixed, so every texel's triangle and barycentric weights are computed once; per frame
the texel's image position is a sparse linear map of the face's vertices (3 non-zeros a texel), the frame
is sampled there with one ``cv2.remap``, and the sample is blended into a running weighted mean. The
weight is how squarely the texel's triangle faces the camera (cos³), so frontal views dominate and
regions hidden in one frame fill in as the head turns. Same interface as the render package's
``TextureAccumulator``: ``update(image_rgb, face)`` / ``texture()`` / ``reset()``.
"""

from __future__ import annotations

import cv2
import numpy as np

from face3d_live.geometry import mesh
from face3d_live.types import Face

MIN_FACING = 0.2  # grazing views smear the texture; ignore triangles seen at more than ~78°
FACING_POWER = 3.0


class CpuTextureBaker:
    """Accumulates a (size, size, 3) uint8 texture in the project's UV layout from video frames."""

    def __init__(self, size: int = 1024) -> None:
        from scipy import sparse

        self.size = int(size)
        tris = mesh.triangles()
        uv = mesh.uv_coords().astype(np.float64) * self.size - 0.5  # texel-centre coordinates
        tri_id = np.full((self.size, self.size), -1, np.int32)
        shift = 4  # sub-texel precision for the rasteriser
        for t, tri in enumerate(tris):
            cv2.fillConvexPoly(
                tri_id, np.rint(uv[tri] * (1 << shift)).astype(np.int32), int(t), cv2.LINE_8, shift
            )
        rows, cols = np.nonzero(tri_id >= 0)
        tid = tri_id[rows, cols]
        corners = uv[tris[tid]]  # (M, 3, 2)
        bary = _barycentric(np.stack([cols, rows], 1).astype(np.float64), corners)
        m = len(tid)
        # texel position = bary · corner vertices: a sparse (M, 468) matrix
        self._interp = sparse.csr_matrix(
            (bary.reshape(-1).astype(np.float32), (np.repeat(np.arange(m), 3), tris[tid].reshape(-1))),
            shape=(m, mesh.NUM_VERTICES),
        )
        self._rows, self._cols, self._tid = rows, cols, tid
        self._tris = tris
        self._mask = np.zeros((self.size, self.size), bool)
        self._mask[rows, cols] = True
        self.reset()

    def reset(self) -> None:
        self._acc = np.zeros((len(self._tid), 3), np.float32)
        self._wsum = np.zeros(len(self._tid), np.float32)
        self.updates = 0

    def update(self, image_rgb: np.ndarray, face: Face) -> None:
        v = np.asarray(face.vertices, np.float64)
        a, b, c = v[self._tris[:, 0]], v[self._tris[:, 1]], v[self._tris[:, 2]]
        n = np.cross(b - a, c - a)
        # triangles are counter-clockwise on screen (y down) when they face the camera: normal towards -z
        facing = -n[:, 2] / np.maximum(np.linalg.norm(n, axis=1), 1e-12)
        w_tri = np.where(facing > MIN_FACING, np.clip(facing, 0, 1) ** FACING_POWER, 0.0).astype(np.float32)
        if not w_tri.any():
            return
        w = w_tri[self._tid]
        xy = self._interp @ v[:, :2].astype(np.float32)  # (M, 2) image px of every texel
        h, wid = image_rgb.shape[:2]
        w *= (xy[:, 0] >= 0) & (xy[:, 0] <= wid - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= h - 1)
        sample = _sample(image_rgb, xy)
        sample *= w[:, None]
        self._acc += sample
        self._wsum += w
        self.updates += 1

    def close(self) -> None:
        """Nothing to release (CPU memory only); here for the accumulator interface."""

    def coverage(self) -> float:
        """Fraction of the face's texels seen so far."""
        return float((self._wsum > 0).mean())

    def texture(self) -> np.ndarray:
        """(size, size, 3) uint8; texels never seen are filled from their surroundings (push-pull)."""
        img = np.zeros((self.size, self.size, 3), np.float32)
        wt = np.zeros((self.size, self.size), np.float32)
        seen = self._wsum > 0
        img[self._rows[seen], self._cols[seen]] = self._acc[seen] / self._wsum[seen, None]
        wt[self._rows[seen], self._cols[seen]] = 1.0
        if not seen.any():
            img[:] = (204, 158, 133)  # neutral skin tone until a frame has been seen
            return img.astype(np.uint8)
        return np.clip(_push_pull(img, wt), 0, 255).astype(np.uint8)


def _sample(image: np.ndarray, xy: np.ndarray, width: int = 1024) -> np.ndarray:
    """Bilinear samples of ``image`` at (M, 2) points → (M, 3) float32 (remap wants a 2D map < 32767 rows)."""
    m = len(xy)
    rows = -(-m // width)
    grid = np.zeros((rows * width, 2), np.float32)
    grid[:m] = xy
    out = cv2.remap(
        image, grid.reshape(rows, width, 2), None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return out.reshape(-1, out.shape[-1])[:m].astype(np.float32)


def _barycentric(p: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """(M, 2) points, (M, 3, 2) triangles → (M, 3) barycentric weights."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    v0, v1, v2 = b - a, c - a, p - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    den = np.where(np.abs(den) < 1e-12, 1e-12, den)
    l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    return np.stack([1 - l1 - l2, l1, l2], 1)


def _push_pull(img: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """Fill zero-weight pixels with a smooth extrapolation of their neighbours (image pyramid)."""
    if min(img.shape[:2]) <= 2 or wt.min() > 0:
        return img
    small_w = cv2.resize(wt, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    small_i = cv2.resize(
        img * wt[..., None], (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA
    )
    filled = np.where(small_w[..., None] > 0, small_i / np.maximum(small_w[..., None], 1e-6), 0)
    coarse = _push_pull(filled.astype(np.float32), (small_w > 0).astype(np.float32))
    up = cv2.resize(coarse, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.where(wt[..., None] > 0, img, up)
