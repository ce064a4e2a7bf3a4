"""The torch port of BlazeFace (detect.blazeface_torch) against the ai-edge-litert detector it was rebuilt
from: raw outputs, preprocessing and detections on real faces (astronaut, frames of the clips in
../shared/data/videos, AFLW crops; skipped without ../shared), batching, and an image without a face.
CPU only, a few s."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from face3d_live.detect.blazeface import BlazeFaceDetector, letterbox, shrink  # noqa: E402
from face3d_live.detect.blazeface_torch import (  # noqa: E402
    TorchBlazeFace,
    TorchBlazeFaceDetector,
    shrink_torch,
)

CLIPS = ("obama.mp4", "single_face.mp4", "WolfgangLanger_Pexels.mp4")


@pytest.fixture(scope="module")
def faces(data_dir: Path, astronaut: np.ndarray) -> list[np.ndarray]:
    """Real faces at the sizes the detector meets: 512² photo, 1280×720 and 640×360 video frames, 120² crops
    (which the detector scales up)."""
    images = [astronaut]
    for name in CLIPS:
        cap = cv2.VideoCapture(str(data_dir / "videos" / name))
        for k in range(31):
            ok, bgr = cap.read()
            assert ok, name
            if k % 15 == 0:
                images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        cap.release()
    with tarfile.open(data_dir / "faces" / "aflw_crops-00.tar") as tar:
        crops = 0
        for member in tar:
            if member.isfile() and member.name.endswith(".jpg"):
                buf = np.frombuffer(tar.extractfile(member).read(), np.uint8)
                images.append(cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
                crops += 1
                if crops == 6:
                    break
    return images


def _model_input(image: np.ndarray, size: int) -> np.ndarray:
    """BlazeFaceDetector.detect's input: the letterboxed, shrunk image in [-1, 1], (1, S, S, 3)."""
    h, w = image.shape[:2]
    nw, nh, ox, oy = letterbox(h, w, size)
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[oy : oy + nh, ox : ox + nw] = shrink(image, nw, nh)
    return canvas.astype(np.float32)[None] / 127.5 - 1.0


@pytest.mark.parametrize("full_range", [False, True], ids=["short", "full"])
def test_raw_outputs_match_tflite(faces: list[np.ndarray], full_range: bool) -> None:
    ref = BlazeFaceDetector(full_range=full_range)
    net = TorchBlazeFace.bundled(full_range).eval()
    assert net.input_size == ref.size
    x = np.concatenate([_model_input(img, ref.size) for img in faces])
    with torch.inference_mode():
        regressors, logits = (t.numpy() for t in net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()))
    expected = [ref.model.run(x[k : k + 1]) for k in range(len(x))]
    want_reg = np.concatenate([e[0] for e in expected])
    want_log = np.concatenate([e[1] for e in expected])
    assert regressors.shape == want_reg.shape == (len(x), len(ref.anchors), 16)
    assert logits.shape == want_log.shape == (len(x), len(ref.anchors), 1)
    d_reg, d_log = np.abs(regressors - want_reg), np.abs(logits - want_log)
    print(
        f"max |diff|: regressors {d_reg.max():.2e} (of {np.abs(want_reg).max():.0f}), logits {d_log.max():.2e}"
    )
    # fp16 weights dequantised to fp32 in both, so only the fp32 summation order differs: up to 2.4e-3 on a
    # logit of the short-range model (|logit| up to ~100) on these frames, as far as litert's own reference
    # kernels are from XNNPACK (2.5e-3)
    assert (d_reg / np.maximum(np.abs(want_reg), 1.0)).max() < 1e-3
    assert (d_log / np.maximum(np.abs(want_log), 1.0)).max() < 1e-3


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))],
)
def test_shrink_matches_opencv(astronaut: np.ndarray, device: str) -> None:
    """The device-side resize gives cv2's pixels: pyrDown, INTER_AREA down (exact box) and up (2 taps); on
    a GPU too, where cuDNN and cuBLAS may round float32 to TF32."""
    for h, w in [
        (3000, 4000),
        (1080, 1920),
        (720, 1280),
        (480, 640),
        (512, 512),
        (333, 250),
        (120, 120),
        (100, 77),
    ]:
        image = cv2.resize(astronaut, (w, h), interpolation=cv2.INTER_CUBIC)
        for size in (128, 192):
            nw, nh, _, _ = letterbox(h, w, size)
            want = shrink(image, nw, nh).astype(np.float32)
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float().to(device)
            got = shrink_torch(x, nw, nh)
            diff = np.abs(got[0].permute(1, 2, 0).cpu().numpy() - want)
            # off by one grey level at a few ties (OpenCV sums its fractional area weights in another order)
            assert diff.max() <= 1.0 and (diff > 0).mean() < 0.01, (
                (h, w),
                size,
                diff.max(),
                (diff > 0).mean(),
            )


@pytest.mark.parametrize("full_range", [False, True], ids=["short", "full"])
def test_detections_match_tflite(faces: list[np.ndarray], full_range: bool) -> None:
    ref = BlazeFaceDetector(full_range=full_range)
    det = TorchBlazeFaceDetector(full_range=full_range)
    want = [ref.detect(img) for img in faces]
    got = det.detect_batch(faces)
    assert len(got) == len(faces)
    # the video frames and the photo hold one face each, which both models find
    assert all(len(want[k]) >= 1 for k in range(1 + 3 * len(CLIPS)))
    worst = [0.0, 0.0, 0.0]
    for a, b in zip(want, got):
        assert len(a) == len(b)
        for da, db in zip(a, b):
            worst[0] = max(worst[0], float(np.abs(np.subtract(da.box, db.box)).max()))
            worst[1] = max(worst[1], abs(da.score - db.score))
            worst[2] = max(worst[2], float(np.abs(da.keypoints - db.keypoints).max()))
    print(
        f"{sum(map(len, want))} faces; max |diff|: box {worst[0]:.2e} px, score {worst[1]:.2e}, kp {worst[2]:.2e}"
    )
    assert worst[0] < 1.0 and worst[1] < 0.01 and worst[2] < 1.0


def test_batch_of_mixed_sizes_matches_one_at_a_time(faces: list[np.ndarray]) -> None:
    """Numpy arrays, CHW (torchvision's decode_jpeg) and HWC tensors of different sizes in one call (NCHW
    activations here; test_detections_match_tflite runs the default channels-last ones)."""
    det = TorchBlazeFaceDetector(full_range=True, channels_last=False)
    picks = [faces[0], faces[1], faces[4], faces[-1], faces[2]]
    mixed: list = [
        picks[0],
        torch.from_numpy(picks[1]).permute(2, 0, 1).contiguous(),
        torch.from_numpy(picks[2]),
        picks[3],
        picks[4],
    ]
    batch = det.detect_batch(mixed)
    single = [det.detect(img) for img in picks]
    assert [len(b) for b in batch] == [len(s) for s in single] and sum(map(len, single)) >= 3
    for b, s in zip(batch, single):
        for db, ds in zip(b, s):
            assert np.allclose(db.box, ds.box, atol=1e-3) and abs(db.score - ds.score) < 1e-5
            assert np.allclose(db.keypoints, ds.keypoints, atol=1e-3)
    # one uint8 tensor batch, (N, H, W, 3) or (N, 3, H, W): same as the list
    frames = [faces[1], faces[2]]
    stacked = torch.from_numpy(np.stack(frames))
    listed = det.detect_batch(frames)
    for t in (stacked, stacked.permute(0, 3, 1, 2)):
        out = det.detect_batch(t)
        assert [len(o) for o in out] == [len(r) for r in listed] == [1, 1]
        for o, r in zip(out, listed):
            assert np.allclose(o[0].box, r[0].box, atol=1e-3) and abs(o[0].score - r[0].score) < 1e-5


@pytest.mark.parametrize("full_range", [False, True], ids=["short", "full"])
def test_no_face_no_detection(astronaut: np.ndarray, full_range: bool) -> None:
    det = TorchBlazeFaceDetector(full_range=full_range)
    grey = np.full((480, 640, 3), 128, np.uint8)
    out = det.detect_batch([grey, astronaut, grey[:200]])
    assert out[0] == [] and out[2] == [] and len(out[1]) == 1
    assert det.detect_batch([]) == []


def test_blazeface_does_not_import_torch() -> None:
    """torch is optional: the tflite detector's module must load without it."""
    code = "import sys, face3d_live.detect.blazeface; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
