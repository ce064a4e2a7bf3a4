"""Library jobs on a real local Ray instance (2 CPUs) over the real clips in ../shared/data/videos.

- the job's outputs equal single-process ``process``'s for the same inputs (videos and a photo folder); a
  corrupt file is reported and the rest finish; a rerun skips everything and says so;
- a worker killed mid-job: Ray restarts it and retries its task, the job completes, every frame is written
  once and equals the single-process output;
- chunked videos through a model actor (cross-worker batching): every frame once, close to ``process``.

The reference ``process`` runs in a subprocess with ``OMP_NUM_THREADS=1``, the BLAS threading Ray gives its
workers: the blendshape network's matrix products then sum in the same order and the NPZs are bit-identical
(with another BLAS thread count the blendshapes differ in the last float32 bit).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import local_ray

from face3d_live.scale.inputs import content_hash, expand_inputs, job_key
from face3d_live.scale.work import iter_chunks

MAX_FRAMES = 120
MODEL = "r50-int8"  # the CPU default, named so that a GPU machine compares the same computation
CLIPS = ("single_face.mp4", "obama.mp4", "WolfgangLanger_Pexels.mp4")
PHOTOS = 4


# ---- without Ray ---------------------------------------------------------------------------------------
def test_expand_inputs(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "clip.mp4").write_bytes(b"x")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("2.jpg", "1.png", "notes.txt"):
        (photos / name).write_bytes(b"x")
    lib = tmp_path / "library"
    lib.mkdir()
    (lib / "v1.mov").write_bytes(b"x")
    (lib / "v2.mp4").write_bytes(b"x")
    listing = tmp_path / "takes.txt"
    listing.write_text(f"# takes\n{tmp_path / 'a' / 'clip.mp4'}\n\nb/clip.mp4\nphotos\n")
    items, bad = expand_inputs([str(listing), str(tmp_path / "lib*"), "missing.mp4", "demo", "0"])
    kinds = [(i.path.relative_to(tmp_path).as_posix(), i.kind) for i in items]
    assert kinds == [
        ("a/clip.mp4", "video"),
        ("b/clip.mp4", "video"),
        ("photos", "photos"),
        ("library/v1.mov", "video"),
        ("library/v2.mp4", "video"),
    ]
    assert [f.name for f in items[2].files] == ["1.png", "2.jpg"]  # name order, images only
    names = [i.name for i in items]
    assert len(set(names)) == len(names) and names[0].startswith("clip-") and names[3] == "v1"
    assert [b.spec for b in bad] == ["missing.mp4", "demo", "0"]
    assert "no such file" in bad[0].reason and "live" in bad[1].reason


def test_resume_key_follows_content_and_options(tmp_path: Path) -> None:
    f = tmp_path / "v.mp4"
    f.write_bytes(b"one")
    (item,), _ = expand_inputs([str(f)])
    k1 = job_key(content_hash(item), {"max_frames": 10})
    assert k1 == job_key(content_hash(item), {"max_frames": 10})
    assert k1 != job_key(content_hash(item), {"max_frames": 11})
    f.write_bytes(b"two")
    assert k1 != job_key(content_hash(item), {"max_frames": 10})


def test_chunks_cover_every_frame_once() -> None:
    assert list(iter_chunks(100, 0, 30)) == [(0, None, 0)]
    assert list(iter_chunks(100, 80, 30)) == [(0, None, 0)]  # not 1.5 chunks long: whole
    chunks = list(iter_chunks(1000, 300, 30, end=1000))
    assert chunks == [(0, 300, 0), (300, 600, 30), (600, 1000, 30)]  # the short tail joins the last


def test_auto_chunks_only_when_tasks_are_fewer_than_workers() -> None:
    from face3d_live.scale.work import AUTO_MIN_CHUNK, auto_chunk_frames

    assert auto_chunk_frames([550] * 32, 0, 15) == 0  # a task for every worker: every video whole
    assert auto_chunk_frames([72, 55, 472], 1, 2) == 0  # the CI job on 2 CPUs
    assert auto_chunk_frames([90_000], 0, 15) == 3000  # one hour at 25 fps on 15 workers: 30 chunks
    assert auto_chunk_frames([2200, 300], 0, 15) == AUTO_MIN_CHUNK  # chunks no shorter than the minimum
    assert auto_chunk_frames([200], 0, 8) == AUTO_MIN_CHUNK  # short: iter_chunks keeps it whole
    assert list(iter_chunks(200, AUTO_MIN_CHUNK, 30)) == [(0, None, 0)]
    assert auto_chunk_frames([], 3, 8) == 0


def test_workers_owning_gpu_models_fit_the_gpu_nodes_and_memory() -> None:
    from face3d_live.scale.batch import workers_owning_gpu

    assert workers_owning_gpu(1, 16, 139.8) == 16  # the H200 machine: one per core
    assert workers_owning_gpu(1, 16, 8.0) == 6  # an 8 GB RTX card: 1.25 GiB each
    assert workers_owning_gpu(4, 64, 80.0) == 64
    assert workers_owning_gpu(1, 16, None) == 16  # memory unknown (a cluster's driver without a GPU)
    assert workers_owning_gpu(1, 2, 1.0) == 1


def test_process_without_ray_is_one_input(tmp_path: Path, capsys) -> None:
    from face3d_live.cli import main

    assert main(["process", "a.mp4", "b.mp4", "--out", str(tmp_path)]) == 2
    assert "add --ray" in capsys.readouterr().err
    assert main(["process", "a.mp4", "--out", str(tmp_path), "--workers", "2"]) == 2
    assert "--workers apply to library jobs" in capsys.readouterr().err


def test_only_the_scale_out_modules_import_ray() -> None:
    import re

    import face3d_live

    root = Path(face3d_live.__file__).parent
    allowed = {"cli/serve.py", "bench/serve.py", "bench/batch.py"}
    pattern = re.compile(r"^\s*(import ray\b|from ray\b)", re.M)
    offenders = [
        p.relative_to(root).as_posix()
        for p in root.rglob("*.py")
        if p.relative_to(root).parts[0] != "scale"
        and p.relative_to(root).as_posix() not in allowed
        and pattern.search(p.read_text())
    ]
    assert offenders == []
    code = "import sys, face3d_live.cli as c; c.build_parser(); sys.exit(any(m.split('.')[0] == 'ray' for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


# ---- on Ray ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_local():
    """One real local Ray instance for the module (2 CPUs and no GPU, as on CI; a GPU machine's own runs are in
    test_scale_gpu.py), shut down at its end."""
    with local_ray(num_cpus=2, num_gpus=0):
        yield


@pytest.fixture(scope="module")
def clips(data_dir: Path) -> list[Path]:
    paths = [data_dir / "videos" / c for c in CLIPS]
    if not all(p.is_file() for p in paths):
        pytest.skip("shared clips missing")
    return paths


@pytest.fixture(scope="module")
def photo_dir(data_dir: Path, tmp_path_factory) -> Path:
    """A few real face photos and one file that is not an image (skipped and counted, as by `process`)."""
    shard = data_dir / "faces" / "expressions-00.tar"
    if not shard.is_file():
        pytest.skip(f"{shard} missing")
    out = tmp_path_factory.mktemp("photos") / "expressions"
    out.mkdir()
    with tarfile.open(shard) as tar:
        members = [m for m in tar.getmembers() if m.name.lower().endswith((".jpg", ".png"))][:PHOTOS]
        for m in members:
            (out / Path(m.name).name).write_bytes(tar.extractfile(m).read())
    (out / "zz_broken.jpg").write_bytes(b"not a jpeg")
    return out


@pytest.fixture(scope="module")
def reference(clips, photo_dir, tmp_path_factory) -> Path:
    """Single-process `process` on each input (one interpreter, BLAS on one thread as in Ray's workers)."""
    out = tmp_path_factory.mktemp("reference")
    runs = [[str(c), "--max-frames", str(MAX_FRAMES)] for c in clips] + [[str(photo_dir)]]
    runs = [[*r, "--model", MODEL] for r in runs]
    code = (
        "import sys; from face3d_live.cli import main\n"
        f"for args in {runs!r}:\n"
        "    name = args[0].rsplit('/', 1)[-1].rsplit('.', 1)[0]\n"
        f"    assert main(['process', *args, '--out', {str(out)!r} + '/' + name, '--no-progress']) == 0\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=600)
    return out


def _frames(d: Path) -> list[str]:
    return sorted(p.name for p in (d / "frames").glob("frame_*.npz"))


def assert_same_outputs(ref: Path, job: Path) -> None:
    """Every NPZ array equal (t_capture_ns is a clock reading), the topology file, the summary's counts."""
    assert _frames(job) == _frames(ref) and _frames(ref)
    for name in _frames(ref):
        with np.load(ref / "frames" / name) as a, np.load(job / "frames" / name) as b:
            assert set(a.files) == set(b.files)
            for key in a.files:
                if key != "t_capture_ns":
                    np.testing.assert_array_equal(b[key], a[key], err_msg=f"{job.name}/{name}: {key}")
    with np.load(ref / "mesh.npz") as a, np.load(job / "mesh.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    s_ref = json.loads((ref / "summary.json").read_text())
    s_job = json.loads((job / "summary.json").read_text())
    for key in (
        "model",
        "frames",
        "frames_with_face",
        "frames_without_face",
        "faces",
        "corrupt_frames_skipped",
    ):
        assert s_job[key] == s_ref[key], key
    assert set(s_ref) <= set(s_job)
    assert not (job / ".partial").exists()


def test_library_job_equals_process_reports_corrupt_and_resumes(
    ray_local, clips, photo_dir, reference, tmp_path: Path, capsys
) -> None:
    from face3d_live.cli import main
    from face3d_live.scale.batch import run_batch
    from face3d_live.scale.config import BatchConfig, ModelOptions

    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 40_000, dtype=np.uint8).tobytes())
    listing = tmp_path / "library.txt"
    listing.write_text("\n".join(str(p) for p in [*clips, corrupt]) + "\n")
    out = tmp_path / "out"
    summary = run_batch(
        [str(listing), str(photo_dir)],
        out,
        BatchConfig(ModelOptions(MODEL), MAX_FRAMES, model_actors=0, progress=False),
    )

    assert (summary.count("done"), summary.count("skipped"), summary.failed) == (4, 0, 1)
    (failed,) = [o for o in summary.outcomes if o.status == "failed"]
    assert failed.name == "corrupt" and "cannot read" in failed.reason
    for name in ("single_face", "obama", "WolfgangLanger_Pexels", "expressions"):
        assert_same_outputs(reference / name, out / name)
    job = json.loads((out / "job-summary.json").read_text())
    assert job["done"] == 4 and job["failed"] == 1 and job["frames"] == summary.frames > 200
    assert json.loads((out / "expressions" / "summary.json").read_text())["corrupt_frames_skipped"] == 1

    # a rerun (through the CLI) finds every finished input unchanged and skips it
    argv = [
        str(listing),
        str(photo_dir),
        "--out",
        str(out),
        "--max-frames",
        str(MAX_FRAMES),
        "--model",
        MODEL,
    ]
    code = main(["process", *argv, "--ray", "--no-progress"])
    text = capsys.readouterr().out
    assert code == 1  # the corrupt file still fails, and says so
    assert "5 input(s): 0 done, 4 skipped (already done), 1 failed" in text
    assert "corrupt.mp4" in text and "cannot read" in text
    assert_same_outputs(reference / "obama", out / "obama")


@pytest.mark.parametrize(
    ("flags", "setting"),
    [(["--first-pass", "r50-lite"], {"first_pass": "r50-lite"}), (["--passes", "1"], {"passes": 1})],
    ids=["lighter-first-pass", "one-pass"],
)
def test_library_photos_with_other_passes_equal_process(
    ray_local, photo_dir, tmp_path: Path, flags: list[str], setting: dict
) -> None:
    """``--first-pass`` / ``--passes 1`` in a library job (with a first pass, each worker holds its model
    beside its own): the photos' outputs are, bit for bit, single-process ``process``'s with the same flag,
    and the summary names it."""
    from face3d_live.scale.batch import run_batch
    from face3d_live.scale.config import BatchConfig, ModelOptions

    ref = tmp_path / "ref"
    code = (
        "import sys; from face3d_live.cli import main\n"
        f"sys.exit(main(['process', {str(photo_dir)!r}, '--out', {str(ref)!r}, '--model', {MODEL!r},"
        f" *{flags!r}, '--no-progress']))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=600)
    out = tmp_path / "out"
    options = ModelOptions(MODEL, **setting)
    summary = run_batch([str(photo_dir)], out, BatchConfig(options, None, model_actors=0, progress=False))
    assert (summary.count("done"), summary.failed) == (1, 0)
    assert_same_outputs(ref, out / "expressions")
    assert setting.items() <= json.loads((out / "expressions" / "summary.json").read_text()).items()


def test_bench_batch_on_photos_records_its_model_options(ray_local, photo_dir, tmp_path: Path) -> None:
    """``bench batch`` over a photo folder with ``--passes 1 --baseline``: the job and the single-process
    baseline (``process`` with the same photo flags) reconstruct the same photos, and the JSON records the
    model options it ran with."""
    import argparse

    from face3d_live.bench import batch as bench_batch

    parser = argparse.ArgumentParser()
    bench_batch.add_arguments(parser)
    args = parser.parse_args(
        ["--inputs", str(photo_dir), "--copies", "2", "--model", MODEL, "--passes", "1", "--baseline"]
    )
    result = bench_batch.run(args)
    photos = 2 * PHOTOS  # the broken file is skipped and counted as bad, as by `process`
    assert result["inputs"] == 2 and result["job"]["frames"] == photos
    assert result["baseline_single_process"]["frames"] == photos
    assert result["model_options"]["passes"] == 1 and result["model_options"]["model"] == MODEL


def test_worker_killed_mid_job_completes(ray_local, clips, reference, tmp_path: Path) -> None:
    from face3d_live.scale.batch import run_batch
    from face3d_live.scale.config import BatchConfig, ModelOptions

    killed: list[int] = []

    def kill_one(snapshot: dict) -> None:
        if not killed and snapshot["frames"] >= 30 and snapshot["pids"]:
            task, pid = sorted(snapshot["pids"].items())[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    out = tmp_path / "out"
    config = BatchConfig(ModelOptions(MODEL), MAX_FRAMES, model_actors=0, progress=False)
    summary = run_batch([str(c) for c in clips], out, config, on_progress=kill_one)
    assert killed, "no worker was running when the job reported progress"
    assert summary.count("done") == 3 and summary.failed == 0
    for c in clips:
        assert_same_outputs(reference / c.stem, out / c.stem)


def test_chunks_through_a_model_actor(ray_local, clips, reference, tmp_path: Path, monkeypatch) -> None:
    """A long video cut into chunks (decoding starts `overlap` frames early) with the model in one actor that
    batches both workers' crops. Batches of other sizes change an INT8 network's output slightly, and
    tracking carries that on, so the frames match `process` to model noise, not bit for bit. The chunks are
    the automatic ones: one video for 2 workers (the shortest chunk lowered from 300 frames to 40 for a
    120-frame clip)."""
    from face3d_live.scale import work
    from face3d_live.scale.batch import run_batch
    from face3d_live.scale.config import BatchConfig, ModelOptions

    monkeypatch.setattr(work, "AUTO_MIN_CHUNK", 40)
    video = clips[2]  # WolfgangLanger: 472 frames
    out = tmp_path / "out"
    config = BatchConfig(
        ModelOptions(MODEL),
        MAX_FRAMES,
        chunk_overlap=10,
        model_actors=1,
        workers=2,
        progress=False,
    )
    summary = run_batch([str(video)], out, config)
    assert summary.count("done") == 1 and summary.model_actors == 1
    assert summary.batching["batches"] > 0
    d, ref = out / video.stem, reference / video.stem
    assert _frames(d) == _frames(ref)
    assert json.loads((d / "summary.json").read_text())["job"]["tasks"] == 3
    errors = []
    for name in _frames(ref):
        with np.load(ref / "frames" / name) as a, np.load(d / "frames" / name) as b:
            assert (
                int(b["frame_index"]) == int(a["frame_index"]) and b["vertices"].shape == a["vertices"].shape
            )
            errors.append(float(np.abs(b["vertices"] - a["vertices"]).mean()))
    assert np.median(errors) < 1.0 and max(errors) < 3.0, (np.median(errors), max(errors))
    assert not (d / ".partial").exists()


def test_concurrent_tasks_share_model_actor_calls(ray_local, data_dir: Path) -> None:
    """A worker's task threads call the model at once: their crops go to the model actor as one call and each
    thread gets its own rows back (real crops from a real clip, the real model actor)."""
    import threading

    import ray

    from face3d_live.capture.video import VideoFileSource
    from face3d_live.models.registry import create_model
    from face3d_live.scale.actors import ModelActor, RemoteModel

    size = 224
    with VideoFileSource(data_dir / "videos" / "single_face.mp4") as src:
        frames = [src.read().image for _ in range(4)]
    h, w = frames[0].shape[:2]
    crops = [
        f[(h - size) // 2 : (h + size) // 2, (w - size) // 2 : (w + size) // 2][None].copy() for f in frames
    ]

    actor = ModelActor.options(num_cpus=0).remote(MODEL, "auto", 64, 0.002, 1, logging.WARNING)
    try:
        remote = RemoteModel(actor, ray.get(actor.info.remote()), wait_s=5.0)  # long window: all 4 must join
        results: dict[int, object] = {}
        for _ in range(4):
            remote.task_started()

        def task(k: int) -> None:
            results[k] = remote.predict(crops[k])
            remote.task_ended()

        threads = [threading.Thread(target=task, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert remote.calls == 1 and remote.active == 0
        stats = ray.get(actor.batch_stats.remote())
        assert stats["crops"] == 4 and stats["requests"] == 1
    finally:
        ray.kill(actor, no_restart=True)
    model = create_model(MODEL)
    try:
        for k in range(4):
            alone = model.predict(crops[k])
            assert results[k].vertices.shape == alone.vertices.shape == (1, 468, 3)
            # one batch of 4 vs batches of 1: INT8 kernels may differ in the last bits, never by a pixel
            assert np.abs(results[k].vertices - alone.vertices).max() < 1.0
    finally:
        model.close()


def test_job_whose_workers_cannot_load_the_model_is_a_one_line_error(
    data_dir: Path, tmp_path: Path, cli_error_with_broken_weights
) -> None:
    """Every worker would fail the same way (a corrupt weights file): the job stops at the first one with the
    cause in one line and a non-zero exit, instead of failing each input with Ray's traceback."""
    pytest.importorskip("ray")
    clip = data_dir / "videos" / "obama.mp4"
    args = [
        "process",
        str(clip),
        "--ray",
        "auto",
        "--num-cpus",
        "2",
        "--model",
        "r50",
        "--out",
        str(tmp_path / "o"),
    ]
    error = cli_error_with_broken_weights(args)
    assert error.startswith("face3d-live: error: the job's workers could not start: ")
    assert "broken.safetensors" in error and "not a safetensors file" in error
