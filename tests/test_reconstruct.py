"""The Reconstructor facade on real images with the real MediaPipe models."""

from __future__ import annotations

import numpy as np
import pytest

from face3d_live.detect.blazeface import BlazeFaceDetector
from face3d_live.geometry.one_euro import OneEuroConfig, OneEuroFilter


def test_detector_finds_the_astronaut(astronaut: np.ndarray) -> None:
    dets = BlazeFaceDetector().detect(astronaut)
    assert len(dets) == 1 and dets[0].score > 0.85
    x0, y0, x1, y1 = dets[0].box
    assert 160 < x0 < 200 and 60 < y0 < 100 and 250 < x1 < 290 and 150 < y1 < 190


def test_a_large_photo_is_detected_as_its_small_copy(astronaut: np.ndarray) -> None:
    """A 4096-px photo goes through pyrDown before INTER_AREA (detect.blazeface.shrink): the same face, in
    the same place, as the photo at its own size."""
    import cv2

    from face3d_live.detect.blazeface import shrink

    big = cv2.resize(astronaut, (4096, 4096), interpolation=cv2.INTER_CUBIC)
    small = cv2.resize(big, (192, 192), interpolation=cv2.INTER_AREA)
    assert np.abs(shrink(big, 192, 192).astype(int) - small).mean() < 3.0  # 8 gray levels would show
    for full_range in (False, True):
        ref = BlazeFaceDetector(full_range=full_range).detect(astronaut)
        dets = BlazeFaceDetector(full_range=full_range).detect(big)
        assert len(dets) == len(ref) == 1
        np.testing.assert_allclose(np.array(dets[0].box) * 512 / 4096, ref[0].box, atol=4.0)


def test_astronaut_mesh(reconstructor, astronaut: np.ndarray) -> None:
    faces = reconstructor.reconstruct(astronaut)
    assert len(faces) == 1
    f = faces[0]
    assert f.vertices.shape == (468, 3) and f.vertices.dtype == np.float32
    assert f.landmarks68.shape == (68, 3) and f.triangles.shape == (852, 3) and f.uv.shape == (468, 2)
    assert f.score > 0.9
    # all 468 points inside the (generously grown) detector box
    x0, y0, x1, y1 = BlazeFaceDetector().detect(astronaut)[0].box
    w, h = x1 - x0, y1 - y0
    v = f.vertices
    assert (v[:, 0] > x0 - 0.3 * w).all() and (v[:, 0] < x1 + 0.3 * w).all()
    assert (v[:, 1] > y0 - 0.3 * h).all() and (v[:, 1] < y1 + 0.3 * h).all()
    lm = f.landmarks68
    right_eye, left_eye = lm[36:42, :2].mean(0), lm[42:48, :2].mean(0)
    nose, mouth, chin = lm[30, :2], lm[48:68, :2].mean(0), lm[8, :2]
    # the astronaut's eyes are near (200, 101) and (248, 107) in the photo
    assert np.linalg.norm(right_eye - [200, 102]) < 10 and np.linalg.norm(left_eye - [248, 107]) < 10
    assert right_eye[0] < nose[0] < left_eye[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1] < chin[1]
    assert lm[30, 2] < lm[36, 2]  # nose tip nearer the camera than the eye corner
    yaw, pitch, roll = f.pose.euler_degrees()
    assert abs(yaw) < 30 and abs(roll) < 20


def test_given_boxes_skip_detection(reconstructor, astronaut: np.ndarray) -> None:
    faces = reconstructor.reconstruct(astronaut, boxes=[(178, 81, 272, 175)])
    assert len(faces) == 1 and reconstructor.timings_ns["detect"] == 0
    ref = reconstructor.reconstruct(astronaut)[0]
    assert np.abs(faces[0].vertices[:, :2] - ref.vertices[:, :2]).mean() < 3.0


def test_multi_face_largest_first(reconstructor, astronaut: np.ndarray) -> None:
    import cv2

    small = cv2.resize(astronaut, (380, 380))
    canvas = np.full((540, 900, 3), 90, np.uint8)
    canvas[14:526, 0:512] = astronaut
    canvas[100:480, 520:900] = small
    faces = reconstructor.reconstruct(canvas)
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    assert faces[0].bbox[2] < 512 < faces[1].bbox[0]


def test_no_face_is_an_empty_list(reconstructor) -> None:
    from skimage import data

    assert reconstructor.reconstruct(np.ascontiguousarray(data.coffee())) == []
    assert reconstructor.reconstruct(np.zeros((240, 320, 3), np.uint8)) == []


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), "img.png"])
def test_bad_image_raises_value_error(reconstructor, bad) -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        reconstructor.reconstruct(bad)


def test_smoothing_lowers_jitter_on_a_still_sequence(reconstructor, astronaut: np.ndarray) -> None:
    """A still image with a noisy face box each frame (detector noise) → mesh jitter; One Euro removes most."""
    rng = np.random.default_rng(1)
    base = np.array([178.0, 81.0, 272.0, 175.0])
    raw = []
    for _ in range(40):
        box = base + rng.normal(0, 4.0, 4)
        raw.append(reconstructor.reconstruct(astronaut, boxes=[tuple(box)])[0].vertices.astype(np.float64))
    filt = OneEuroFilter(OneEuroConfig())
    smooth = [filt(v, i / 30.0) for i, v in enumerate(raw)]
    jitter = lambda seq: float(
        np.mean([np.linalg.norm(b - a, axis=1).mean() for a, b in zip(seq[10:], seq[11:])])
    )
    assert jitter(raw) > 0.3  # the noise is real
    assert jitter(smooth) < 0.4 * jitter(raw)


# ---- v2 outputs: iris, gaze, blendshapes ------------------------------------------------------------------
@pytest.fixture(scope="module")
def r50_reconstructor():
    """The shipped face3d-r50 (FP32) on onnxruntime: the CPU path of the Python API's default model."""
    from face3d_live import Reconstructor
    from face3d_live.models.weights import R50_WEIGHTS

    pytest.importorskip("torch")  # the ONNX export
    if not R50_WEIGHTS.is_file():
        pytest.skip("face3d-r50 weights not in this checkout")
    with Reconstructor("r50", backend="onnxruntime") as rec:
        yield rec


@pytest.mark.parametrize("model", ["mediapipe", "r50"])
def test_iris_gaze_blendshapes_on_a_real_face(model: str, request, astronaut: np.ndarray) -> None:
    from face3d_live.expression.arkit import ARKIT_INDEX

    rec = request.getfixturevalue("reconstructor" if model == "mediapipe" else "r50_reconstructor")
    (f,) = rec.reconstruct(astronaut)
    assert f.iris.shape == (10, 3) and f.iris.dtype == np.float32 and np.isfinite(f.iris).all()
    # each iris centre between its eye's corners (33/133: the subject's right eye, first five points)
    for centre, (a, b) in ((0, (33, 133)), (5, (362, 263))):
        lo, hi = sorted((f.vertices[a, 0], f.vertices[b, 0]))
        assert lo < f.iris[centre, 0] < hi
        assert abs(f.iris[centre, 1] - (f.vertices[a, 1] + f.vertices[b, 1]) / 2) < 0.3 * (hi - lo)
    # she looks into the camera: both eyes within 15° of straight ahead (measured: under 7°)
    assert f.gaze.shape == (2, 2) and f.gaze.dtype == np.float32
    assert np.isfinite(f.gaze).all() and np.abs(f.gaze).max() < 15.0
    bs = f.blendshapes
    assert bs.shape == (52,) and bs.dtype == np.float32 and bs.min() >= 0.0 and bs.max() <= 1.0
    # a broad closed-mouth smile
    assert bs[ARKIT_INDEX["mouthSmileLeft"]] > 0.6 and bs[ARKIT_INDEX["mouthSmileRight"]] > 0.6
    assert bs[ARKIT_INDEX["jawOpen"]] < 0.3 and bs[ARKIT_INDEX["tongueOut"]] == 0.0


def test_track_smooths_blendshapes_and_neutral_capture_zeroes_the_resting_face(astronaut: np.ndarray) -> None:
    """A still photo with sensor noise each frame: tracked blendshapes stay steady (steadier than with
    smoothing off); capture_neutral(3) then makes that resting face read ≈ 0 everywhere."""
    from face3d_live import Reconstructor

    def steps(rec: Reconstructor, n: int = 24) -> np.ndarray:
        rng = np.random.default_rng(0)  # the same noisy frames for both runs
        rec.reset()
        seq = []
        for i in range(n):
            noisy = np.clip(astronaut + rng.normal(0, 6, astronaut.shape), 0, 255).astype(np.uint8)
            (f,) = rec.track(noisy, i / 30.0)
            assert f.blendshapes.shape == (52,) and 0.0 <= f.blendshapes.min() <= f.blendshapes.max() <= 1.0
            seq.append(f.blendshapes)
        return np.abs(np.diff(np.array(seq[8:]), axis=0))  # frame-to-frame changes once settled

    # the still without mirror averaging: the tracked frames below are compared with it (track never flips)
    with Reconstructor("mediapipe", flip_stills=False) as rec:
        still = rec.reconstruct(astronaut)[0].blendshapes
        smooth = steps(rec)
        saved, rec.smoothing = rec.smoothing, None
        raw = steps(rec)
        rec.smoothing = saved
        assert smooth.max() < 0.05 and smooth.mean() < 0.6 * raw.mean()

        rec.reset()
        for i in range(6):  # tracking settles on the mesh crop (the first frame's crop is the detector's)
            (f,) = rec.track(astronaut, i / 30.0)
        assert not rec.calibration.captured and np.abs(f.blendshapes - still).max() < 0.05
        rec.capture_neutral(frames=3)
        assert rec.capturing_neutral
        for i in range(6, 9):
            (f,) = rec.track(astronaut, i / 30.0)
        assert rec.calibration.captured and not rec.capturing_neutral
        # the resting face (here: the smile) is the neutral now
        assert np.abs(rec.calibration.neutral - still).max() < 0.05
        for i in range(9, 14):
            (f,) = rec.track(astronaut, i / 30.0)
            assert f.blendshapes.max() < 0.05
        rec.calibration.reset()
        (f,) = rec.track(astronaut, 14 / 30.0)
        assert np.abs(f.blendshapes - still).max() < 0.05


def test_borrowed_model_is_not_closed(astronaut):
    """A Reconstructor given a loaded FaceModel uses it and leaves closing it to its owner (scale-out workers
    build one Reconstructor per video around one model)."""
    from face3d_live import Reconstructor
    from face3d_live.models.registry import create_model

    model = create_model("mediapipe")
    try:
        with Reconstructor(model) as rec:
            assert rec.model is model
            first = rec.reconstruct(astronaut)
        with Reconstructor(model) as rec:  # still open after the first Reconstructor closed
            again = rec.reconstruct(astronaut)
        assert len(first) == len(again) == 1
        np.testing.assert_allclose(first[0].vertices, again[0].vertices, atol=1e-3)
    finally:
        model.close()


def test_mirrored_crop_answers_map_back_onto_the_direct_answer(astronaut):
    """merge_flipped's partner maps and x flip are right: the model's answer for the mirrored crop, mapped
    back, lands where its answer for the crop itself does (wrong partners would be tens of px off)."""
    from face3d_live import Reconstructor
    from face3d_live.models.output import merge_flipped

    with Reconstructor("r50-int8", smoothing=None, flip_stills=False) as rec:
        face = rec.reconstruct(astronaut)[0]
        crop = face.crop.warp(astronaut)[None]
        both = rec.model.predict(np.concatenate([crop, crop[:, :, ::-1]]))
        direct = rec.model.predict(crop)
    merged = merge_flipped(both, crop.shape[2])
    assert len(merged) == 1
    for name, tol in (("vertices", 2.5), ("iris", 2.5), ("landmarks68", 3.0)):
        got, want = getattr(merged, name)[0], getattr(direct, name)[0]
        err = np.linalg.norm(got[:, :2] - want[:, :2], axis=1)
        assert err.mean() < tol, (name, err.mean())
    assert abs(float(merged.scores[0]) - float(direct.scores[0])) < 0.05


def test_stills_average_the_final_pass_with_the_mirrored_crop(astronaut):
    from face3d_live import Reconstructor

    with Reconstructor("r50-int8", smoothing=None) as rec:
        assert rec.flip_stills
        batches = []
        predict = rec.model.predict

        seen = []

        def counting(crops):  # the real model, its batch sizes and crops recorded
            batches.append(len(crops))
            seen.append(crops.copy())
            return predict(crops)

        rec.model.predict = counting
        flipped = rec.reconstruct(astronaut)[0]
        # the first pass (it only places the second's crop) is not mirrored: its one crop goes with a blank one
        # (onnxruntime answers a batch of one through other kernels: R50FaceModel.steady_batch); the second
        # pass's crop goes with its mirror
        assert rec.model.steady_batch == 2
        assert batches == [2, 2] and not seen[0][1].any()
        np.testing.assert_array_equal(seen[1][1], seen[1][0][:, ::-1])
        rec.flip_stills = False
        plain = rec.reconstruct(astronaut)[0]
        assert batches[2:] == [2, 1]
        rec.track(astronaut, 0.0)
        assert batches[4:] == [1]  # video never flips
    err = np.linalg.norm(flipped.vertices[:, :2] - plain.vertices[:, :2], axis=1).mean()
    assert 0 < err < 3.0
    assert flipped.landmarks68.shape == (68, 3) and flipped.blendshapes.shape == (52,)


def test_a_batch_of_photos_gives_what_each_photo_gives_alone(astronaut: np.ndarray) -> None:
    """reconstruct_batch (the service's path: one model pass per stage for all the images' faces) answers as
    reconstruct does for each image: a one-face photo, a two-face canvas, a photo without a face."""
    import cv2

    from face3d_live import Reconstructor

    canvas = np.full((540, 900, 3), 90, np.uint8)
    canvas[14:526, 0:512] = astronaut
    canvas[100:480, 520:900] = cv2.resize(astronaut, (380, 380))
    images = [astronaut, canvas, np.zeros((240, 320, 3), np.uint8), np.ascontiguousarray(astronaut[:, ::-1])]
    with Reconstructor("r50-int8", smoothing=None) as rec:
        alone = [rec.reconstruct(im) for im in images]
        together = rec.reconstruct_batch(images)
        given = rec.reconstruct_batch(images[:2], [rec._detect(im, True) for im in images[:2]])
        with pytest.raises(ValueError, match="2 detection lists for 1 images"):
            rec.reconstruct_batch(images[:1], [[], []])
    assert [len(f) for f in together] == [len(f) for f in alone] == [1, 2, 0, 1]
    for a_faces, b_faces in zip(alone, together):
        for a, b in zip(a_faces, b_faces):
            assert np.abs(a.vertices - b.vertices).max() < 0.05  # batch size changes rounding only
            assert np.abs(a.landmarks68 - b.landmarks68).max() < 0.05
            assert np.abs(a.blendshapes - b.blendshapes).max() < 0.01
            assert np.allclose(a.pose.rotation, b.pose.rotation, atol=1e-3)
            assert a.bbox == pytest.approx(b.bbox, abs=0.05)
    assert np.abs(given[1][1].vertices - alone[1][1].vertices).max() < 0.05


def test_a_lighter_first_pass_places_the_final_crop(astronaut: np.ndarray) -> None:
    """``first_pass``: another model runs a photo's first pass (it only places the final crop), the model
    itself the final pass; the face lands where the model's own two passes put it, both onnxruntime sessions
    stop spinning between runs (two spinning pools taking turns halve each other's speed), video is not
    touched, and a first-pass model of another crop size is refused."""
    from face3d_live import Reconstructor
    from face3d_live.errors import ConfigError

    with Reconstructor("r50-int8", smoothing=None) as rec:
        own = rec.reconstruct(astronaut)[0]
        assert "no spinning" not in rec.model.backend.detail  # a lone session keeps spinning
    with Reconstructor("r50-int8", smoothing=None, first_pass="r50-lite") as rec:
        calls: list[tuple[str, int]] = []
        for label, model in (("first", rec.first_model), ("final", rec.model)):

            def recording(crops, label=label, predict=model.predict):  # the real models, their calls noted
                calls.append((label, len(crops)))
                return predict(crops)

            model.predict = recording
        lighter = rec.reconstruct(astronaut)[0]
        # the first pass padded (steady_batch), the final one mirrored
        assert calls == [("first", 2), ("final", 2)]
        assert rec.first_model.name == "r50-lite"
        assert all("no spinning" in m.backend.detail for m in (rec.model, rec.first_model))
        rec.track(astronaut, 0.0)
        assert [c for c, _ in calls[2:]] == ["final"]  # video: the model alone
    err = np.linalg.norm(lighter.vertices[:, :2] - own.vertices[:, :2], axis=1)
    assert err.mean() < 1.0, err.mean()  # a fraction of a pixel: the final crops differ slightly
    assert lighter.landmarks68.shape == (68, 3) and lighter.score > 0.5
    with pytest.raises(ConfigError, match="must match"):
        Reconstructor("r50-int8", first_pass="mediapipe")


def test_one_pass_runs_the_final_pass_from_the_detection(astronaut: np.ndarray) -> None:
    """``passes=1``: one model call a photo (the final pass, mirrored, on the detection's ROI) instead of two;
    the face lands within a pixel or two of the two passes' (0.5 px mean on this photo), video is not touched,
    and settings that cannot work are refused up front."""
    from face3d_live import Reconstructor
    from face3d_live.detect.tracker import roi_from_detection
    from face3d_live.errors import ConfigError

    with Reconstructor("r50-int8", smoothing=None) as rec:
        two = rec.reconstruct(astronaut)[0]
        tracked_two = rec.track(astronaut, 0.0)[0]
    with Reconstructor("r50-int8", smoothing=None, passes=1) as rec:
        calls: list[int] = []

        def recording(crops, predict=rec.model.predict):  # the real model, its calls noted
            calls.append(len(crops))
            return predict(crops)

        rec.model.predict = recording
        one = rec.reconstruct(astronaut)[0]
        assert calls == [2]  # the final pass and its mirror, in one call
        det = rec._detect(astronaut, True)[0]
        assert one.crop == roi_from_detection(det, rec.tracker.config.margin, rec.model.input_size)
        tracked_one = rec.track(astronaut, 0.0)[0]
    err = np.linalg.norm(one.vertices[:, :2] - two.vertices[:, :2], axis=1)
    assert err.mean() < 1.5 and err.max() < 5.0, (err.mean(), err.max())
    assert one.crop != two.crop and one.score > 0.5 and one.landmarks68.shape == (68, 3)
    np.testing.assert_array_equal(tracked_one.vertices, tracked_two.vertices)  # video has no passes to skip
    with pytest.raises(ConfigError, match="1 or 2 passes"):
        Reconstructor("r50-int8", passes=3)
    with pytest.raises(ConfigError, match="needs passes=2"):
        Reconstructor("r50-int8", passes=1, first_pass="r50-lite")
