"""Expression: ARKit names and the MediaPipe map, the blendshape network on real faces (the Face Landmarker
teacher gives the 478 points; skipped without ../shared), neutral calibration, gaze signs."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from face3d_live.expression.arkit import (
    ARKIT_BLENDSHAPES,
    ARKIT_INDEX,
    MEDIAPIPE_BLENDSHAPES,
    MEDIAPIPE_TO_ARKIT,
    mediapipe_to_arkit,
)


def test_arkit_names():
    assert len(ARKIT_BLENDSHAPES) == 52 and len(set(ARKIT_BLENDSHAPES)) == 52
    # ARFaceAnchor.BlendShapeLocation / Unreal EARFaceBlendShape order
    spots = {0: "eyeBlinkLeft", 1: "eyeLookDownLeft", 6: "eyeWideLeft", 7: "eyeBlinkRight", 13: "eyeWideRight",
             14: "jawForward", 15: "jawLeft", 16: "jawRight", 17: "jawOpen", 18: "mouthClose", 23: "mouthSmileLeft",
             41: "browDownLeft", 46: "cheekPuff", 49: "noseSneerLeft", 51: "tongueOut"}  # fmt: skip
    for i, name in spots.items():
        assert ARKIT_BLENDSHAPES[i] == name
    import face3d_live

    assert face3d_live.ARKIT_BLENDSHAPES is ARKIT_BLENDSHAPES
    assert "ARKIT_BLENDSHAPES" in face3d_live.__all__


def test_mediapipe_map():
    assert len(MEDIAPIPE_BLENDSHAPES) == 52 and MEDIAPIPE_BLENDSHAPES[0] == "_neutral"
    assert list(MEDIAPIPE_BLENDSHAPES[1:]) == sorted(MEDIAPIPE_BLENDSHAPES[1:])
    assert "tongueOut" not in MEDIAPIPE_BLENDSHAPES
    # kBlendshapeNames spot checks (face_blendshapes_graph.cc)
    assert MEDIAPIPE_BLENDSHAPES[9] == "eyeBlinkLeft" and MEDIAPIPE_BLENDSHAPES[25] == "jawOpen"
    scores = np.arange(52, dtype=np.float32)[None] / 100.0
    ark = mediapipe_to_arkit(scores)[0]
    for j, name in enumerate(MEDIAPIPE_BLENDSHAPES[1:], start=1):
        assert ark[ARKIT_INDEX[name]] == pytest.approx(scores[0, j])
        assert MEDIAPIPE_TO_ARKIT[j] == ARKIT_INDEX[name]
    assert ark[ARKIT_INDEX["tongueOut"]] == 0.0 and MEDIAPIPE_TO_ARKIT[0] == -1


# --------------------------------------------------------------------------------------- real faces

# held-out expression-set crops (teacher jawOpen 0.65 / 0.00, smile 0.98 / 0.00)
OPEN_MOUTH, CLOSED_MOUTH = "Dan_Monson_0001.jpg", "Dileep_58.jpg"
HAPPY, NEUTRAL = "Marissa_Jaret_Winokur_0001.jpg", "Jose_Maria_Aznar_0023.jpg"


@pytest.fixture(scope="module")
def teacher_points(data_dir: Path) -> dict[str, np.ndarray]:
    """The Face Landmarker teacher's 478 points (two passes) of a few named real crops."""
    from face3d_live.training.teacher_landmarker import LandmarkerTeacher, default_task_path, two_pass

    task = default_task_path(data_dir)
    tar_path = data_dir / "faces" / "expressions-00.tar"
    if not task.is_file() or not tar_path.is_file():
        pytest.skip("Face Landmarker bundle or expression set not in ../shared")
    model = LandmarkerTeacher(task)
    out = {}
    with tarfile.open(tar_path) as tar:
        for m in tar:
            name = Path(m.name).name
            if name in (OPEN_MOUTH, CLOSED_MOUTH, HAPPY, NEUTRAL):
                buf = np.frombuffer(tar.extractfile(m).read(), np.uint8)
                img = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                out[name] = two_pass(model, img)[0]
    assert len(out) == 4
    return out


def test_blendshape_model_on_real_faces(teacher_points):
    from face3d_live.expression.blendshapes import BlendshapeModel

    model = BlendshapeModel()
    names = [OPEN_MOUTH, CLOSED_MOUTH, HAPPY, NEUTRAL]
    bs = model.predict(np.stack([teacher_points[n] for n in names]))
    assert bs.shape == (4, 52) and bs.dtype == np.float32
    assert bs.min() >= 0.0 and bs.max() <= 1.0
    assert np.all(bs[:, ARKIT_INDEX["tongueOut"]] == 0.0)
    jaw = bs[:, ARKIT_INDEX["jawOpen"]]
    smile = bs[:, [ARKIT_INDEX["mouthSmileLeft"], ARKIT_INDEX["mouthSmileRight"]]].mean(1)
    assert jaw[0] > jaw[1] + 0.3, jaw
    assert smile[2] > 0.6 and smile[3] < 0.2, smile
    # one face at a time gives the same as the batch; points with 1 px of noise barely move the result
    assert np.allclose(model.predict(teacher_points[HAPPY]), bs[2], atol=1e-5)
    noisy = teacher_points[HAPPY] + np.random.default_rng(0).normal(size=(478, 3))
    assert np.abs(model.predict(noisy) - bs[2]).max() < 0.2


def test_blendshape_model_pose_invariance(teacher_points):
    """A similarity of the points (in-plane rotation, scale, shift) leaves the expression unchanged."""
    from face3d_live.expression.blendshapes import BlendshapeModel

    model = BlendshapeModel()
    p = teacher_points[OPEN_MOUTH].astype(np.float64)
    a = np.radians(20.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    q = 1.7 * p @ rot.T + np.array([40.0, -25.0, 3.0])
    # the fitted rotation is an input too (the teacher reads 2D points), so allow a small change
    assert np.abs(model.predict(q) - model.predict(p)).max() < 0.15
    assert model.predict(np.zeros((0, 478, 3))).shape == (0, 52)


# -------------------------------------------------------------------------------------- calibration


def test_calibration_round_trip():
    from face3d_live.expression.calibration import BlendshapeCalibration

    cal = BlendshapeCalibration()
    raw = np.full(52, 0.5, np.float32)
    assert np.allclose(cal.apply(raw), raw)  # identity before capture
    rest = np.zeros((5, 52), np.float32)
    rest[:, ARKIT_INDEX["mouthSmileLeft"]] = [0.2, 0.2, 0.3, 0.2, 0.9]  # one outlier frame: median ignores it
    neutral = cal.capture(rest)
    assert neutral[ARKIT_INDEX["mouthSmileLeft"]] == pytest.approx(0.2)
    i = ARKIT_INDEX["mouthSmileLeft"]
    v = np.zeros(52, np.float32)
    for x, want in ((0.2, 0.0), (0.1, 0.0), (0.6, 0.5), (1.0, 1.0)):
        v[i] = x
        assert cal.apply(v)[i] == pytest.approx(want, abs=1e-6)  # full range still reachable
    cal.set_gain("jawOpen", 2.0)
    v[ARKIT_INDEX["jawOpen"]] = 0.3
    assert cal.apply(v)[ARKIT_INDEX["jawOpen"]] == pytest.approx(0.6)
    with pytest.raises(KeyError):
        cal.set_gain("notAShape", 1.0)
    data = json.loads(json.dumps(cal.to_dict()))
    back = BlendshapeCalibration.from_dict(data)
    assert np.allclose(back.neutral, cal.neutral) and np.allclose(back.gains, cal.gains) and back.captured
    assert np.allclose(back.apply(v), cal.apply(v))
    cal.reset()
    assert not cal.captured and np.allclose(cal.apply(v), v)


# --------------------------------------------------------------------------------------------- gaze


def _synthetic_face(
    yaw_deg: float, eye_shift: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical mesh turned by a head yaw; both irises at the resting place moved by ``eye_shift``
    (head-frame x = subject's left, y = down, in eye widths)."""
    from face3d_live.geometry import gaze
    from face3d_live.geometry.mesh import canonical_vertices

    v = canonical_vertices().astype(np.float64)
    iris = np.zeros((10, 3))
    for outer, inner, first, nasal in gaze.EYES:
        w = np.linalg.norm(v[outer, :2] - v[inner, :2])
        c = (v[outer] + v[inner]) / 2
        c[0] += (nasal * gaze.REST_OFFSET[0] + eye_shift[0]) * w
        c[1] += (gaze.REST_OFFSET[1] + eye_shift[1]) * w
        iris[first : first + 5] = (
            c + np.array([[0, 0, 0], [1, 0, 0], [0, -1, 0], [-1, 0, 0], [0, 1, 0]]) * 0.2 * w
        )
    a = np.radians(yaw_deg)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    return 30.0 * v @ rot.T + 300.0, 30.0 * iris @ rot.T + 300.0, rot


def test_gaze_signs():
    from face3d_live.geometry.gaze import gaze_angles

    v, iris, rot = _synthetic_face(0.0, (0.0, 0.0))
    assert np.abs(gaze_angles(v, iris, rot)).max() < 1e-3  # at rest: looking straight ahead
    g = gaze_angles(*_synthetic_face(0.0, (0.1, 0.0)))  # irises towards the subject's left
    assert g.shape == (2, 2) and g.dtype == np.float32
    assert np.all(g[:, 0] > 5.0) and np.all(np.abs(g[:, 1]) < 1e-3)
    g = gaze_angles(*_synthetic_face(0.0, (0.0, -0.1)))  # irises up (-y)
    assert np.all(g[:, 1] > 5.0) and np.all(np.abs(g[:, 0]) < 1e-3)
    # relative to the head: the same eye-in-head offset reads the same with the head turned 30°
    g_turned = gaze_angles(*_synthetic_face(30.0, (0.1, 0.0)))
    assert np.allclose(g_turned, gaze_angles(*_synthetic_face(0.0, (0.1, 0.0))), atol=1e-3)
