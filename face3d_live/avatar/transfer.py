"""Carry blendshape offsets from one neutral face to another (deformation transfer, one 3×3 per vertex).

A delta is a small motion of the surface near its vertex, so it should follow the local shape: on a face
whose mouth is 10 % wider the smile moves the corners 10 % further sideways. Per vertex v, the linear map A_v
takes the rig neutral's edges to v's mesh neighbours onto the target neutral's same edges (least squares),
pulled towards the two faces' overall similarity ``s·R`` with a weight of ``PRIOR`` edges: a vertex whose
neighbours lie almost in a plane constrains only two directions, and a noisy target neutral should not
bend the offsets much. Identical neutrals give the identity; a uniformly scaled face gives that scale.
"""

from __future__ import annotations

import functools

import numpy as np

from face3d_live.geometry.pose import umeyama

PRIOR = 2.0  # weight of the similarity prior, in units of "one neighbour edge"


@functools.lru_cache(maxsize=2)
def neighbours(n_vertices: int, tris_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(pairs (E, 2) of vertex → neighbour over the 1- and 2-ring, both directions)."""
    tris = np.frombuffer(tris_key, np.int32).reshape(-1, 3)
    adj = np.zeros((n_vertices, n_vertices), bool)
    for a, b in ((0, 1), (1, 2), (2, 0)):
        adj[tris[:, a], tris[:, b]] = adj[tris[:, b], tris[:, a]] = True
    two = (adj.astype(np.int32) @ adj.astype(np.int32) > 0) | adj
    np.fill_diagonal(two, False)
    src, dst = np.nonzero(two)
    return src, dst


def local_maps(source: np.ndarray, target: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(V, 3, 3) float64 maps A_v with ``target edges ≈ A_v @ source edges`` around each vertex."""
    src = np.asarray(source, np.float64)
    dst = np.asarray(target, np.float64)
    tris = np.ascontiguousarray(triangles, np.int32)
    i, j = neighbours(len(src), tris.tobytes())
    e_src = src[j] - src[i]  # (E, 3)
    e_dst = dst[j] - dst[i]
    glob = umeyama(src, dst)
    prior = glob.scale * glob.rotation
    lam = PRIOR * np.mean(np.sum(e_src**2, axis=1))
    n = len(src)
    # normal equations per vertex: A (Σ e_s e_sᵀ + λI) = Σ e_d e_sᵀ + λ·prior
    gram = np.zeros((n, 3, 3))
    cross = np.zeros((n, 3, 3))
    np.add.at(gram, i, e_src[:, :, None] * e_src[:, None, :])
    np.add.at(cross, i, e_dst[:, :, None] * e_src[:, None, :])
    gram += lam * np.eye(3)
    cross += lam * prior
    return np.linalg.solve(gram.transpose(0, 2, 1), cross.transpose(0, 2, 1)).transpose(0, 2, 1)
