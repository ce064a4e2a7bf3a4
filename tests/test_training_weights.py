"""The shipped face3d-r50 weights: they load (hash-checked), find faces on real crops, and the ONNX
export equals torch within 1e-3."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model():
    from face3d_live.models.weights import R50_WEIGHTS

    if not R50_WEIGHTS.is_file():
        pytest.skip("face3d-r50 weights not in this checkout")
    from face3d_live.models.r50_face import build_r50

    return build_r50(R50_WEIGHTS)


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """(4, 3, 224, 224) float crops of real faces: shared AFLW crops, else the astronaut."""
    import cv2

    from face3d_live.training.data import aflw_shards, default_data_dir, iter_tar_images

    out = []
    shards = aflw_shards(default_data_dir())
    if shards:
        for _, img in iter_tar_images(shards[0]):
            out.append(cv2.resize(img, (224, 224)))
            if len(out) == 4:
                break
    else:
        from skimage.data import astronaut

        out = [cv2.resize(astronaut()[0:220, 140:360], (224, 224))] * 4
    return np.stack(out).transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def test_weights_find_faces(model, crops: np.ndarray) -> None:
    from face3d_live.models.layout import OUTPUT_DIM, decode

    with torch.no_grad():
        raw = model(torch.from_numpy(crops)).numpy()
    assert raw.shape == (4, OUTPUT_DIM) == (4, 1639)  # v2: 478 + 68 points and presence
    out = decode(raw)  # crop pixels of 224, sigmoid presence
    assert (out.scores > 0.5).all()
    verts = out.vertices
    assert verts.shape == (4, 468, 3) and out.iris.shape == (4, 10, 3) and out.landmarks68.shape == (4, 68, 3)
    span = verts[..., :2].max(1) - verts[..., :2].min(1)
    assert ((span > 50) & (span < 224)).all()  # a face-sized mesh inside the crop
    # each iris centre at its own eye (corners 33/133: the subject's right eye, first five points;
    # 362/263: left): nearer it than the other eye, within 8 % of the face's size (AFLW has profiles)
    eyes = np.stack([verts[:, [33, 133], :2].mean(1), verts[:, [362, 263], :2].mean(1)], 1)
    for e, centre in enumerate((0, 5)):
        dist = np.linalg.norm(out.iris[:, centre, None, :2] - eyes, axis=-1)  # (4, 2): to each eye
        assert (dist[:, e] < dist[:, 1 - e]).all() and (dist[:, e] < 0.08 * span.max(1)).all(), dist
    # the 68-point head lands on the mesh's face: every point inside the mesh's box (grown by 10 %),
    # and its own box a good part of it (not collapsed)
    lm = out.landmarks68[..., :2]
    lo, hi = verts[..., :2].min(1)[:, None], verts[..., :2].max(1)[:, None]
    grow = 0.1 * span[:, None]
    assert ((lm > lo - grow) & (lm < hi + grow)).all()
    assert (lm.max(1) - lm.min(1) > 0.5 * span).all()


def test_onnx_export_equals_torch(model, crops: np.ndarray, tmp_path: Path) -> None:
    import onnxruntime as ort

    from face3d_live.models.export import export_onnx

    path = export_onnx(model, tmp_path / "r50.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: crops})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(crops)).numpy()
    assert np.abs(got - want).max() < 1e-3


def test_corrupt_weights_are_a_clear_error(tmp_path: Path) -> None:
    from face3d_live.errors import ModelError
    from face3d_live.models.r50_face import build_r50
    from face3d_live.models.weights import R50_WEIGHTS

    if not R50_WEIGHTS.is_file():
        pytest.skip("face3d-r50 weights not in this checkout")
    bad = tmp_path / "bad.safetensors"
    raw = bytearray(R50_WEIGHTS.read_bytes())
    raw[-100] ^= 0xFF  # flip bits in the tensor data
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="corrupt"):
        build_r50(bad)
