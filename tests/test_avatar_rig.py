"""The learned ARKit rig: the shipped asset's sanity (its shapes do what their names say), the API, the
personalisation, the neutral calibration and the fit on synthetic data where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from face3d_live.avatar import ArkitRig, pose_free, rigid_pose
from face3d_live.avatar.calibrate import personal_rig
from face3d_live.errors import ModelError
from face3d_live.expression.arkit import ARKIT_BLENDSHAPES, ARKIT_INDEX
from face3d_live.geometry import mesh
from face3d_live.geometry.pose import apply_pose
from face3d_live.types import Pose

MM = 0.1  # canonical units are centimetres (outer eye corners 9.0 apart)
# face-mesh vertices (canonical frame: x to the image's right = the subject's left, y down)
LOWER_LIP, UPPER_LIP, CHIN = 17, 0, 152
LEFT_LID_UP, LEFT_LID_LOW, RIGHT_LID_UP, RIGHT_LID_LOW = 386, 374, 159, 145
LEFT_MOUTH_CORNER, RIGHT_MOUTH_CORNER = 291, 61


@pytest.fixture(scope="module")
def rig() -> ArkitRig:
    return ArkitRig.load()


def _delta(rig: ArkitRig, name: str) -> np.ndarray:
    return rig.deltas[ARKIT_INDEX[name]]


def test_asset_shapes_and_metadata(rig):
    assert rig.neutral.shape == (468, 3) and rig.neutral.dtype == np.float32
    assert rig.deltas.shape == (52, 468, 3) and rig.deltas.dtype == np.float32
    assert rig.names == ARKIT_BLENDSHAPES
    assert rig.triangles.shape == (852, 3) and rig.uv.shape == (468, 2)
    # the neutral lives in the canonical mesh's frame and units: the same face, about the same size
    iod = np.linalg.norm(rig.neutral[263] - rig.neutral[33])
    assert 8.5 < iod < 9.5
    assert np.abs(rig.neutral - mesh.canonical_vertices()).mean() < 0.3  # < 3 mm on average
    meta = rig.metadata
    assert meta["date"] and meta["data"] and meta["symmetric"]
    for table in ("held_out_crops_pooled", "left_out_clips_pooled"):
        r = meta["residuals"][table]
        assert r["faces"] > 100 and r["rig_mm"] < 0.8 * r["neutral_mm"], (table, r)


def test_jaw_open_opens_the_mouth(rig):
    d = _delta(rig, "jawOpen")
    assert d[LOWER_LIP, 1] > 5 * MM  # the lower lip moves down (y points down) ...
    assert d[LOWER_LIP, 1] - d[UPPER_LIP, 1] > 5 * MM  # ... away from the upper lip
    assert d[CHIN, 1] > 2 * MM


def test_eye_blink_left_closes_the_left_eye(rig):
    d = _delta(rig, "eyeBlinkLeft")
    closing_left = (d[LEFT_LID_UP, 1] - d[LEFT_LID_LOW, 1]) / MM  # the lids move towards each other
    closing_right = (d[RIGHT_LID_UP, 1] - d[RIGHT_LID_LOW, 1]) / MM
    assert closing_left > 3.0 and closing_left > 3 * abs(closing_right)
    assert rig.neutral[LEFT_LID_UP, 0] > 0  # the subject's left eye is on the +x side


def test_mouth_smile_left_raises_the_left_corner(rig):
    d = _delta(rig, "mouthSmileLeft")
    assert -d[LEFT_MOUTH_CORNER, 1] > 2 * MM  # up (y points down)
    assert -d[LEFT_MOUTH_CORNER, 1] > 2 * max(-d[RIGHT_MOUTH_CORNER, 1], 0.0)
    assert d[LEFT_MOUTH_CORNER, 0] > 0  # and outwards, to the subject's left


def test_tongue_out_is_zero(rig):
    assert not _delta(rig, "tongueOut").any()  # the teacher has no tongue


def test_shape_is_neutral_plus_weighted_deltas(rig):
    assert np.array_equal(rig.shape(np.zeros(52)), rig.neutral)
    w = np.random.default_rng(0).uniform(0, 1, (5, 52)).astype(np.float32)
    out = rig.shape(w)
    assert out.shape == (5, 468, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[2], rig.neutral + np.einsum("k,kvc->vc", w[2], rig.deltas), atol=1e-5)
    with pytest.raises(ValueError):
        rig.shape(np.zeros(51))


def test_personalised_follows_the_new_face(rig):
    same = rig.personalised(rig.neutral)
    np.testing.assert_allclose(same.deltas, rig.deltas, atol=1e-5)
    bigger = rig.personalised(rig.neutral * 1.1)
    np.testing.assert_allclose(bigger.neutral, rig.neutral * 1.1, atol=1e-6)
    np.testing.assert_allclose(bigger.deltas, rig.deltas * 1.1, atol=1e-4)
    wide = rig.personalised(rig.neutral * np.array([1.2, 1.0, 1.0], np.float32))  # a wider face ...
    smile = ARKIT_INDEX["mouthSmileLeft"]
    ratio = wide.deltas[smile, LEFT_MOUTH_CORNER, 0] / rig.deltas[smile, LEFT_MOUTH_CORNER, 0]
    assert 1.1 < ratio < 1.3  # ... smiles wider, and no higher
    assert wide.deltas[smile, LEFT_MOUTH_CORNER, 1] == pytest.approx(
        rig.deltas[smile, LEFT_MOUTH_CORNER, 1], rel=0.1
    )
    with pytest.raises(ValueError):
        rig.personalised(np.zeros((10, 3)))


def test_pose_free_and_rigid_pose_invert_each_other(rig):
    angle = np.radians(20)
    rot = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    pose = Pose(rot, np.array([320.0, 200.0, 50.0]), 12.0)
    face = rig.shape(np.eye(52)[ARKIT_INDEX["jawOpen"]] * 0.7)
    image = apply_pose(pose, face)
    back = pose_free(image)
    # fitted on the rigid points only, so the open jaw barely tilts it (their small motion: < 0.3 mm)
    np.testing.assert_allclose(back, face, atol=0.03)
    fitted = rigid_pose(image)
    np.testing.assert_allclose(fitted.rotation, rot, atol=2e-3)
    assert fitted.scale == pytest.approx(12.0, rel=2e-3)
    np.testing.assert_allclose(apply_pose(fitted, back), image, atol=1e-3)  # exact inverses


def test_personal_rig_recovers_the_neutral_of_a_take(rig):
    """A synthetic take of a made-up face (the rig's neutral, stretched) acting out random expressions."""
    rng = np.random.default_rng(1)
    face = rig.personalised(rig.neutral * np.array([1.05, 0.97, 1.0], np.float32))
    w = np.where(rng.uniform(size=(120, 52)) < 0.15, rng.uniform(0, 1, (120, 52)), 0.0).astype(np.float32)
    w[:, ARKIT_INDEX["tongueOut"]] = 0
    take = face.shape(w) + rng.normal(0, 0.01, (120, 468, 3)).astype(np.float32)  # 0.1 mm noise
    personal, frames = personal_rig(take, w, rig)
    assert len(frames) == 60  # the calmer half
    assert np.abs(personal.neutral - face.neutral).mean() < 0.02  # 0.2 mm
    fit = np.linalg.norm(personal.shape(w) - take, axis=-1).mean()
    assert fit < 0.05  # 0.5 mm mean vertex error over the take


def test_fit_keeps_identity_out_of_the_deltas():
    """Subjects with their own neutrals and a known rig: the group-centred fit finds the rig, not the
    differences between the subjects (whose expressions differ on average)."""
    from face3d_live.training.arkit_rig import Part, fit

    rng = np.random.default_rng(2)
    true = rng.normal(0, 0.1, (52, 468, 3))
    true[ARKIT_INDEX["tongueOut"]] = 0
    parts = []
    for s in range(4):
        identity = mesh.canonical_vertices() + rng.normal(0, 0.3, (468, 3))
        w = rng.uniform(0, 1, (200, 52)) * (0.2 + 0.3 * s)  # a more expressive subject every time
        w[:, ARKIT_INDEX["tongueOut"]] = 0
        meshes = identity + np.einsum("fk,kvc->fvc", w, true) + rng.normal(0, 0.005, (200, 468, 3))
        parts.append(
            Part(f"s{s}", meshes.astype(np.float32), w.astype(np.float32), np.zeros(200, bool), f"s{s}")
        )
    result = fit(parts, ridge=1e-6, video_weight=1.0)
    assert np.abs(result.deltas - true).max() < 0.01
    assert not result.deltas[ARKIT_INDEX["tongueOut"]].any()


def test_missing_or_damaged_asset_is_one_line_model_error(tmp_path, rig):
    with pytest.raises(ModelError, match="not found") as err:
        ArkitRig.load(tmp_path / "nope.npz")
    assert "\n" not in str(err.value)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelError, match="unreadable") as err:
        ArkitRig.load(junk)
    assert "\n" not in str(err.value)
    bad = tmp_path / "bad.npz"
    np.savez(bad, format=np.array("face3d-arkit-rig/1"), names=np.array(ARKIT_BLENDSHAPES),
             neutral=rig.neutral[:100], deltas=rig.deltas, metadata=np.array("{}"))  # fmt: skip
    with pytest.raises(ModelError, match="damaged"):
        ArkitRig.load(bad)
    good = rig.save(tmp_path / "copy.npz")
    again = ArkitRig.load(good)
    np.testing.assert_array_equal(again.deltas, rig.deltas)
    assert again.metadata == rig.metadata
