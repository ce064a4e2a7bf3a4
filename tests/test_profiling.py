"""Face profiling (training/profiling.py) on a real photo: the turned image and its labels agree.

The source sample is the astronaut photo's face on a 128 px canvas, labelled by the shipped r50-int8 (its 478
points, and the mesh's blended 68 points as the 3D-convention labels). Rendering is real OpenGL (EGL,
llvmpipe in CI). The check that the labels fit the rendered pixels is the model itself: run on the turned
image, it lands on the turned labels.
"""

from __future__ import annotations

import numpy as np
import pytest

CANVAS = 128


@pytest.fixture(scope="module")
def source(astronaut):
    """A one-face TrainData: the astronaut's face on the canvas, labels from r50-int8."""
    from face3d_live import Reconstructor
    from face3d_live.geometry.crop import CropTransform
    from face3d_live.geometry.landmarks68 import blend68
    from face3d_live.training.dataset import TrainData, mesh_crops

    with Reconstructor("r50-int8", smoothing=None) as rec:
        face = rec.reconstruct(astronaut)[0]
        x0, y0, x1, y1 = face.bbox
        roi = CropTransform(((x0 + x1) / 2, (y0 + y1) / 2), 1.4 * max(x1 - x0, y1 - y0), 0.0, CANVAS)
        canvas = roi.warp(astronaut)
        face = rec.reconstruct(canvas, boxes=[(0, 0, CANVAS, CANVAS)])[0]
    verts = np.concatenate([face.vertices, face.iris]).astype(np.float32)
    lm68 = blend68(face.vertices)
    lm68[:, 2] -= lm68[:, 2].mean()

    def rows(n, v):
        return np.repeat(np.asarray(v)[None], n, 0)

    n = 3  # the same face three times: usable, held out, teacher failed
    return TrainData(
        images=rows(n, canvas),
        verts=rows(n, verts),
        lm68=rows(n, lm68),
        points=np.full((n, 21, 2), np.nan, np.float32),
        yaw=np.full(n, np.nan, np.float32),
        teacher_ok=np.array([True, True, False]),
        mesh_crop=rows(n, mesh_crops(verts[None])[0]),
        box_crop=rows(n, np.float32([CANVAS / 2, CANVAS / 2, CANVAS * 1.4, 0])),
        held_out=np.array([False, True, False]),
        shape=rows(n, np.float32([512, 512])),
        names=np.array(["astronaut.png", "astronaut-held.png", "astronaut-failed.png"]),
    )


@pytest.fixture(scope="module")
def turned(source, ctx):
    from face3d_live.training.profiling import ProfileConfig, profile_data

    cfg = ProfileConfig(turn=(60.0, 60.0), per_source=2, seed=3)
    return profile_data(source, cfg, progress=False, ctx=ctx)


def test_only_usable_training_samples_are_turned(turned) -> None:
    from face3d_live.training.profiling import PREFIX

    assert len(turned) == 2  # per_source copies of sample 0; the held-out and failed ones are left out
    assert all(n.startswith(PREFIX + "astronaut.png#") for n in turned.names)
    assert not turned.held_out.any() and turned.teacher_ok.all()
    assert np.isnan(turned.points).all()  # manual points do not turn
    assert turned.images.shape == (2, CANVAS, CANVAS, 3) and turned.images.dtype == np.uint8


def test_labels_are_the_source_labels_turned(source, turned) -> None:
    from face3d_live.training.profiling import mesh_yaw_pitch

    yaw0, _ = mesh_yaw_pitch(source.verts[0, :468])
    for k in range(2):
        v = turned.verts[k]
        # a rigid turn: every pairwise distance kept, the vertical coordinate untouched
        assert np.allclose(v[:, 1], source.verts[0, :, 1], atol=1e-3)
        d0 = np.linalg.norm(source.verts[0, :50, None] - source.verts[0, None, :50], axis=-1)
        d1 = np.linalg.norm(v[:50, None] - v[None, :50], axis=-1)
        assert np.abs(d0 - d1).max() < 1e-2
        assert abs(abs(turned.yaw[k] - yaw0) - 60.0) < 6.0, (turned.yaw[k], yaw0)
        # the 68 labels turned with the mesh: still next to the mesh's own blended 68 points
        from face3d_live.geometry.landmarks68 import blend68

        assert np.abs(turned.lm68[k, :, :2] - blend68(v[:468])[:, :2]).max() < 1e-2
        assert abs(float(turned.lm68[k, :, 2].mean())) < 1e-3  # z centred, as every 68-point label


def test_the_model_finds_the_turned_labels_in_the_turned_image(source, turned) -> None:
    from face3d_live import Reconstructor

    def nme(image, verts) -> float:
        x0, y0 = verts[:468, :2].min(0)
        x1, y1 = verts[:468, :2].max(0)
        face = rec.reconstruct(image, boxes=[(x0, y0, x1, y1)])[0]
        err = np.linalg.norm(face.vertices[:, :2] - verts[:468, :2], axis=1).mean()
        return 100 * err / np.sqrt((x1 - x0) * (y1 - y0))

    with Reconstructor("r50-int8", smoothing=None) as rec:
        for k in range(2):
            right = nme(turned.images[k], turned.verts[k])
            assert right < 6.0
            # the labels before the turn, or turned the other way, are far off: the check has teeth
            assert nme(turned.images[k], source.verts[0]) > 2 * right
            assert nme(turned.images[k], turned.verts[1 - k]) > 2 * right


def test_the_face_turns_and_the_surroundings_stay(source, turned) -> None:
    src = source.images[0].astype(np.int32)
    for k in range(2):
        out = turned.images[k].astype(np.int32)
        face = np.zeros((CANVAS, CANVAS), bool)
        x0, y0 = np.floor(source.verts[0, :468, :2].min(0)).astype(int)
        x1, y1 = np.ceil(source.verts[0, :468, :2].max(0)).astype(int)
        face[max(y0, 0) : y1, max(x0, 0) : x1] = True
        assert np.abs(out - src)[face].mean() > 15  # the face moved
        assert out.reshape(-1, 3).std(0).mean() > 20  # a picture, not a blank
    assert np.abs(turned.images[0].astype(int) - turned.images[1]).mean() > 10  # left and right turns differ


def test_profile_parts_round_trip_and_train_at_full_trust(turned, tmp_path) -> None:
    from face3d_live.training.pack import load_part, pack_parts

    (path,) = pack_parts(turned, tmp_path, prefix="profile")
    assert path.name == "profile0.npz"
    back = load_part(path)
    order = np.argsort(back.names)
    assert list(back.names[order]) == sorted(turned.names)
    assert np.abs(back.verts[order] - turned.verts[np.argsort(turned.names)]).max() < 0.5
    torch = pytest.importorskip("torch")  # noqa: F841 - training/train.py needs it
    from face3d_live.training.points21 import load_mapping
    from face3d_live.training.train import teacher_weights

    points21_w = load_mapping()
    real = back.subset(np.arange(len(back)))
    real.names = np.array([n.split("/", 1)[1] for n in real.names])
    big = np.full(len(back), 70.0, np.float32)
    back.yaw, real.yaw = big, big.copy()
    assert np.allclose(teacher_weights(back, points21_w), 1.0)  # exact labels: trusted at 70°
    assert teacher_weights(real, points21_w).max() < 0.5  # the same yaw on a real teacher label fades


def test_profiling_command_says_what_is_wrong_in_one_line(tmp_path, capsys) -> None:
    from face3d_live.training.profiling import main

    bad = tmp_path / "part0.npz"
    bad.write_bytes(b"not a training part")
    assert main(["--data", str(bad), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("profiling: ") and "not a training data part" in err and "\n" not in err


def test_the_turned_face_stays_where_the_face_was_and_nothing_is_left_blank(source, turned) -> None:
    """The turn slides the face back to the source face's middle in x (the source's detector box still fits it),
    and every pixel is drawn: the band, the frame on the canvas border, the corners behind them."""
    v0 = source.verts[0, :468, 0]
    for k in range(2):
        v = turned.verts[k, :468, 0]
        assert abs((v.min() + v.max()) / 2 - (v0.min() + v0.max()) / 2) < 0.5
        blank = (turned.images[k] == 0).all(-1).mean()
        assert blank <= (source.images[0] == 0).all(-1).mean() + 0.002, blank
