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
