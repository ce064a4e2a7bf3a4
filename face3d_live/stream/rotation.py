"""Head and eye rotations in the frames avatar protocols use.

The project's camera frame is right-handed: x right, y down, z away from the camera, and ``Pose.rotation``
maps the head frame (which equals the camera frame for a face looking straight at the camera) into it.
Both protocols want the rotation in a y-up frame whose +z leaves the face towards the camera:

* ARKit / Live Link Face (right-handed): x = the face's own left, y = up, z = out of the face.
* Unity / VMC (left-handed): x = the avatar's right, y = up, z = the avatar's forward.

Both are the camera frame turned 180° about x, ``F = diag(1, -1, -1)``, so the rotation in either frame is
``F @ R @ F``. For Unity that reading of the axes is a mirror image: the subject's left becomes the
avatar's right, so an avatar facing the viewer moves like the subject's reflection (VSeeFace's default).
"""

from __future__ import annotations

import numpy as np

_FLIP = np.diag([1.0, -1.0, -1.0])


def face_rotation(rotation: np.ndarray) -> np.ndarray:
    """(3, 3) head rotation in the y-up, z-out-of-the-face frame (see the module docstring)."""
    return _FLIP @ np.asarray(rotation, np.float64) @ _FLIP


def yaw_pitch_roll(r: np.ndarray) -> tuple[float, float, float]:
    """Radians with ``r = Ry(yaw) @ Rx(pitch) @ Rz(roll)`` (yaw outermost, as a neck turns).

    In the ARKit frame: yaw > 0 turns the face to its own left, pitch > 0 tips the chin down, roll > 0
    tilts the head towards its right shoulder (right-handed rotations about y, x, z).
    """
    pitch = float(np.arcsin(np.clip(-r[1, 2], -1.0, 1.0)))
    yaw = float(np.arctan2(r[0, 2], r[2, 2]))
    roll = float(np.arctan2(r[1, 0], r[1, 1]))
    return yaw, pitch, roll


def quaternion_xyzw(r: np.ndarray) -> tuple[float, float, float, float]:
    """Unit quaternion (x, y, z, w) of a rotation matrix (Shepperd's method, w >= 0)."""
    m = np.asarray(r, np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s
    v = np.array(q, np.float64)
    v /= np.linalg.norm(v)
    if v[3] < 0:
        v = -v
    return float(v[0]), float(v[1]), float(v[2]), float(v[3])


def eye_rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """(3, 3) Unity-frame eye rotation: ``Ry(yaw) @ Rx(-pitch)`` with yaw > 0 looking to the avatar's right
    and pitch > 0 looking up (Unity's positive x rotation tips the forward axis down)."""
    y, p = np.radians(yaw_deg), -np.radians(pitch_deg)
    cy, sy, cp, sp = np.cos(y), np.sin(y), np.cos(p), np.sin(p)
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    return ry @ rx
