"""From image-space faces to a game-engine asset: pose-free shapes in metres plus a head transform.

Image space (Face.vertices): x right, y down, z away from the camera, in pixels. glTF: right-handed,
+Y up, +Z towards the viewer, metres. ``F = diag(1, -1, -1)`` (a 180° turn about x, so winding and
handedness are kept) maps one to the other.

Each recorded face is split into
  * its pose-free shape in canonical space — ``c = R.T (v - t) / s`` (canonical units ≈ cm) — which is
    what morph targets store (an engine can blend, retarget or re-pose it), and
  * the head transform on the node: rotation ``F R F``, uniform scale ``s / s_ref`` and translation
    ``F (t - origin) * metres_per_pixel``,
so that ``node(shape) = F (v - origin) * metres_per_pixel`` exactly (up to float rounding).
``s_ref`` is the median pose scale of the recording (pixels per canonical unit), which makes the head
life-sized on average: ``metres_per_pixel = 0.01 / s_ref``; ``origin`` is the first face's position,
so the head starts at the scene origin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from face3d_live.errors import RecordError
from face3d_live.geometry import mesh
from face3d_live.record.journal import Recording

CANONICAL_UNIT_M = 0.01  # the canonical mesh has outer eye corners 9.0 apart: centimetres
FLIP = np.array([1.0, -1.0, -1.0])


@dataclass
class AssetFrames:
    """A recording in glTF terms, one row per recorded frame (frames without a face hold the last face).

    times (F,) float64 seconds from the first frame; shapes (F, 468, 3) float32 metres (pose-free,
    glTF axes); rotation (F, 4) float32 xyzw quaternions; translation (F, 3) float32 metres;
    scale (F,) float32; metres_per_pixel, origin_px (3,): the image ↔ scene mapping.
    """

    times: np.ndarray
    shapes: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    scale: np.ndarray
    metres_per_pixel: float
    origin_px: np.ndarray
    duration: float
    own_face: np.ndarray  # (F,) bool: the frame has its own face (else it holds the last one)
    frame_index: np.ndarray  # (F,) int64: the capture's frame numbers


def base_shape() -> np.ndarray:
    """(468, 3) float32 canonical neutral face in metres, glTF axes: the GLB's base mesh."""
    return (mesh.canonical_vertices().astype(np.float64) * FLIP * CANONICAL_UNIT_M).astype(np.float32)


def to_asset(rec: Recording) -> AssetFrames:
    """Split every recorded face into a pose-free shape and a node transform (see the module doc)."""
    if not rec.has_face.any():
        raise RecordError("no face was recorded in any frame; nothing to export")
    idx = _hold_last_face(rec.has_face)
    rot, t, s = rec.rotation[idx], rec.translation[idx], rec.scale[idx]
    v = rec.vertices[idx].astype(np.float64)
    # pose-free canonical shape: c = R.T (v - t) / s, row-vector form (v - t) @ R / s
    canon = np.einsum("fnj,fjk->fnk", v - t[:, None, :], rot) / s[:, None, None]
    shapes = (canon * FLIP * CANONICAL_UNIT_M).astype(np.float32)
    s_ref = float(np.median(rec.scale[rec.has_face]))
    mpp = CANONICAL_UNIT_M / s_ref
    origin = rec.translation[np.argmax(rec.has_face)].copy()
    node_rot = rot * FLIP[None, :, None] * FLIP[None, None, :]  # F R F
    quats = quaternions(node_rot)
    trans = ((t - origin) * FLIP * mpp).astype(np.float32)
    scale = (s / s_ref).astype(np.float32)
    return AssetFrames(
        times=rec.timestamps - rec.timestamps[0],
        shapes=shapes,
        rotation=quats,
        translation=trans,
        scale=scale,
        metres_per_pixel=mpp,
        origin_px=origin,
        duration=rec.duration,
        own_face=rec.has_face.copy(),
        frame_index=rec.frame_index.copy(),
    )


def node_apply(shape: np.ndarray, quat: np.ndarray, translation: np.ndarray, scale: float) -> np.ndarray:
    """What an engine draws: the node's TRS applied to a (N, 3) shape (float64)."""
    return float(scale) * np.asarray(shape, np.float64) @ quat_to_matrix(quat).T + np.asarray(translation)


def scene_to_image(points: np.ndarray, metres_per_pixel: float, origin_px: np.ndarray) -> np.ndarray:
    """Scene metres (glTF axes) → image pixels (y down, +z away): the inverse of the export mapping."""
    return np.asarray(points, np.float64) * FLIP / metres_per_pixel + np.asarray(origin_px)


def image_to_scene(points: np.ndarray, metres_per_pixel: float, origin_px: np.ndarray) -> np.ndarray:
    return (np.asarray(points, np.float64) - np.asarray(origin_px)) * FLIP * metres_per_pixel


def _hold_last_face(has_face: np.ndarray) -> np.ndarray:
    """Index of the face each frame shows: its own, else the last one before it (the first one at the start)."""
    idx = np.where(has_face, np.arange(len(has_face)), -1)
    idx = np.maximum.accumulate(idx)
    idx[idx < 0] = int(np.argmax(has_face))
    return idx


def quaternions(rot: np.ndarray) -> np.ndarray:
    """(F, 3, 3) rotation matrices → (F, 4) float32 unit quaternions (x, y, z, w), sign-continuous."""
    rot = np.asarray(rot, np.float64)
    q = np.empty((len(rot), 4))
    for i, m in enumerate(rot):
        q[i] = _quat(m)
    for i in range(1, len(q)):  # q and -q are one rotation; keep neighbours on one side for interpolation
        if np.dot(q[i], q[i - 1]) < 0:
            q[i] = -q[i]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.astype(np.float32)


def _quat(m: np.ndarray) -> np.ndarray:
    """Shepperd's method: branch on the largest diagonal term for accuracy."""
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        k = 2.0 * np.sqrt(tr + 1.0)
        return np.array([(m[2, 1] - m[1, 2]) / k, (m[0, 2] - m[2, 0]) / k, (m[1, 0] - m[0, 1]) / k, k / 4])
    i = int(np.argmax(np.diag(m)))
    j, k_ = (i + 1) % 3, (i + 2) % 3
    r = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k_, k_])
    q = np.empty(4)
    q[i] = r / 4
    q[j] = (m[j, i] + m[i, j]) / r
    q[k_] = (m[k_, i] + m[i, k_]) / r
    q[3] = (m[k_, j] - m[j, k_]) / r
    return q


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = (float(c) for c in np.asarray(q, np.float64) / np.linalg.norm(q))
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def vertex_normals(shapes: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """(..., N, 3) → unit area-weighted vertex normals (counter-clockwise front faces), float32."""
    shapes = np.asarray(shapes, np.float32)
    a, b, c = shapes[..., tris[:, 0], :], shapes[..., tris[:, 1], :], shapes[..., tris[:, 2], :]
    face_n = np.cross(b - a, c - a)
    # vertex-triangle incidence matrix: one matmul scatters every triangle normal to its 3 corners
    incidence = np.zeros((shapes.shape[-2], len(tris)), np.float32)
    for k in range(3):
        incidence[tris[:, k], np.arange(len(tris))] = 1.0
    n = incidence @ face_n
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    return (n / np.maximum(norm, 1e-20)).astype(np.float32)
