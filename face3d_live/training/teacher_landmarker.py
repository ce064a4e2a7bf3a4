"""Blendshape and iris teacher: MediaPipe's Face Landmarker bundle (478 points + 52 blendshapes), cached.

The two models are read straight out of the ``face_landmarker.task`` zip in ``../shared/teachers/mediapipe``
(a training teacher only: nothing shipped needs it) and run with ai-edge-litert, one thread each:

- ``face_landmarks_detector.tflite``: (1, 256, 256, 3) float RGB in [0, 1] → 478 × (x, y, z) in crop px of
  the 256 input (z: relative depth in the same units, smaller = closer) and a presence logit. Measured
  against the Tasks API ``FaceLandmarker`` on real images: [0, 1] RGB is the input that reproduces it
  (``--check 16``: on the Tasks API's own tracking crop our points are 0.69 % of the eye distance from its
  points on average, 1.15 % at worst, 0.46 px; z 0.27 px; with [-1, 1] input ~1.5-2× further off, with BGR
  ~1.2× on colour images). Its z has the 468-point teacher's sign and scale (two-pass meshes of the same
  61 crops: z correlation median +0.998, min +0.93; z std ratio median 0.99, 5-95 % 0.94-1.04).
- ``face_blendshapes.tflite``: (1, 146, 2) = x, y in *image pixels* of the 146 points
  ``BLENDSHAPE_SUBSET`` (``kLandmarksSubsetIdxs``) → 52 scores in ``MEDIAPIPE_BLENDSHAPES`` order; stored
  here in ARKit order (``face3d_live.expression.arkit``), tongueOut = 0. Fed the Tasks API's own points
  it reproduces the Tasks API's scores to 1.4e-6 (max |diff| over 16 faces).

Images are labelled with ``teacher.teacher_two_pass``'s protocol (whole image, then a crop re-centred on
the first mesh). One cache per source, ``<cache>/landmarker-<stem>.npz``: ``names`` (N,) sorted,
``points`` (N, 478, 3) float32 in source-image px (z same scale, +z away from the camera, like the 468
teacher), ``blendshapes`` (N, 52) float32 ARKit order, ``score`` / ``score1`` (N,) presence of the second
/ first pass, ``failed`` (N,) bool (as teacher.py: presence < 0.5 or a degenerate mesh), ``held_out``
(N,) bool (``is_held_out``) and ``source``. Videos are tracked frame to frame (first frame from BlazeFace,
then each frame cropped around the previous frame's mesh) into ``<cache>/landmarker-video-<name>.npz``:
``frame`` (N,), ``points``, ``blendshapes``, ``score``, ``source``.

CLI: ``python -m face3d_live.training.teacher_landmarker --data ../shared/data --cache .cache/teacher``
(``--compact DIR``: also ~1/5-size copies of the image caches, 47 MB for all four, for a training machine;
``--check N``: the Tasks API comparison).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from face3d_live.errors import ModelError, SourceError
from face3d_live.expression.arkit import mediapipe_to_arkit
from face3d_live.geometry.crop import CropTransform
from face3d_live.training.teacher import (
    MIN_TEACHER_SCORE,
    TeacherLabels,
    degenerate,
    is_held_out,
    iter_source,
    teacher_two_pass,
)

log = logging.getLogger(__name__)

LANDMARKS_MEMBER = "face_landmarks_detector.tflite"
BLENDSHAPES_MEMBER = "face_blendshapes.tflite"
N_POINTS = 478
INPUT_SIZE = 256

# kLandmarksSubsetIdxs, mediapipe/tasks/cc/vision/face_landmarker/face_blendshapes_graph.cc
BLENDSHAPE_SUBSET: tuple[int, ...] = (
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67, 70,
    78, 80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145, 146, 148, 149,
    150, 152, 153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176, 178, 181, 185, 191, 195,
    197, 234, 246, 249, 251, 263, 267, 269, 270, 276, 282, 283, 284, 285, 288, 291, 293, 295, 296, 297, 300,
    308, 310, 311, 312, 314, 317, 318, 321, 323, 324, 332, 334, 336, 338, 356, 361, 362, 365, 373, 374, 375,
    377, 378, 379, 380, 381, 382, 384, 385, 386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454,
    466, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477,
)  # fmt: skip

SOURCES = (
    "faces/aflw_crops-00.tar",
    "faces/aflw_crops-01.tar",
    "faces/aflw_crops-02.tar",
    "faces/expressions-00.tar",
)


def default_task_path(data_dir: Path | None = None) -> Path:
    """``<data>/../teachers/mediapipe/face_landmarker.task`` (data defaults to ../shared/data)."""
    from face3d_live.training.data import default_data_dir

    return Path(data_dir or default_data_dir()).parent / "teachers" / "mediapipe" / "face_landmarker.task"


class _Tflite:
    """A tflite model from bytes (no extraction needed), one thread; ``run`` returns outputs by name order."""

    def __init__(self, content: bytes, name: str, num_threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._interp = Interpreter(model_content=content, num_threads=num_threads)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load {name}: {exc}") from exc
        self._interp.allocate_tensors()
        inp = self._interp.get_input_details()[0]
        self.input_index = inp["index"]
        self.input_shape = tuple(int(v) for v in inp["shape"])
        self.outputs = {
            o["name"]: (o["index"], tuple(int(v) for v in o["shape"]))
            for o in self._interp.get_output_details()
        }

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self._interp.set_tensor(self.input_index, x)
        self._interp.invoke()
        return {name: self._interp.get_tensor(i) for name, (i, _) in self.outputs.items()}


class LandmarkerTeacher:
    """The Face Landmarker's landmark and blendshape models.

    ``predict(crops uint8 (N, 256, 256, 3) RGB) -> (points (N, 478, 3) crop px, scores (N,))`` and
    ``blendshapes(points (N, 478, 2+) image px) -> (N, 52)`` in MediaPipe order (``_neutral`` first).
    """

    name = "landmarker"
    input_size = INPUT_SIZE

    def __init__(self, task_path: Path | None = None, num_threads: int = 1) -> None:
        path = Path(task_path or default_task_path())
        if not path.is_file():
            raise ModelError(
                f"{path} not found: the Face Landmarker bundle lives in ../shared/teachers/mediapipe"
            )
        with zipfile.ZipFile(path) as z:
            self.landmarks = _Tflite(z.read(LANDMARKS_MEMBER), LANDMARKS_MEMBER, num_threads)
            self.blend = _Tflite(z.read(BLENDSHAPES_MEMBER), BLENDSHAPES_MEMBER, num_threads)
        if self.landmarks.input_shape != (1, INPUT_SIZE, INPUT_SIZE, 3):
            raise ModelError(f"{LANDMARKS_MEMBER}: unexpected input {self.landmarks.input_shape}")
        # outputs told apart by size: 478*3 landmarks, then two (1, ..., 1) scalars; the presence logit is
        # the 4-d one (Identity_1), measured ~+10..+20 on faces; the (1, 1) one is not a presence score
        outs = self.landmarks.outputs
        self._pts_name = next(n for n, (_, s) in outs.items() if int(np.prod(s)) == N_POINTS * 3)
        self._flag_name = next(n for n, (_, s) in outs.items() if int(np.prod(s)) == 1 and len(s) == 4)
        self.subset = np.asarray(BLENDSHAPE_SUBSET, np.int64)

    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = crops.shape[0]
        pts = np.empty((n, N_POINTS, 3), np.float32)
        scores = np.empty((n,), np.float32)
        for i in range(n):  # fixed batch of 1
            out = self.landmarks.run(crops[i : i + 1].astype(np.float32) * (1.0 / 255.0))
            pts[i] = out[self._pts_name].reshape(N_POINTS, 3)
            scores[i] = 1.0 / (1.0 + np.exp(-float(out[self._flag_name].ravel()[0])))
        return pts, scores

    def blendshapes(self, points: np.ndarray) -> np.ndarray:
        """MediaPipe-order scores from image-px points (any pixel frame: the Tasks graph feeds image px)."""
        points = np.asarray(points, np.float32)
        out = np.empty((points.shape[0], 52), np.float32)
        for i, p in enumerate(points):
            x = np.ascontiguousarray(p[self.subset, :2])[None]
            out[i] = next(iter(self.blend.run(x).values())).reshape(52)
        return out

    def close(self) -> None:
        pass


def two_pass(model: LandmarkerTeacher, img: np.ndarray) -> tuple[np.ndarray, float, float]:
    """teacher.teacher_two_pass's protocol for 478 points → (points (478, 3) image px, first-pass score,
    second-pass score)."""
    return teacher_two_pass(model.predict, model.input_size, img)


_COUNTER = None


def _init_worker(counter) -> None:
    global _COUNTER
    _COUNTER = counter


def _with_progress(result, source: Path, counter, progress: bool) -> list:
    """Wait for the pool, showing a tqdm bar fed by the workers' shared image counter."""
    from tqdm import tqdm

    with tqdm(desc=f"landmarker {Path(source).name}", disable=not progress, unit="img") as bar:
        while not result.ready():
            result.wait(1.0)
            bar.update(counter.value - bar.n)
    return result.get()


# ----------------------------------------------------------------------------------------------- images


def _label_worker(
    args: tuple[str, str, int, int, int],
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray, list]:
    source, task, worker, workers, limit = args
    model = LandmarkerTeacher(Path(task), num_threads=1)
    names, pts, blend, scores, scores1, shapes = [], [], [], [], [], []
    for i, (name, img) in enumerate(iter_source(Path(source))):
        if limit and i >= limit:
            break
        if i % workers != worker:
            continue
        v, s1, s = two_pass(model, img)
        if _COUNTER is not None and len(names) % 20 == 0:
            with _COUNTER.get_lock():
                _COUNTER.value += 20
        names.append(name)
        pts.append(v.astype(np.float32))
        blend.append(model.blendshapes(v[None])[0])
        scores.append(s)
        scores1.append(s1)
        shapes.append(img.shape[:2])
    model.close()
    return (
        names,
        np.asarray(pts, np.float32).reshape(-1, N_POINTS, 3),
        np.asarray(blend, np.float32).reshape(-1, 52),
        np.float32(scores),
        np.float32(scores1),
        shapes,
    )


@dataclass(frozen=True)
class LandmarkerLabels(TeacherLabels):
    """Cached landmarker labels of one image source (see module docstring): ``TeacherLabels`` with 478-point
    ``verts`` (also ``points``) and ``blendshapes`` (N, 52) in ARKit order."""

    blendshapes: np.ndarray

    @property
    def points(self) -> np.ndarray:
        return self.verts


def cache_path(cache_dir: Path, source: Path) -> Path:
    source = Path(source)
    stem = source.name[:-4] if source.name.endswith(".tar") else source.name
    return Path(cache_dir) / f"landmarker-{stem}.npz"


def video_cache_path(cache_dir: Path, video: Path) -> Path:
    return Path(cache_dir) / f"landmarker-video-{Path(video).stem}.npz"


def load_labels(path: Path) -> LandmarkerLabels:
    """A cache written by ``label_source`` or ``save_compact``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "q" in z.files:
                points = z["lo"][:, None] + z["q"].astype(np.float32) * z["step"][:, None]
                blend = z["blendshapes"].astype(np.float32)
            else:
                points, blend = z["points"], z["blendshapes"]
            return LandmarkerLabels(
                names=z["names"], verts=points, blendshapes=blend, score=z["score"],
                score1=z["score1"], failed=z["failed"], held_out=z["held_out"], source=str(z["source"]),
            )  # fmt: skip
    except (OSError, KeyError, ValueError) as exc:
        raise SourceError(
            f"landmarker label cache {path} is unreadable ({exc}); delete it to relabel"
        ) from exc


def save_compact(labels: LandmarkerLabels, path: Path) -> Path:
    """The same labels in ~1/5 of the size, to ship to a training machine (teacher.save_compact's scheme):
    points as uint8 steps of each face's own x/y/z range (max error range/510, ≈ 0.2 px on a 120 px crop),
    blendshapes as float16 (step ≤ 5e-4), zip-compressed. ``load_labels`` reads both forms."""
    v = labels.points.astype(np.float32)
    lo = v.min(1)
    step = np.maximum(v.max(1) - lo, 1e-6) / 255.0
    q = np.round((v - lo[:, None]) / step[:, None]).astype(np.uint8)
    np.savez_compressed(
        path, names=labels.names, q=q, lo=lo, step=step, blendshapes=labels.blendshapes.astype(np.float16),
        score=labels.score, score1=labels.score1, failed=labels.failed, held_out=labels.held_out,
        source=labels.source,
    )  # fmt: skip
    return Path(path)


def label_source(
    source: Path,
    cache_dir: Path,
    task: Path | None = None,
    workers: int = 1,
    limit: int = 0,
    force: bool = False,
    progress: bool = True,
) -> LandmarkerLabels:
    """Label every image of ``source`` once (two passes + blendshapes); later calls load the cache."""
    out = cache_path(cache_dir, source)
    if out.exists() and not force:
        labels = load_labels(out)
        if not limit or len(labels) == limit:
            return labels
    out.parent.mkdir(parents=True, exist_ok=True)
    task = Path(task or default_task_path())
    jobs = [(str(source), str(task), w, workers, limit) for w in range(workers)]
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")  # the tflite interpreter does not survive fork
    counter = ctx.Value("i", 0)
    # a pool even for one worker: the main process only feeds the tqdm bar
    with ctx.Pool(workers, initializer=_init_worker, initargs=(counter,)) as pool:
        parts = _with_progress(pool.map_async(_label_worker, jobs), source, counter, progress)
    names = [n for p in parts for n in p[0]]
    order = np.argsort(np.array(names, dtype=object), kind="stable")
    points = np.concatenate([p[1] for p in parts])[order]
    blend = mediapipe_to_arkit(np.concatenate([p[2] for p in parts])[order])
    score = np.concatenate([p[3] for p in parts])[order]
    score1 = np.concatenate([p[4] for p in parts])[order]
    shapes = [s for p in parts for s in p[5]]
    shapes = [shapes[i] for i in order]
    names = np.array([names[i] for i in order])
    failed = np.array(
        [s < MIN_TEACHER_SCORE or degenerate(v[:468], sh) for v, s, sh in zip(points, score, shapes)], bool
    )
    held = np.array([is_held_out(str(n)) for n in names], bool)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(
        tmp, names=names, points=points, blendshapes=blend, score=score, score1=score1, failed=failed,
        held_out=held, source=str(source),
    )  # fmt: skip
    tmp.replace(out)
    dt = time.perf_counter() - t0
    log.info(
        "landmarker labels: %s: %d images in %.0f s (%.1f ms each), %d failed, %d held out",
        out, len(names), dt, 1000 * dt / max(len(names), 1), failed.sum(), held.sum(),
    )  # fmt: skip
    return load_labels(out)


# ----------------------------------------------------------------------------------------------- videos


def label_video(
    video: Path, cache_dir: Path, task: Path | None = None, force: bool = False, progress: bool = True
) -> Path:
    """Track the largest face through every frame of ``video`` (BlazeFace on the first frame and after a
    loss, else a crop around the previous frame's mesh, as the live tracker does)."""
    import cv2
    from tqdm import tqdm

    from face3d_live.detect.blazeface import BlazeFaceDetector
    from face3d_live.detect.tracker import roi_from_detection, roi_from_mesh

    out = video_cache_path(cache_dir, video)
    if out.exists() and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    model = LandmarkerTeacher(task, num_threads=1)
    detector = BlazeFaceDetector(num_threads=1)
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise SourceError(f"cannot open video {video}")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    frames, pts, blend, scores = [], [], [], []
    roi = None
    t0 = time.perf_counter()
    with tqdm(total=total, desc=f"landmarker {Path(video).name}", disable=not progress, unit="frame") as bar:
        idx = -1
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            idx += 1
            bar.update(1)
            img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            fresh = roi is None
            if fresh:
                dets = detector.detect(img)
                if not dets:
                    continue
                det = max(dets, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
                roi = roi_from_detection(det, 1.5, INPUT_SIZE)
            v, s = model.predict(roi.warp(img)[None])
            v = roi.to_image(v[0])
            if fresh and s[0] >= MIN_TEACHER_SCORE:  # a detector box is coarse: re-run on the mesh's crop
                roi = roi_from_mesh(v, 1.5, INPUT_SIZE)
                v, s = model.predict(roi.warp(img)[None])
                v = roi.to_image(v[0])
            if s[0] < MIN_TEACHER_SCORE:
                roi = None  # lost: detect again on the next frame
                continue
            frames.append(idx)
            pts.append(v.astype(np.float32))
            scores.append(float(s[0]))
            blend.append(model.blendshapes(v[None])[0])
            roi = roi_from_mesh(v, 1.5, INPUT_SIZE)
    cap.release()
    tmp = out.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        frame=np.asarray(frames, np.int32),
        points=np.asarray(pts, np.float32).reshape(-1, N_POINTS, 3),
        blendshapes=mediapipe_to_arkit(np.asarray(blend, np.float32).reshape(-1, 52)),
        score=np.asarray(scores, np.float32),
        source=str(video),
    )
    tmp.replace(out)
    log.info(
        "landmarker video labels: %s: %d of %d frames tracked in %.0f s", out, len(frames), idx + 1,
        time.perf_counter() - t0,
    )  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------- protocol


def mediapipe_tracking_roi(points: np.ndarray) -> CropTransform:
    """The Tasks API's ROI for the next frame from this frame's 478 points (face_landmarks_detector_graph):
    the points' axis-aligned box centre, side 1.5 × its longer side, rotated to level 33 → 263."""
    lo, hi = points[:, :2].min(0), points[:, :2].max(0)
    d = points[263, :2] - points[33, :2]
    size = 1.5 * float(max(hi - lo))
    return CropTransform(tuple((lo + hi) / 2.0), size, float(np.arctan2(d[1], d[0])), INPUT_SIZE)


def _tasks_points(result, w: int, h: int) -> np.ndarray:
    """A Tasks API result's first face as (478, 3) image px (its z is normalised by the image width)."""
    return np.array([[p.x * w, p.y * h, p.z * w] for p in result.face_landmarks[0]])


def compare_with_tasks_api(images: list[np.ndarray], task: Path | None = None) -> dict[str, float]:
    """Check the teacher against mediapipe's Tasks API ``FaceLandmarker`` on real images.

    Landmarks on the same crop: the Tasks API in VIDEO mode is given the image twice (10 000 s apart, so its
    landmark smoothing barely acts); its second result comes from the ROI of its first (``mediapipe_tracking_roi``),
    which is the crop our model gets here. Blendshapes: our blendshape model fed the Tasks API's own 478
    points must reproduce its scores. Distances in % of the outer-eye-corner distance and in px.
    """
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    task = Path(task or default_task_path())
    model = LandmarkerTeacher(task)
    xy, xy_px, z_px, bdiff = [], [], [], []
    for img in images:
        h, w = img.shape[:2]
        opts = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(task)), output_face_blendshapes=True,
            running_mode=vision.RunningMode.VIDEO, num_faces=1,
        )  # fmt: skip
        with vision.FaceLandmarker.create_from_options(opts) as lm:
            frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(img))
            first = lm.detect_for_video(frame, 0)
            if not first.face_landmarks:
                continue
            second = lm.detect_for_video(frame, 10_000_000)
        ref1, ref = _tasks_points(first, w, h), _tasks_points(second, w, h)
        ref_b = np.array([c.score for c in second.face_blendshapes[0]], np.float32)
        roi = mediapipe_tracking_roi(ref1)
        v, _ = model.predict(roi.warp(img)[None])
        v = roi.to_image(v[0])
        eye = float(np.linalg.norm(ref[33, :2] - ref[263, :2]))
        d = np.linalg.norm(v[:, :2] - ref[:, :2], axis=1)
        xy.append(d.mean() / eye)
        xy_px.append(d.mean())
        z_px.append(np.abs(v[:, 2] - ref[:, 2]).mean())
        bdiff.append(np.abs(model.blendshapes(ref[None])[0] - ref_b).max())
    return {
        "faces": len(xy),
        "xy_mean_pct_eye": 100 * float(np.mean(xy)),
        "xy_max_pct_eye": 100 * float(np.max(xy)),
        "xy_mean_px": float(np.mean(xy_px)),
        "z_mean_px": float(np.mean(z_px)),
        "blendshape_max_abs_diff": float(np.max(bdiff)),
    }


def _sample_images(data: Path, n: int) -> list[np.ndarray]:
    """n real images for the check: spread over the expression set and AFLW, plus each clip's first frame."""
    import cv2

    out = []
    for rel, step in (("faces/expressions-00.tar", 700), ("faces/aflw_crops-00.tar", 900)):
        for i, (_, img) in enumerate(iter_source(data / rel)):
            if i % step == 0:
                out.append(img)
            if len(out) >= n // 2 * (1 + rel.startswith("faces/aflw")):
                break
    for video in sorted((data / "videos").glob("*.mp4")):
        ok, bgr = cv2.VideoCapture(str(video)).read()
        if ok:
            out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="shared data folder (default ../shared/data)")
    ap.add_argument("--cache", type=Path, default=Path(".cache/teacher"))
    ap.add_argument(
        "--task", type=Path, default=None, help="face_landmarker.task (default <data>/../teachers/...)"
    )
    ap.add_argument(
        "--workers", type=int, default=1, help="labelling processes (1 unless the machine is idle)"
    )
    ap.add_argument("--limit", type=int, default=0, help="label only the first N images of each source")
    ap.add_argument("--force", action="store_true", help="relabel even when a cache exists")
    ap.add_argument(
        "--sources",
        type=Path,
        nargs="*",
        default=None,
        help="tar shards / image folders (default: <data>/faces/...)",
    )
    ap.add_argument("--check", type=int, default=0, help="only compare N images with the Tasks API and exit")
    ap.add_argument(
        "--compact", type=Path, default=None, help="also write ~1/5-size copies of the image caches here"
    )
    ap.add_argument("--no-videos", action="store_true")
    ap.add_argument("--no-images", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from face3d_live.training.data import default_data_dir

    data = Path(args.data or default_data_dir())
    task = Path(args.task or default_task_path(data))
    if args.check:
        log.info("Tasks API check: %s", compare_with_tasks_api(_sample_images(data, args.check), task))
        return
    if not args.no_videos:
        for video in sorted((data / "videos").glob("*.mp4")):
            label_video(video, args.cache, task, force=args.force)
    if not args.no_images:
        sources = args.sources if args.sources is not None else [data / rel for rel in SOURCES]
        for source in sources:
            labels = label_source(
                source, args.cache, task, workers=args.workers, limit=args.limit, force=args.force
            )
            if args.compact:
                args.compact.mkdir(parents=True, exist_ok=True)
                log.info("compact copy: %s", save_compact(labels, cache_path(args.compact, source)))


if __name__ == "__main__":
    main()
