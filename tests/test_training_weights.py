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
    with torch.no_grad():
        out = model(torch.from_numpy(crops)).numpy()
    presence = 1 / (1 + np.exp(-out[:, -1]))
    verts = out[:, :-1].reshape(-1, 468, 3) * 224
    assert (presence > 0.5).all()
    span = verts[..., :2].max(1) - verts[..., :2].min(1)
    assert ((span > 50) & (span < 224)).all()  # a face-sized mesh inside the crop


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
