"""Similarity alignment (Umeyama 1991) between point sets: head pose from a mesh."""

from __future__ import annotations

import numpy as np

from face3d_live.types import Pose


def umeyama(src: np.ndarray, dst: np.ndarray) -> Pose:
    """Least-squares similarity with ``dst ≈ scale * src @ R.T + t``; src, dst (N, 3)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[2, 2] = -1.0
    rot = u @ fix @ vt
    var_s = (s0**2).sum() / len(src)
    scale = float((sig * np.diag(fix)).sum() / var_s)
    t = mu_d - scale * rot @ mu_s
    return Pose(rotation=rot, translation=t, scale=scale)


def apply_pose(pose: Pose, pts: np.ndarray) -> np.ndarray:
    return pose.scale * np.asarray(pts, np.float64) @ pose.rotation.T + pose.translation
