"""Eye gaze angles from the face mesh and the iris points, relative to the head.

Per eye, in the head frame (image-px points rotated by ``rotation.T``: x = the subject's left, y = down,
z = into the head): the eyeball centre sits behind the point between the eye corners where the iris
centre rests when the eye looks straight ahead, by ``EYE_RADIUS`` × the eye's corner-to-corner width (an
adult eye: ~10 mm from the centre of rotation to the iris plane over a ~29 mm wide lid opening). The gaze
is the ray from that centre through the iris centre (mean of the iris centre point and its 4 rim points).
Only the iris's offset across the face (head x, y) is used: its depth from a monocular model is too noisy
to matter beside the fixed radius.

The resting iris position (``REST_OFFSET``, in eye widths from the corners' midpoint: towards the nose,
and down) was measured on the Face Landmarker teacher's training-split crops (|head yaw| < 25°, 9,712
eyes): the intercept of the iris offset regressed on the teacher's eyeLookIn − eyeLookOut (r 0.80) and
eyeLookDown − eyeLookUp (r 0.55). Checked on held-out data (teacher 478 points and head pose from
``umeyama(canonical, mesh)``): yaw vs the teacher's Out − In (left eye) / In − Out (right eye) r = 0.92 /
0.92 on held-out expression crops, 0.96 / 0.92 on the head-motion video; pitch vs Up − Down r = 0.83 /
0.85 and 0.96 / 0.96; faces whose teacher eyeLook differences are all < 0.1 read 2-5° (median |yaw|) and
~2° (|pitch|).
"""

from __future__ import annotations

import numpy as np

EYE_RADIUS = 0.35  # centre of rotation → iris plane, in eye widths (≈ 10 mm / 29 mm)
# iris centre at rest (looking straight ahead) from the corner midpoint, in eye widths: (nasal, down)
REST_OFFSET = (-0.029, -0.073)
# rows of the result: subject's left eye, right eye → (outer corner, inner corner, first iris row, head-frame
# x sign of the nose side: the nose is at -x from the left eye, +x from the right)
EYES = ((263, 362, 5, -1.0), (33, 133, 0, 1.0))
_REST = [np.array([nasal * REST_OFFSET[0], REST_OFFSET[1]]) for *_, nasal in EYES]  # per eye, head x, y


def gaze_angles(vertices: np.ndarray, iris: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """(2, 2) float32 degrees: rows (subject's left eye, right eye), columns (yaw, pitch) relative to the
    head; yaw > 0 looking to the subject's left, pitch > 0 looking up.

    vertices (468+, 3) and iris (10, 3) in image px (z same scale, +z away from the camera; iris in
    MediaPipe's order, first five the subject's right eye); rotation (3, 3): the head pose
    (``Pose.rotation``, vertices ≈ s · canonical @ R.T + t).
    """
    v = np.asarray(vertices, np.float64)
    ir = np.asarray(iris, np.float64)
    r = np.asarray(rotation, np.float64)
    out = np.zeros((2, 2), np.float32)
    for row, (outer, inner, first, _) in enumerate(EYES):
        # row vectors: p @ R applies R.T to each point (image → head frame)
        o, i = v[outer] @ r, v[inner] @ r
        c = ir[first : first + 5].mean(0) @ r
        width = float(np.linalg.norm((o - i)[:2]))
        if width < 1e-6:
            continue
        rest = (o + i)[:2] / 2.0 + _REST[row] * width
        dx, dy = (c[:2] - rest) / (EYE_RADIUS * width)  # sine of the rotation in each direction
        fwd = np.sqrt(max(1.0 - dx * dx - dy * dy, 0.04))  # beyond ~78°: the iris cannot go further
        out[row, 0] = np.degrees(np.arctan2(dx, fwd))
        out[row, 1] = np.degrees(np.arctan2(-dy, fwd))
    return out
