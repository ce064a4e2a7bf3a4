"""Result and frame types shared by every stage."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Pose:
    """Similarity transform of the face relative to the canonical mesh.

    ``vertices ≈ scale * canonical @ rotation.T + translation`` (image pixels, z away from camera).
    rotation: (3, 3) float64, translation: (3,) float64, scale: float (pixels per canonical unit).
    """

    rotation: np.ndarray
    translation: np.ndarray
    scale: float

    def euler_degrees(self) -> tuple[float, float, float]:
        """(yaw, pitch, roll) in degrees; yaw > 0 when the nose turns towards the image's left (the subject's right)."""
        r = self.rotation
        yaw = np.degrees(np.arcsin(-np.clip(r[2, 0], -1.0, 1.0)))
        pitch = np.degrees(np.arctan2(r[2, 1], r[2, 2]))
        roll = np.degrees(np.arctan2(r[1, 0], r[0, 0]))
        return float(yaw), float(pitch), float(roll)

    def matrix4(self) -> np.ndarray:
        """4x4 homogeneous matrix (scale folded into the rotation block)."""
        m = np.eye(4)
        m[:3, :3] = self.rotation * self.scale
        m[:3, 3] = self.translation
        return m


@dataclass
class Face:
    """One reconstructed face.

    vertices:    (468, 3) float32, x/y in image pixels, z in pixels (same scale), +z away from camera.
    landmarks68: (68, 3) float32, iBUG-68 convention, image pixels.
    triangles:   (852, 3) int32 mesh faces (MediaPipe face-mesh topology), consistently wound: the normal
                 (b - a) x (c - a) points towards the camera (-z) on front-facing triangles.
    uv:          (468, 2) float32 in [0, 1], the project's UV layout.
    pose:        Pose relative to the canonical mesh.
    bbox:        (x0, y0, x1, y1) float image pixels, the box of the projected vertices.
    score:       face-presence probability in [0, 1].
    crop:        the CropTransform the model saw (for re-tracking and texture baking).
    iris:        (10, 3) float32 iris points in image pixels, MediaPipe's order (468-472 then 473-477 of its
                 478-point mesh: centre first, then 4 on the iris rim; the first five are the subject's
                 right eye).
    gaze:        (2, 2) float32 degrees, rows (left eye, right eye) of the subject, columns (yaw, pitch) of
                 the eye relative to the head: yaw > 0 looking to the subject's left, pitch > 0 looking up.
    blendshapes: (52,) float32 in [0, 1], ARKit order (``face3d_live.ARKIT_BLENDSHAPES``); tongueOut is 0
                 (the teacher has no tongue shape).
    """

    vertices: np.ndarray
    landmarks68: np.ndarray
    triangles: np.ndarray
    uv: np.ndarray
    pose: Pose
    bbox: tuple[float, float, float, float]
    score: float
    crop: object = None
    track_id: int = -1
    iris: np.ndarray | None = None
    gaze: np.ndarray | None = None
    blendshapes: np.ndarray | None = None

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.bbox
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


@dataclass
class Frame:
    """A captured frame travelling through the pipeline.

    image: (H, W, 3) uint8 RGB. t_capture_ns: monotonic clock (time.perf_counter_ns) at capture, set once.
    timestamp_s: media time (video position, or seconds since the source opened for cameras).
    timings_ns: per-stage durations in nanoseconds, filled by the stages.
    """

    frame_id: int
    image: np.ndarray
    t_capture_ns: int
    timestamp_s: float
    faces: list[Face] = field(default_factory=list)
    timings_ns: dict[str, int] = field(default_factory=dict)
