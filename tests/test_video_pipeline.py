"""Tracking on real clips, and the `process` command end to end."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from face3d_live.capture import open_source
from face3d_live.cli import main
from face3d_live.pipeline.offline import run_offline


@pytest.mark.parametrize("name", ["obama.mp4", "single_face.mp4"])
def test_every_frame_yields_one_face(reconstructor, video_path, name: str) -> None:
    reconstructor.reset()
    reconstructor.tracker.detector_runs = 0
    counts: list[int] = []
    with open_source(video_path(name)) as src:
        summary = run_offline(src, reconstructor, lambda f: counts.append(len(f.faces)), progress=False)
    assert summary.frames == len(counts) > 50
    assert counts == [1] * len(counts)
    # the tracker re-crops from the last mesh: the detector runs on a small fraction of frames
    assert reconstructor.tracker.detector_runs <= len(counts) // 10 + 1


def test_demo_source_is_tracked(reconstructor) -> None:
    reconstructor.reset()
    with open_source("demo", demo_frames=40) as src:
        summary = run_offline(src, reconstructor, progress=False)
    assert summary.frames == 40 and summary.frames_with_face == 40


def test_process_writes_npz_per_frame(video_path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        main(
            [
                "process",
                str(video_path("single_face.mp4")),
                "--out",
                str(out),
                "--obj",
                "--no-progress",
                "--model",
                "mediapipe",
            ]
        )
        == 0
    )
    files = sorted((out / "frames").glob("frame_*.npz"))
    assert len(files) == 72
    with np.load(files[10]) as d:
        assert int(d["frame_index"]) == 10 and d["vertices"].shape == (1, 468, 3)
        assert d["landmarks68"].shape == (1, 68, 3) and d["rotation"].shape == (1, 3, 3)
        assert abs(float(d["timestamp_s"]) - 10 / 30) < 1e-3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 72 and summary["frames_with_face"] == 72
    obj = (out / "obj" / "frame_000000_face0.obj").read_text().splitlines()
    assert (
        sum(line.startswith("v ") for line in obj) == 468
        and sum(line.startswith("f ") for line in obj) == 852
    )


def test_process_records_frames_without_a_face_as_empty(tmp_path: Path, astronaut: np.ndarray) -> None:
    from skimage import data

    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "0_face.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "1_coffee.png"), cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    assert main(["process", str(folder), "--out", str(out), "--no-progress"]) == 0
    with np.load(out / "frames" / "frame_000001.npz") as d:
        assert d["vertices"].shape == (0, 468, 3)
    from face3d_live.models.registry import default_model

    summary = json.loads((out / "summary.json").read_text())
    # the default model: r50 on a CUDA GPU, else its INT8 rung
    assert summary["frames_without_face"] == 1 and summary["model"] == default_model()


def test_process_bad_inputs_exit_nonzero_with_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "x.txt").write_text("hello")
    for bad in [str(tmp_path / "missing.mp4"), str(tmp_path / "x.txt"), "5"]:
        assert main(["process", bad, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("face3d-live: error:")


def test_a_photo_folder_gives_each_photo_what_it_gives_alone(
    astronaut, data_dir: Path, tmp_path: Path
) -> None:
    """Photos of a folder go through the model several at a time (run_offline → reconstruct_batch, as far
    as the decoder has read ahead); every photo's numbers are, bit for bit, those it gets on its own."""
    import tarfile

    from face3d_live import Reconstructor

    folder = tmp_path / "photos"
    folder.mkdir()
    with tarfile.open(data_dir / "faces" / "expressions-00.tar") as tar:
        members = [m for m in tar.getmembers() if m.name.lower().endswith(".jpg")][:11]
        for m in members:
            (folder / Path(m.name).name).write_bytes(tar.extractfile(m).read())
    cv2.imwrite(str(folder / "zz_astronaut.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    frames = []
    with Reconstructor("r50-int8", smoothing=None) as rec:
        with open_source(folder) as src:
            summary = run_offline(src, rec, frames.append, progress=False)
        assert summary.frames == len(frames) == 12 and summary.frames_with_face >= 11
        for frame in frames:
            alone = rec.reconstruct(frame.image)
            assert len(alone) == len(frame.faces)
            for a, b in zip(alone, frame.faces):
                np.testing.assert_array_equal(a.vertices, b.vertices)
                np.testing.assert_array_equal(a.landmarks68, b.landmarks68)
                np.testing.assert_array_equal(a.blendshapes, b.blendshapes)


@pytest.mark.parametrize(
    ("flags", "setting"),
    [(["--first-pass", "r50-lite"], {"first_pass": "r50-lite"}), (["--passes", "1"], {"passes": 1})],
    ids=["lighter-first-pass", "one-pass"],
)
def test_process_photos_with_other_passes(
    tmp_path: Path, astronaut: np.ndarray, flags: list[str], setting: dict
) -> None:
    """``process --first-pass`` / ``--passes 1``: each photo's numbers are the Python API's with the same
    setting, and the summary names it (library jobs: tests/test_scale_batch.py)."""
    from face3d_live import Reconstructor

    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "astronaut.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    argv = ["process", str(folder), "--out", str(out), "--model", "r50-int8", *flags]
    assert main([*argv, "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "r50-int8" and setting.items() <= summary.items()
    with Reconstructor("r50-int8", smoothing=None, **setting) as rec:
        (face,) = rec.reconstruct(astronaut)
    with np.load(out / "frames" / "frame_000000.npz") as d:
        np.testing.assert_array_equal(d["vertices"][0], face.vertices)
        np.testing.assert_array_equal(d["landmarks68"][0], face.landmarks68)
