"""Face tracking policy: detect only when needed, otherwise crop from the last mesh.

The detector runs when nothing is tracked, when a tracked face is lost, and every
``redetect_every`` frames to pick up faces that entered the view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from face3d_live.detect.blazeface import Detection
from face3d_live.geometry.crop import CropTransform

EYE_RIGHT, EYE_LEFT = 33, 263  # outer eye corners of the face mesh


@dataclass(frozen=True)
class TrackerConfig:
    """max_faces: faces tracked at once. redetect_every: frames between detector runs while faces are
    tracked (0 = only when none is tracked or one is lost). min_presence: model score below which a
    tracked face counts as lost. margin: crop side / face size (MediaPipe's ROI uses 1.5)."""

    max_faces: int = 4
    redetect_every: int = 30
    min_presence: float = 0.5
    margin: float = 1.5


def roi_from_detection(det: Detection, margin: float, out_size: int) -> CropTransform:
    """MediaPipe's detection → ROI rule: box centre, rotation from the eyes, longer side × margin."""
    x0, y0, x1, y1 = det.box
    d = det.keypoints[1] - det.keypoints[0]
    angle = float(np.arctan2(d[1], d[0]))
    size = max(x1 - x0, y1 - y0) * margin
    return CropTransform(((x0 + x1) / 2, (y0 + y1) / 2), float(size), angle, out_size)


def roi_from_mesh(vertices: np.ndarray, margin: float, out_size: int) -> CropTransform:
    return CropTransform.around_points(vertices, vertices[EYE_RIGHT], vertices[EYE_LEFT], margin, out_size)


@dataclass
class Track:
    track_id: int
    roi: CropTransform
    age: int = 0


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FaceTracker:
    """Keeps the tracks; the reconstructor asks it which ROIs to run and reports the results."""

    def __init__(self, config: TrackerConfig = TrackerConfig()) -> None:
        self.config = config
        self.tracks: list[Track] = []
        self._next_id = 0
        self._since_detect = 0
        self.detector_runs = 0

    def reset(self) -> None:
        self.tracks.clear()
        self._since_detect = 0

    def wants_detection(self) -> bool:
        cfg = self.config
        if not self.tracks:
            return True
        return (
            cfg.redetect_every > 0
            and self._since_detect >= cfg.redetect_every
            and len(self.tracks) < cfg.max_faces
        )

    def add_detections(self, dets: list[Detection], out_size: int) -> list[Track]:
        """Start tracks for detections that are not already tracked; returns the new tracks."""
        self._since_detect = 0
        self.detector_runs += 1
        new: list[Track] = []
        for det in dets:
            if len(self.tracks) >= self.config.max_faces:
                break
            cx, cy = (det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2
            if any(_inside(cx, cy, t.roi, self.config.margin) for t in self.tracks):
                continue
            track = Track(self._next_id, roi_from_detection(det, self.config.margin, out_size))
            self._next_id += 1
            self.tracks.append(track)
            new.append(track)
        return new

    def update(self, track: Track, vertices: np.ndarray | None, out_size: int) -> None:
        """Report a track's result: its mesh (image px) for the next ROI, or None when it was lost."""
        if vertices is None:
            self.tracks.remove(track)
            return
        track.roi = roi_from_mesh(vertices, self.config.margin, out_size)
        track.age += 1

    def end_frame(self) -> None:
        self._since_detect += 1


def _inside(x: float, y: float, roi: CropTransform, margin: float) -> bool:
    """Is (x, y) within the face box that the ROI was grown from?"""
    half = roi.size / (2 * margin)
    return abs(x - roi.center[0]) < half and abs(y - roi.center[1]) < half
