"""The 68 iBUG points (3DMM convention, e.g. 3DDFA teacher labels) as a learned affine blend of mesh vertices.

Each point p is ``W[p] @ verts`` with W (68, V), V = 468 or 478 (MediaPipe mesh with or without irises):
an *affine* combination (row sums to 1) of the k vertices nearest the point on average. Affine weights commute
with any pose (similarity transform), so one W serves every yaw. x, y and z are fitted jointly; the labels'
z is only known up to a per-face offset (the 3DDFA labels are centred on their 68-point mean, the mesh on
something else), so each face gets a free z offset, eliminated exactly in the least-squares fit (centring
over the points). `apply_blend68` re-centres z on the 68-point mean, like the labels.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

NUM_POINTS = 68


def _face_scale(pts: np.ndarray) -> np.ndarray:
    """(N,) sqrt of the 2D bounding-box area of each face's points: makes every face count alike."""
    ext = pts[:, :, :2].max(1) - pts[:, :, :2].min(1)
    return np.sqrt(np.maximum(ext[:, 0] * ext[:, 1], 1e-12))


def nearest_vertices(
    verts: np.ndarray,
    lm68: np.ndarray,
    weights: np.ndarray,
    k: int,
    z_off: np.ndarray | None = None,
    chunk: int = 256,
) -> np.ndarray:
    """(P, k) vertex indices with the smallest weighted mean distance (in face sizes) to each point.

    Without ``z_off`` (N,) in 2D, because z has an unknown per-face offset (averaged over many poses, 2D
    distance still ranks vertices by 3D proximity, as in points21.fit_mapping); with it, in 3D."""
    s = _face_scale(lm68)
    dims = 2 if z_off is None else 3
    total = np.zeros((lm68.shape[1], verts.shape[1]))
    for i in range(0, len(verts), chunk):
        v = verts[i : i + chunk, :, :dims]
        p = lm68[i : i + chunk, :, :dims].copy()
        if z_off is not None:
            p[:, :, 2] -= z_off[i : i + chunk, None]
        d = np.linalg.norm(p[:, :, None, :] - v[:, None, :, :], axis=3) / s[i : i + chunk, None, None]
        total += np.einsum("n,npv->pv", weights[i : i + chunk], d)
    return np.argsort(total, axis=1)[:, :k]


def _solve(
    verts: np.ndarray, lm68: np.ndarray, omega: np.ndarray, basis: np.ndarray, ridge: float, chunk: int = 512
) -> np.ndarray:
    """Affine weights on a fixed support, x, y, z jointly with the per-face z offset eliminated exactly.

    Point p = base_p + D_p^T c_p (base_p the first support vertex, D_p the differences to the others).
    The free z offset per face makes the z residual C(t - B c) with C the centring over the P points, so the
    normal equations are  sum_n w_n [B^T B - g g^T / P] c = sum_n w_n [B^T t - g sum(t_z) / P], with B
    block-diagonal per point and g = B_z^T 1 (the stacked z differences): small (P·(k-1))^2 matrices.
    """
    n_pts, k = basis.shape
    m = k - 1
    AtA_blocks = np.zeros((n_pts, m, m))
    Atb = np.zeros((n_pts, m))
    GtG = np.zeros((n_pts * m, n_pts * m))
    Gtb = np.zeros(n_pts * m)
    for i in range(0, len(verts), chunk):
        v, lm, w = verts[i : i + chunk], lm68[i : i + chunk], omega[i : i + chunk]
        base = v[:, basis[:, 0]]  # (n, P, 3)
        D = v[:, basis[:, 1:]] - base[:, :, None, :]  # (n, P, m, 3)
        t = lm - base  # (n, P, 3)
        AtA_blocks += np.einsum("n,npid,npjd->pij", w, D, D)
        Atb += np.einsum("n,npid,npd->pi", w, D, t)
        g = D[..., 2].reshape(len(v), -1)  # (n, P*m)
        GtG += (g * w[:, None]).T @ g / n_pts
        Gtb += (g * w[:, None]).T @ t[:, :, 2].sum(1) / n_pts
    AtA = -GtG
    for p in range(n_pts):
        AtA[p * m : (p + 1) * m, p * m : (p + 1) * m] += AtA_blocks[p]
    rhs = Atb.reshape(-1) - Gtb
    reg = ridge * max(float(np.trace(AtA)) / len(AtA), 1e-12)
    c = np.linalg.solve(AtA + reg * np.eye(len(AtA)), rhs).reshape(n_pts, m)
    W = np.zeros((n_pts, verts.shape[1]))
    rows = np.arange(n_pts)
    W[rows, basis[:, 0]] = 1.0 - c.sum(1)
    for j in range(m):
        W[rows, basis[:, j + 1]] += c[:, j]
    return W


def fit_blend68(
    verts: np.ndarray,
    lm68: np.ndarray,
    weights: np.ndarray | None = None,
    k: int = 8,
    ridge: float = 1e-3,
) -> np.ndarray:
    """verts (N, V, 3) meshes, lm68 (N, P=68, 3) points in the same pixels (x, y; z up to a per-face offset),
    weights (N,) >= 0 per face (0 = skip) -> W (P, V) float32, each row an affine blend of k vertices.

    Support: the k vertices nearest each point on average, first in 2D, then again in 3D with the z offsets
    of a first fit. Weights: least squares on x, y, z in face-size units, ridge-regularised towards the
    nearest vertex alone (``ridge`` relative to the mean diagonal of the normal matrix).
    """
    verts = np.asarray(verts, np.float64)
    lm68 = np.asarray(lm68, np.float64)
    n_verts = verts.shape[1]
    w = np.ones(len(verts)) if weights is None else np.asarray(weights, np.float64)
    keep = w > 0
    if keep.sum() < 2:
        raise ValueError(f"fit_blend68: {keep.sum()} faces with weight > 0; need at least 2")
    verts, lm68, w = verts[keep], lm68[keep], w[keep]
    k = max(2, min(k, n_verts))
    s = _face_scale(lm68)
    omega = w / s**2  # every face counts by its weight, in face-size units
    basis = nearest_vertices(verts, lm68, w, k)
    W = _solve(verts, lm68, omega, basis, ridge)
    z_off = (lm68[:, :, 2] - apply_blend68(W, verts, centre_z=False)[:, :, 2]).mean(1)
    basis = nearest_vertices(verts, lm68, w, k, z_off=z_off)
    W = _solve(verts, lm68, omega, basis, ridge)
    pred = apply_blend68(W, verts)
    pred[:, :, 2] += lm68[:, :, 2].mean(1, keepdims=True)
    err3 = (np.linalg.norm(pred - lm68, axis=2) / s[:, None]).mean(1)
    err2 = (np.linalg.norm(pred[..., :2] - lm68[..., :2], axis=2) / s[:, None]).mean(1)
    log.info(
        "blend68: %d faces, V=%d, k=%d: mean error %.2f %% of face size in 3D, %.2f %% in x, y",
        len(lm68), n_verts, k, 100 * np.average(err3, weights=w), 100 * np.average(err2, weights=w),
    )  # fmt: skip
    return W.astype(np.float32)


def apply_blend68(W: np.ndarray, verts: np.ndarray, centre_z: bool = True) -> np.ndarray:
    """(..., V, 3) meshes -> (..., 68, 3) points; z centred on the 68-point mean (the label convention)."""
    out = np.einsum("pv,...vd->...pd", W, verts)
    if centre_z:
        out[..., 2] -= out[..., 2].mean(-1, keepdims=True)
    return out
