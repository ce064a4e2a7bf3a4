"""Library jobs with the model on a GPU (skipped without CUDA): workers that own their model on a share of
the GPU (``--model-actors 0``) and run several tasks at once, their crops batched together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import local_ray

from face3d_live.inference.cuda import cuda_status

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(bool(cuda_status()), reason=cuda_status() or "CUDA present"),
]

MODEL = "r50"
MAX_FRAMES = 120
CLIPS = ("single_face.mp4", "obama.mp4", "WolfgangLanger_Pexels.mp4")


@pytest.fixture(scope="module")
def ray_gpu():
    with local_ray(num_cpus=4, num_gpus=1):
        yield


def _process(clip: Path, out: Path) -> None:
    args = [str(clip), "--max-frames", str(MAX_FRAMES), "--model", MODEL, "--out", str(out), "--no-progress"]
    code = f"import sys; from face3d_live.cli import main; sys.exit(main({['process', *args]!r}))"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=600)


def test_workers_owning_gpu_models_share_batches_and_match_process(ray_gpu, data_dir: Path, tmp_path: Path):
    """3 clips on 1 worker with 3 task slots: its tasks' crops go to its own GPU model as shared batches
    (more crops than calls), and every frame matches single-process `process` to model noise (batches of
    other sizes change an FP16 network's last bits, which tracking carries on)."""
    from face3d_live.scale.batch import run_batch
    from face3d_live.scale.config import BatchConfig, ModelOptions

    clips = [data_dir / "videos" / c for c in CLIPS]
    if not all(c.is_file() for c in clips):
        pytest.skip("shared clips missing")
    config = BatchConfig(
        ModelOptions(MODEL),
        MAX_FRAMES,
        model_actors=0,
        workers=1,
        tasks_per_worker=3,
        chunk_frames=0,
        batch_wait_ms=50.0,  # a long window: the three tasks' calls always meet
        progress=False,
    )
    out = tmp_path / "out"
    summary = run_batch([str(c) for c in clips], out, config)
    assert summary.count("done") == 3 and summary.model_actors == 0 and summary.tasks_per_worker == 3
    batching = summary.batching
    assert batching["batches"] > 0 and batching["max_requests"] == 3 and batching["mean_requests"] > 1.5, (
        batching
    )
    for clip in clips:
        ref = tmp_path / "ref" / clip.stem
        _process(clip, ref)
        d = out / clip.stem
        names = sorted(p.name for p in (d / "frames").glob("frame_*.npz"))
        assert names == sorted(p.name for p in (ref / "frames").glob("frame_*.npz")) and names
        errors = []
        for name in names:
            with np.load(ref / "frames" / name) as a, np.load(d / "frames" / name) as b:
                assert b["vertices"].shape == a["vertices"].shape
                errors.append(float(np.abs(b["vertices"] - a["vertices"]).mean()))
        assert np.median(errors) < 1.0 and max(errors) < 3.0, (clip.name, np.median(errors), max(errors))
        assert json.loads((d / "summary.json").read_text())["model"] == MODEL
