"""Views of the face: the photo's own camera (:class:`ImageView`) and an orbit camera.

Both turn image-space vertices (x right, y down, +z away from the camera, pixels) into the matrices the
face shader takes: ``mvp`` (→ clip), ``modelview`` (→ view space, y up, +z towards the viewer) and a
normal matrix. Matrices are float64 numpy, row-major; :func:`gl_bytes` packs them for a uniform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from face3d_live.geometry import mesh

# image space → a right-handed GL frame: y up, +z towards the viewer
FLIP_YZ = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class ViewMatrices:
    mvp: np.ndarray  # (4, 4) image px → clip
    modelview: np.ndarray  # (4, 4) image px → view space
    normal_matrix: np.ndarray  # (3, 3) image-space normal → view space
    ortho: bool


def gl_bytes(m: np.ndarray) -> bytes:
    """Column-major float32 bytes of a row-major matrix (what GLSL mat uniforms expect)."""
    return np.ascontiguousarray(np.asarray(m, np.float32).T).tobytes()


def _z_range(vertices: np.ndarray) -> tuple[float, float]:
    z = vertices[:, 2]
    lo, hi = float(z.min()), float(z.max())
    pad = 0.25 * (hi - lo) + 1.0
    return lo - pad, hi + pad


@dataclass(frozen=True)
class ImageView:
    """Orthographic view matching the photo: render at (width, height) and it overlays the image."""

    width: int
    height: int

    def matrices(
        self, vertices: np.ndarray, pose=None, viewport: tuple[int, int] | None = None
    ) -> ViewMatrices:
        w, h = float(self.width), float(self.height)
        z0, z1 = _z_range(vertices)
        # x: (x + 0.5) / w * 2 - 1 (pixel centres at integers, as cv2.warpAffine); y flipped (GL is y up)
        mvp = np.array(
            [[2 / w, 0, 0, 1 / w - 1], [0, -2 / h, 0, 1 - 1 / h], [0, 0, 2 / (z1 - z0), -(z1 + z0) / (z1 - z0)],
             [0, 0, 0, 1]]
        )  # fmt: skip
        modelview = np.eye(4)
        modelview[:3, :3] = FLIP_YZ
        return ViewMatrices(mvp, modelview, FLIP_YZ.copy(), ortho=True)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    f = target - eye
    f = f / np.linalg.norm(f)
    s = np.cross(f, up)
    s = s / np.linalg.norm(s)
    u = np.cross(s, f)
    m = np.eye(4)
    m[0, :3], m[1, :3], m[2, :3] = s, u, -f
    m[:3, 3] = -m[:3, :3] @ eye
    return m


def perspective(fov_y_deg: float, aspect: float, near: float, far: float) -> np.ndarray:
    f = 1.0 / math.tan(math.radians(fov_y_deg) / 2)
    return np.array(
        [[f / aspect, 0, 0, 0], [0, f, 0, 0], [0, 0, (far + near) / (near - far), 2 * far * near / (near - far)],
         [0, 0, -1, 0]]
    )  # fmt: skip


_CANONICAL_WIDTH = float(np.ptp(mesh.canonical_vertices()[:, 0]))


@dataclass
class OrbitCamera:
    """Perspective camera orbiting the face's centre. Mutable: the UI drives it with the mouse.

    yaw/pitch in degrees (0, 0 = in front of the face as the camera saw it); ``distance`` in face widths.
    ``canonical=True`` also undoes the head pose, so yaw 0 is always the frontal face.
    """

    yaw: float = 0.0
    pitch: float = 0.0
    distance: float = 3.2
    fov_deg: float = 30.0
    canonical: bool = False
    degrees_per_pixel: float = 0.4

    def orbit(self, dx_pixels: float, dy_pixels: float) -> None:
        """Mouse drag: right turns the camera to the face's right, down raises it."""
        self.yaw = (self.yaw - dx_pixels * self.degrees_per_pixel + 180.0) % 360.0 - 180.0
        self.pitch = float(np.clip(self.pitch + dy_pixels * self.degrees_per_pixel, -89.0, 89.0))

    def zoom(self, steps: float) -> None:
        """Mouse wheel: positive steps move closer."""
        self.distance = float(np.clip(self.distance * 1.1 ** (-steps), 0.5, 20.0))

    def model_matrix(self, vertices: np.ndarray, pose=None) -> np.ndarray:
        """Image px → world: centred on the face, one face width = 1, y up, +z out of the face."""
        width = pose.scale * _CANONICAL_WIDTH if pose is not None else float(np.ptp(vertices[:, 0]))
        linear = FLIP_YZ / max(width, 1e-6)
        if self.canonical and pose is not None:
            linear = linear @ np.asarray(pose.rotation).T  # undo the head rotation
        m = np.eye(4)
        m[:3, :3] = linear
        m[:3, 3] = -linear @ vertices.mean(axis=0)
        return m

    def view_matrix(self) -> np.ndarray:
        y, p = math.radians(self.yaw), math.radians(self.pitch)
        eye = self.distance * np.array([math.cos(p) * math.sin(y), math.sin(p), math.cos(p) * math.cos(y)])
        return look_at(eye, np.zeros(3), np.array([0.0, 1.0, 0.0]))

    def matrices(self, vertices: np.ndarray, pose=None, viewport: tuple[int, int] = (1, 1)) -> ViewMatrices:
        model = self.model_matrix(np.asarray(vertices, np.float64), pose)
        modelview = self.view_matrix() @ model
        proj = perspective(self.fov_deg, viewport[0] / max(viewport[1], 1), 0.05, 100.0)
        normal = modelview[:3, :3] / np.linalg.norm(modelview[:3, 0])  # rotation × uniform scale
        return ViewMatrices(proj @ modelview, modelview, normal, ortho=False)
