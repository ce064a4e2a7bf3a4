"""The facade: ``Reconstructor(model, backend).reconstruct(rgb) -> list[Face]``.

Stages, each timed: detect (BlazeFace, only when the tracker asks), crop (similarity warp),
infer (the face model, all faces batched), decode (crop → image space, 68 points, pose), smooth (One Euro
on the points), expression (ARKit-52 blendshapes from the 478 points, One Euro on them when tracking,
neutral calibration; gaze from the iris).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from face3d_live.detect.blazeface import BlazeFaceDetector, Detection
from face3d_live.detect.tracker import FaceTracker, Track, TrackerConfig, box_iou, roi_from_mesh
from face3d_live.errors import ConfigError
from face3d_live.expression.blendshapes import BlendshapeModel
from face3d_live.expression.calibration import BlendshapeCalibration
from face3d_live.geometry import mesh
from face3d_live.geometry.crop import CropTransform, crops_to_image
from face3d_live.geometry.gaze import gaze_angles
from face3d_live.geometry.landmarks68 import blend68, blend68_mean_z
from face3d_live.geometry.one_euro import OneEuroConfig, OneEuroFilter
from face3d_live.geometry.pose import umeyama
from face3d_live.models.output import merge_flipped
from face3d_live.models.registry import DEFAULT_MODEL, FaceModel, create_model
from face3d_live.types import Face

log = logging.getLogger(__name__)

STAGES = ("detect", "crop", "infer", "decode", "smooth", "expression")
# blendshapes live in [0, 1]: a faster filter than the mesh's (pixels), so blinks are not smeared
BLENDSHAPE_SMOOTHING = OneEuroConfig(min_cutoff=3.0, beta=1.5, d_cutoff=1.0)


@dataclass
class _Points:
    """One face's model output in image pixels: mesh (468, 3), iris (10, 3), iBUG-68 (68, 3)."""

    vertices: np.ndarray
    iris: np.ndarray
    landmarks68: np.ndarray

    def stacked(self) -> np.ndarray:
        return np.concatenate([self.vertices, self.iris, self.landmarks68])

    @staticmethod
    def unstack(a: np.ndarray) -> _Points:
        return _Points(a[:468], a[468:478], a[478:])


def check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {shape} dtype {dtype}")
    return image


class Reconstructor:
    """Reconstruct 3D faces from RGB images.

    ``reconstruct(image)`` treats each image on its own (detector on every call, two model passes for
    a tight crop, or ``passes=1``: one, from the detection, for services that count model calls; with
    ``flip_stills`` the final pass also runs on the mirrored crop and the two answers are averaged, at 1.5
    times the model work: the held-out AFLW error −1.3 % for r50; the 68-point error −3 % for r50, −5 % for
    r50-int8, measured when both passes were mirrored). ``track(image, t)`` is for
    video: the tracker re-uses the last mesh as the next crop and One Euro filters smooth the points and the
    blendshapes over time (``smoothing=None`` turns both off).

    Blendshape calibration: ``capture_neutral(frames)`` takes the resting face from the next ``frames``
    faces (largest face, uncalibrated values) and subtracts it from then on; ``calibration.set_gain(name, g)``
    scales one shape; ``calibration.reset()`` undoes both.
    """

    def __init__(
        self,
        model: str | FaceModel = DEFAULT_MODEL,
        backend: str = "auto",
        *,
        tracker: TrackerConfig = TrackerConfig(),
        smoothing: OneEuroConfig | None = OneEuroConfig(),
        min_detection_score: float = 0.5,
        flip_stills: bool = True,
        first_pass: str | FaceModel | None = None,
        passes: int = 2,
    ) -> None:
        if passes not in (1, 2):
            raise ConfigError(f"stills take 1 or 2 passes, not {passes}")
        if passes == 1 and first_pass is not None:
            raise ConfigError("a first-pass model places the second pass's crop: it needs passes=2")
        # a name is loaded (and closed with us); a FaceModel instance is borrowed: its owner closes it
        self._owns_model = isinstance(model, str)
        self.model = create_model(model, backend) if self._owns_model else model
        # stills' first pass only places the second one's crop: a lighter model may do it (None: ``model``)
        self._owns_first = isinstance(first_pass, str)
        try:
            self.first_model = self._first_pass_model(first_pass, backend)
        except BaseException:
            if self._owns_model:
                self.model.close()
            raise
        self.detector = BlazeFaceDetector(min_score=min_detection_score)
        self._min_detection_score = min_detection_score
        self._full_range: BlazeFaceDetector | None = None  # made on first need
        self.tracker = FaceTracker(tracker)
        self.smoothing = smoothing
        self.flip_stills = flip_stills
        self.passes = passes
        self._filters: dict[int, OneEuroFilter] = {}
        self._bs_filters: dict[int, OneEuroFilter] = {}
        self.blendshape_model = BlendshapeModel()
        self.calibration = BlendshapeCalibration()
        self._neutral_wanted = 0
        self._neutral_samples: list[np.ndarray] = []
        self._triangles = mesh.triangles()
        self._uv = mesh.uv_coords()
        self._canonical = mesh.canonical_vertices()
        self.timings_ns: dict[str, int] = dict.fromkeys(STAGES, 0)
        log.info(
            "reconstructor: model=%s backend=%s input=%d", self.model.name, backend, self.model.input_size
        )

    def _first_pass_model(self, first_pass: str | FaceModel | None, backend: str) -> FaceModel | None:
        """``first_pass`` loaded (a name) or borrowed (a FaceModel), paired with the model."""
        if first_pass is None:
            return None
        first = create_model(first_pass, backend) if isinstance(first_pass, str) else first_pass
        try:
            pair_first_pass(self.model, first)
        except ConfigError:
            if isinstance(first_pass, str):
                first.close()
            raise
        return first

    # ---- public API -------------------------------------------------------------------------------
    def reconstruct(
        self,
        image: np.ndarray,
        boxes: Sequence[tuple[float, float, float, float]] | None = None,
        detections: Sequence[Detection] | None = None,
    ) -> list[Face]:
        """Faces in one still image, largest first. ``boxes`` (x0, y0, x1, y1) skip the detector;
        ``detections`` are the detector's answer for this image made elsewhere (the service detects a batch
        of images at once on its GPU: scale.gpu_front), used as the detector's would be."""
        check_image(image)
        self.timings_ns = dict.fromkeys(STAGES, 0)
        size, margin = self.model.input_size, self.tracker.config.margin
        if boxes is not None:
            return self._stills([image], [[_roi_from_box(b, margin, size) for b in boxes]], keep_all=True)[0]
        if detections is None:
            detections = self._timed("detect", self._detect, image, True)
        return self._stills([image], [self._rois(detections)])[0]

    def reconstruct_batch(
        self, images: Sequence[np.ndarray], detections: Sequence[Sequence[Detection]] | None = None
    ) -> list[list[Face]]:
        """``[reconstruct(image, detections=d) for ...]``, computed together: the faces of all images go
        through each model pass, the crop-to-image mapping and the blendshape network as one batch (the
        service's replicas answer their concurrent requests this way: the per-call costs are paid once)."""
        for image in images:
            check_image(image)
        self.timings_ns = dict.fromkeys(STAGES, 0)
        if detections is None:
            detections = [self._timed("detect", self._detect, image, True) for image in images]
        if len(detections) != len(images):
            raise ValueError(f"{len(detections)} detection lists for {len(images)} images")
        return self._stills(images, [self._rois(d) for d in detections])

    def _rois(self, detections: Sequence[Detection]) -> list[CropTransform]:
        size, margin = self.model.input_size, self.tracker.config.margin
        return [_roi_from_det(d, margin, size) for d in list(detections)[: self.tracker.config.max_faces]]

    def _stills(
        self, images: Sequence[np.ndarray], rois: list[list[CropTransform]], keep_all: bool = False
    ) -> list[list[Face]]:
        """Each image's faces from its first ROIs: two passes (the second from the first mesh), largest first.
        ``keep_all``: every ROI gives a face, whatever its presence score (boxes given by the caller)."""
        owner = [k for k, image_rois in enumerate(rois) for _ in image_rois]
        flat = [r for image_rois in rois for r in image_rois]
        if not flat:
            return [[] for _ in images]
        crops_of = [images[k] for k in owner]
        size, margin = self.model.input_size, self.tracker.config.margin
        # the first pass only places the second one's crop, so it is never mirrored: averaging it too changed
        # nothing measurable (held-out AFLW NME 3.432 with it, 3.427 without) and was a third of a photo's
        # model work (H200 service: 1,281-1,307 against 1,443 requests/s at c=32). Padded where the backend
        # answers a lone crop differently (R50FaceModel.steady_batch): a photo's faces do not depend on the
        # batch it came in (the library job equals `process` bit for bit)
        if self.passes == 2:
            first = self.first_model or self.model
            points, _ = self._run(crops_of, flat, pad_to=getattr(first, "steady_batch", 1), model=first)
            # second pass from the first mesh: the crop the model was trained on (tight, level eyes)
            flat = [roi_from_mesh(p.vertices, margin, size) for p in points]
        # passes=1: the final pass from the detection's ROI, one model call a photo instead of two (held-out
        # AFLW through the detector, r50: NME 3.662 against 3.655; better for turned faces, up to 0.14 worse
        # below |yaw| 60 with a loose box; README)
        points, scores = self._run(crops_of, flat, self.flip_stills)
        min_p = self.tracker.config.min_presence
        per_image: list[list[Face]] = [[] for _ in images]
        for k, p, s, r in zip(owner, points, scores, flat):
            if s >= min_p or keep_all:
                per_image[k].append(self._face(p, s, r))
        per_image = [_dedupe(sorted(faces, key=lambda f: -f.area)) for faces in per_image]
        # the blendshape network once for all images' faces
        self._timed("expression", self._expression, [f for faces in per_image for f in faces], None)
        return per_image

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
        # blendshapes come from the raw points and get their own, faster filter (smoothing the points first
        # and then the shapes again would add the lag twice)
        raw = {f.track_id: np.concatenate([f.vertices, f.iris]) for f in faces}
        faces = self._timed("smooth", self._smooth, faces, timestamp_s)
        return self._timed("expression", self._expression, faces, timestamp_s, raw)

    def capture_neutral(self, frames: int = 15) -> None:
        """Take the resting face (median of the next ``frames`` faces' uncalibrated blendshapes, after the
        tracking filter; largest face) as the calibration's neutral. Ask the user to relax their face while
        it runs; right after a reset the first 3-4 tracked frames still settle, so start it a moment later."""
        if frames < 1:
            raise ValueError("capture_neutral needs at least one frame")
        self._neutral_wanted, self._neutral_samples = frames, []

    @property
    def capturing_neutral(self) -> bool:
        return self._neutral_wanted > 0

    def reset(self) -> None:
        """Forget tracks and filter state (new video, scene cut)."""
        self.tracker.reset()
        self._filters.clear()
        self._bs_filters.clear()

    def close(self) -> None:
        if self._owns_model:
            self.model.close()
        if self._owns_first:
            self.first_model.close()
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
        points, scores = self._run([image] * len(tracks), [t.roi for t in tracks])
        out: dict[int, Face | None] = {}
        for track, p, s in zip(tracks, points, scores):
            lost = s < self.tracker.config.min_presence
            out[track.track_id] = None if lost else self._face(p, s, track.roi, track.track_id)
            self.tracker.update(track, None if lost else p.vertices, self.model.input_size)
        return out

    def _run(
        self,
        images: Sequence[np.ndarray],
        rois: list[CropTransform],
        flip: bool = False,
        pad_to: int = 1,
        model: FaceModel | None = None,
    ) -> tuple[list[_Points], np.ndarray]:
        """Crop every ROI out of its image (``images[k]`` for ``rois[k]``), run the model once on the batch
        (``flip``: with the mirrored crops, averaged; ``pad_to``: at least that many crops, blank ones added),
        map its points back to image pixels."""
        t0 = time.perf_counter_ns()
        n, size = len(rois), self.model.input_size
        # the crops, then (flip) the same crops mirrored, written in place: numpy's copy of a mirrored view
        # goes pixel by pixel (0.35 ms a crop, 20× cv2.flip)
        rows = 2 * n if flip else n
        crops = np.empty((max(rows, pad_to), size, size, 3), np.uint8)
        if pad_to > rows:  # blank padding (never on the tracking path: pad_to is 1 there)
            crops[rows:] = 0
        for k, (r, image) in enumerate(zip(rois, images)):
            r.warp(image, out=crops[k])
            if flip:
                cv2.flip(crops[k], 1, dst=crops[n + k])
        t1 = time.perf_counter_ns()
        out = (model or self.model).predict(crops)
        if len(crops) > rows:
            out = out.rows(0, rows)
        if flip:
            out = merge_flipped(out, size)
        t2 = time.perf_counter_ns()
        if out.landmarks68 is None:
            lm68 = blend68(out.vertices)
        else:  # the head's z is centred per face: put it in the mesh's depth frame (the blend's mean depth)
            lm68 = out.landmarks68.copy()
            lm68[..., 2] += blend68_mean_z(out.vertices) - lm68[..., 2].mean(-1, keepdims=True)
        # every face's points through its crop's inverse at once, not one call per face
        crop_pts = np.concatenate([out.vertices, out.iris, lm68], axis=1).astype(np.float64)
        image_pts = crops_to_image(rois, crop_pts).astype(np.float32)
        points = [_Points.unstack(p) for p in image_pts]
        t3 = time.perf_counter_ns()
        self.timings_ns["crop"] += t1 - t0
        self.timings_ns["infer"] += t2 - t1
        self.timings_ns["decode"] += t3 - t2
        return points, out.scores

    def _face(self, p: _Points, score: float, roi: CropTransform, track_id: int = -1) -> Face:
        t0 = time.perf_counter_ns()
        face = Face(
            vertices=p.vertices,
            landmarks68=p.landmarks68,
            triangles=self._triangles,
            uv=self._uv,
            # with smoothing on, the pose is fitted once, to the smoothed vertices (_smooth)
            pose=umeyama(self._canonical, p.vertices) if self.smoothing is None or track_id < 0 else None,
            bbox=_bbox(p.vertices),
            score=float(score),
            crop=roi,
            track_id=track_id,
            iris=p.iris,
        )
        self.timings_ns["decode"] += time.perf_counter_ns() - t0
        return face

    def _smooth(self, faces: list[Face], t: float) -> list[Face]:
        if self.smoothing is None:
            return faces
        live = {f.track_id for f in faces}
        for filters in (self._filters, self._bs_filters):
            for tid in [tid for tid in filters if tid not in live]:
                del filters[tid]
        for f in faces:
            filt = self._filters.setdefault(f.track_id, OneEuroFilter(self.smoothing))
            p = _Points.unstack(
                filt(_Points(f.vertices, f.iris, f.landmarks68).stacked(), t).astype(np.float32)
            )
            f.vertices, f.iris, f.landmarks68 = p.vertices, p.iris, p.landmarks68
            f.pose, f.bbox = umeyama(self._canonical, p.vertices), _bbox(p.vertices)
        return faces

    def _expression(
        self, faces: list[Face], t: float | None, raw_points: dict[int, np.ndarray] | None = None
    ) -> list[Face]:
        """Blendshapes (from the raw points, then One Euro when tracking), calibration, gaze."""
        if not faces:
            return faces
        # raw_points: track id → the unsmoothed (478, 3) points (tracking); else each face's own points
        pts = np.stack(
            [raw_points[f.track_id] if raw_points else np.concatenate([f.vertices, f.iris]) for f in faces]
        )
        values = self.blendshape_model.predict(pts)
        for f, v in zip(faces, values):
            if t is not None and self.smoothing is not None:
                filt = self._bs_filters.setdefault(f.track_id, OneEuroFilter(BLENDSHAPE_SMOOTHING))
                v = np.clip(filt(v, t), 0.0, 1.0).astype(np.float32)
            if f is faces[0] and self._neutral_wanted > 0:
                self._neutral_samples.append(v)
                self._neutral_wanted -= 1
                if self._neutral_wanted == 0:
                    self.calibration.capture(np.stack(self._neutral_samples))
            f.blendshapes = self.calibration.apply(v)
            f.gaze = gaze_angles(f.vertices, f.iris, f.pose.rotation)
        return faces

    def _timed(self, stage: str, fn, *args):
        t0 = time.perf_counter_ns()
        out = fn(*args)
        self.timings_ns[stage] += time.perf_counter_ns() - t0
        return out


def pair_first_pass(model: FaceModel, first: FaceModel) -> None:
    """``first`` may place ``model``'s final crops (``Reconstructor(first_pass=...)``, a service replica's
    ``--first-pass``): the same crop size, else ConfigError; two CPU sessions that take turns stop spinning
    between their runs (``OnnxRuntimeBackend.share_cpu``)."""
    if first.input_size != model.input_size:
        raise ConfigError(
            f"first pass model {first.name} takes {first.input_size} px crops, {model.name}"
            f" {model.input_size}: they must match"
        )
    for m in (model, first):
        if hasattr(getattr(m, "backend", None), "share_cpu"):
            m.backend.share_cpu()


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
