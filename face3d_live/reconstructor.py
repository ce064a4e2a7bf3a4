"""The facade: ``Reconstructor(model, backend).reconstruct(rgb) -> list[Face]``.

Stages, each timed: detect (BlazeFace, only when the tracker asks), crop (similarity warp),
infer (the face model, all faces batched), decode (crop → image space, 68 points, pose), smooth (One Euro).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from face3d_live.detect.blazeface import BlazeFaceDetector, Detection
from face3d_live.detect.tracker import FaceTracker, Track, TrackerConfig, box_iou, roi_from_mesh
from face3d_live.geometry import mesh
from face3d_live.geometry.crop import CropTransform
from face3d_live.geometry.one_euro import OneEuroConfig, OneEuroFilter
from face3d_live.geometry.pose import umeyama
from face3d_live.models.registry import DEFAULT_MODEL, create_model
from face3d_live.types import Face

log = logging.getLogger(__name__)

STAGES = ("detect", "crop", "infer", "decode", "smooth")


def check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {shape} dtype {dtype}")
    return image


class Reconstructor:
    """Reconstruct 3D faces from RGB images.

    ``reconstruct(image)`` treats each image on its own (detector on every call, two model passes for
    a tight crop). ``track(image, t)`` is for video: the tracker re-uses the last mesh as the next
    crop and the One Euro filter smooths the vertices over time (``smoothing=None`` turns it off).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        backend: str = "auto",
        *,
        tracker: TrackerConfig = TrackerConfig(),
        smoothing: OneEuroConfig | None = OneEuroConfig(),
        min_detection_score: float = 0.5,
    ) -> None:
        self.model = create_model(model, backend)
        self.detector = BlazeFaceDetector(min_score=min_detection_score)
        self._min_detection_score = min_detection_score
        self._full_range: BlazeFaceDetector | None = None  # made on first need
        self.tracker = FaceTracker(tracker)
        self.smoothing = smoothing
        self._filters: dict[int, OneEuroFilter] = {}
        self._triangles = mesh.triangles()
        self._uv = mesh.uv_coords()
        self._canonical = mesh.canonical_vertices()
        self.timings_ns: dict[str, int] = dict.fromkeys(STAGES, 0)
        log.info(
            "reconstructor: model=%s backend=%s input=%d", self.model.name, backend, self.model.input_size
        )

    # ---- public API -------------------------------------------------------------------------------
    def reconstruct(
        self, image: np.ndarray, boxes: Sequence[tuple[float, float, float, float]] | None = None
    ) -> list[Face]:
        """Faces in one still image, largest first. ``boxes`` (x0, y0, x1, y1) skip the detector."""
        check_image(image)
        self.timings_ns = dict.fromkeys(STAGES, 0)
        size = self.model.input_size
        margin = self.tracker.config.margin
        if boxes is None:
            dets = self._timed("detect", self._detect, image, True)[: self.tracker.config.max_faces]
            rois = [_roi_from_det(d, margin, size) for d in dets]
        else:
            rois = [_roi_from_box(b, margin, size) for b in boxes]
        if not rois:
            return []
        verts, scores = self._run(image, rois)
        # second pass from the first mesh: the crop the model was trained on (tight, level eyes)
        rois = [roi_from_mesh(v, margin, size) for v in verts]
        verts, scores = self._run(image, rois)
        min_p = self.tracker.config.min_presence
        faces = [
            self._face(v, s, r) for v, s, r in zip(verts, scores, rois) if s >= min_p or boxes is not None
        ]
        return _dedupe(sorted(faces, key=lambda f: -f.area))

    def track(self, image: np.ndarray, timestamp_s: float) -> list[Face]:
        """Faces in one video frame, tracked from the previous frames; largest first."""
        check_image(image)
        self.timings_ns = dict.fromkeys(STAGES, 0)
        tracker, size = self.tracker, self.model.input_size
        if tracker.wants_detection():
            tracker.add_detections(self._timed("detect", self._detect, image, False), size)
        results = self._track_pass(image, list(tracker.tracks))
        if any(r is None for r in results.values()):  # a face was lost: look again on this frame
            for tid in [t for t, r in results.items() if r is None]:
                self._filters.pop(tid, None)
            new = tracker.add_detections(self._timed("detect", self._detect, image, False), size)
            results.update(self._track_pass(image, new))
        tracker.end_frame()
        faces = [f for f in results.values() if f is not None]
        faces = _dedupe(sorted(faces, key=lambda f: -f.area))
        kept = {f.track_id for f in faces}
        tracker.tracks = [t for t in tracker.tracks if t.track_id in kept]  # merge converged tracks
        return self._timed("smooth", self._smooth, faces, timestamp_s)

    def reset(self) -> None:
        """Forget tracks and filter state (new video, scene cut)."""
        self.tracker.reset()
        self._filters.clear()

    def close(self) -> None:
        self.model.close()
        self.detector.close()
        if self._full_range is not None:
            self._full_range.close()

    def __enter__(self) -> Reconstructor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- stages -------------------------------------------------------------------------------------
    def _detect(self, image: np.ndarray, full_range_first: bool) -> list[Detection]:
        """Short-range BlazeFace suits webcam video (fast); the full-range model finds small faces in
        group photos. Stills try full range first; video tries short range and falls back."""
        if self._full_range is None:
            self._full_range = BlazeFaceDetector(min_score=self._min_detection_score, full_range=True)
        order = (self._full_range, self.detector) if full_range_first else (self.detector, self._full_range)
        for detector in order:
            dets = detector.detect(image)
            if dets:
                return dets
        return []

    def _track_pass(self, image: np.ndarray, tracks: list[Track]) -> dict[int, Face | None]:
        if not tracks:
            return {}
        verts, scores = self._run(image, [t.roi for t in tracks])
        out: dict[int, Face | None] = {}
        for track, v, s in zip(tracks, verts, scores):
            lost = s < self.tracker.config.min_presence
            out[track.track_id] = None if lost else self._face(v, s, track.roi, track.track_id)
            self.tracker.update(track, None if lost else v, self.model.input_size)
        return out

    def _run(self, image: np.ndarray, rois: list[CropTransform]) -> tuple[list[np.ndarray], np.ndarray]:
        """Crop every ROI, run the model once on the batch, map vertices back to image pixels."""
        t0 = time.perf_counter_ns()
        crops = np.stack([r.warp(image) for r in rois])
        t1 = time.perf_counter_ns()
        verts_crop, scores = self.model.predict(crops)
        t2 = time.perf_counter_ns()
        verts = [r.to_image(v) for r, v in zip(rois, verts_crop)]
        t3 = time.perf_counter_ns()
        self.timings_ns["crop"] += t1 - t0
        self.timings_ns["infer"] += t2 - t1
        self.timings_ns["decode"] += t3 - t2
        return verts, scores

    def _face(self, verts: np.ndarray, score: float, roi: CropTransform, track_id: int = -1) -> Face:
        t0 = time.perf_counter_ns()
        v = verts.astype(np.float32)
        face = Face(
            vertices=v,
            landmarks68=v[mesh.LANDMARKS68],
            triangles=self._triangles,
            uv=self._uv,
            # with smoothing on, the pose is fitted once, to the smoothed vertices (_smooth)
            pose=umeyama(self._canonical, v) if self.smoothing is None or track_id < 0 else None,
            bbox=_bbox(v),
            score=float(score),
            crop=roi,
            track_id=track_id,
        )
        self.timings_ns["decode"] += time.perf_counter_ns() - t0
        return face

    def _smooth(self, faces: list[Face], t: float) -> list[Face]:
        if self.smoothing is None:
            return faces
        live = {f.track_id for f in faces}
        for tid in list(self._filters):
            if tid not in live:
                del self._filters[tid]
        for f in faces:
            filt = self._filters.setdefault(f.track_id, OneEuroFilter(self.smoothing))
            v = filt(f.vertices, t).astype(np.float32)
            f.vertices, f.landmarks68 = v, v[mesh.LANDMARKS68]
            f.pose, f.bbox = umeyama(self._canonical, v), _bbox(v)
        return faces

    def _timed(self, stage: str, fn, *args):
        t0 = time.perf_counter_ns()
        out = fn(*args)
        self.timings_ns[stage] += time.perf_counter_ns() - t0
        return out


def _bbox(v: np.ndarray) -> tuple[float, float, float, float]:
    lo, hi = v[:, :2].min(0), v[:, :2].max(0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def _roi_from_det(det: Detection, margin: float, size: int) -> CropTransform:
    from face3d_live.detect.tracker import roi_from_detection

    return roi_from_detection(det, margin, size)


def _roi_from_box(box: Sequence[float], margin: float, size: int) -> CropTransform:
    x0, y0, x1, y1 = (float(b) for b in box)
    return CropTransform(((x0 + x1) / 2, (y0 + y1) / 2), max(x1 - x0, y1 - y0) * margin, 0.0, size)


def _dedupe(faces: list[Face], iou: float = 0.5) -> list[Face]:
    """Drop a face whose box overlaps a larger one (two tracks that converged on one face)."""
    kept: list[Face] = []
    for f in faces:
        if all(box_iou(f.bbox, k.bbox) < iou for k in kept):
            kept.append(f)
    return kept
