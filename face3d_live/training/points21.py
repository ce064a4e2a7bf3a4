"""The 21 manual AFLW landmarks as fixed linear combinations of mesh vertices, fitted from data.

AFLW points (1-based): 1-3 right brow, 4-6 left brow, 7-9 right eye (corner, centre, corner),
10-12 left eye, 13 right ear lobe, 14-16 nostril / nose tip / nostril, 17 left ear lobe,
18-20 mouth (corner, centre, corner), 21 chin.

Each point k is ``W[k] @ vertices`` with W (21, 468): an *affine* combination (weights sum to 1) of a few
vertices. Because a similarity transform (pose) commutes with affine combinations, and the projection
to x, y is linear, a point fitted on 3D meshes stays right at any yaw. Face points use their K nearest
vertices on average (so the eye centre, which no vertex marks, becomes a blend of the lid vertices);
the ear points, which lie off the mesh, add the nose tip and the eye corners to the basis so the fit can
extrapolate behind the face contour in depth. Fitted on confident teacher meshes of the *training* split
(|yaw| < 50°), ridge-regularised towards the single nearest vertex, then made left/right symmetric.
The stored map (points21_map.npz: W, nearest vertex, fit error) is a model parameter like the canonical
mesh, not image data; `face3d-live train --fit-map` refits it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from face3d_live.geometry.mesh import mirror_indices

NUM_POINTS = 21
EARS = (12, 16)  # 0-based indices of AFLW points 13 and 17
# left/right partner of each AFLW point (0-based); midline points map to themselves
AFLW_MIRROR = np.array([5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 16, 15, 14, 13, 12, 19, 18, 17, 20], np.int64)
MAP_PATH = Path(__file__).resolve().with_name("points21_map.npz")
K_FACE, K_EAR = 6, 6
EAR_EXTRA = (1, 33, 263, 168)  # nose tip, eye corners, nose bridge: give the ear fit depth leverage


def fit_mapping(
    verts: np.ndarray, pts: np.ndarray, ridge: float = 1e-3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """verts (N, 468, 3) teacher meshes, pts (N, 21, 2) manual points (NaN = missing), same pixels.

    Returns W (21, 468) float32, the single nearest vertex per point (21,), and the fit's mean
    error per point as a fraction of the mesh size (21,).
    """
    size = np.sqrt(np.prod(verts[:, :, :2].max(1) - verts[:, :, :2].min(1), axis=1))
    W = np.zeros((NUM_POINTS, verts.shape[1]), np.float64)
    nearest = np.zeros(NUM_POINTS, np.int64)
    err = np.zeros(NUM_POINTS)
    for k in range(NUM_POINTS):
        m = ~np.isnan(pts[:, k, 0])
        v, p, s = verts[m], pts[m, k], size[m]
        mean_d = (np.linalg.norm(v[:, :, :2] - p[:, None, :], axis=2) / s[:, None]).mean(0)
        order = np.argsort(mean_d)
        nearest[k] = order[0]
        basis = list(order[: K_EAR if k in EARS else K_FACE])
        if k in EARS:
            basis += [b for b in EAR_EXTRA if b not in basis]
        # affine weights: w = e0 + D c with sum(w) = 1; solve c by ridge least squares on x and y
        b0 = basis[0]
        base = v[:, b0, :2]  # (n, 2)
        diffs = v[:, basis[1:], :2] - base[:, None, :]  # (n, B-1, 2)
        A = (diffs.transpose(0, 2, 1) / s[:, None, None]).reshape(-1, len(basis) - 1)
        y = ((p - base) / s[:, None]).reshape(-1)
        c = np.linalg.solve(A.T @ A + ridge * len(y) * np.eye(A.shape[1]), A.T @ y)
        W[k, b0] = 1.0 - c.sum()
        W[k, basis[1:]] = c
        pred = np.einsum("j,njd->nd", W[k], v[:, :, :2])
        err[k] = float((np.linalg.norm(pred - p, axis=1) / s).mean())
    return symmetrize(W).astype(np.float32), nearest, err


def symmetrize(W: np.ndarray) -> np.ndarray:
    """Average each point's weights with its partner's, mirrored through the mesh's vertex mirror map."""
    mirror = mirror_indices()
    Wm = np.zeros_like(W)
    Wm[:, mirror] = W  # weight on vertex j moves to mirror(j)
    return 0.5 * (W + Wm[AFLW_MIRROR])


def save_mapping(W: np.ndarray, nearest: np.ndarray, err: np.ndarray, path: Path = MAP_PATH) -> None:
    np.savez(
        path, weights=W.astype(np.float32), nearest=nearest.astype(np.int32), fit_error=err.astype(np.float32)
    )


def load_mapping(path: Path = MAP_PATH) -> np.ndarray:
    """(21, 468) float32 weights; AFLW point k = W[k] @ vertices."""
    from face3d_live.errors import ModelError

    try:
        with np.load(path) as z:
            return z["weights"]
    except OSError as exc:
        raise ModelError(
            f"AFLW landmark map {path} missing: run `face3d-live train --fit-map` ({exc})"
        ) from exc


def aflw_points(W: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """(..., 468, 2|3) vertices → (..., 21, 2) AFLW points."""
    return np.einsum("kj,...jd->...kd", W, verts[..., :2])
