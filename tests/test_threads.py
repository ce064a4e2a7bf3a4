"""The CLI caps BLAS at one thread (face3d_live/threads.py), unless the user set a BLAS thread variable."""

from __future__ import annotations

import subprocess
import sys

CODE = (
    "import numpy, threadpoolctl\n"
    "from face3d_live.threads import limit_blas_threads\n"
    "applied = limit_blas_threads()\n"
    "pools = [p for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas']\n"
    "print(applied, sorted({p['num_threads'] for p in pools}))\n"
)


def _run(env_extra: dict[str, str]) -> str:
    import os

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    }
    proc = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, env={**env, **env_extra}, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_one_blas_thread_by_default():
    assert _run({}) == "True [1]"


def test_user_setting_wins():
    out = _run({"OPENBLAS_NUM_THREADS": "2"})
    assert out.startswith("False")


WORKER = (
    "import sys\n"
    "from face3d_live.inference import cuda\n"
    "from face3d_live.threads import GIL_SWITCH_S, limit_worker_threads\n"
    "before = cuda._blocking_sync\n"
    "n = limit_worker_threads()\n"
    "print(before, cuda._blocking_sync, n, sys.getswitchinterval() == GIL_SWITCH_S)\n"
)


def _worker(env_extra: dict[str, str]) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "FACE3D_CUDA_WAIT")}
    proc = subprocess.run(
        [sys.executable, "-c", WORKER], capture_output=True, text=True, env={**env, **env_extra}, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_a_worker_among_many_sizes_its_threads_and_waits_on_the_gpu_as_asked(tmp_path):
    """Ray workers and Serve replicas: sized to $OMP_NUM_THREADS, a short GIL switch interval; CUDA's default
    wait, except in an MPS client (the service's replicas, one per CPU) or where FACE3D_CUDA_WAIT=block asks
    for waits that sleep; FACE3D_CUDA_WAIT=spin keeps the default in an MPS client (the GPU tests check the
    sleeping waits' CPU time)."""
    (tmp_path / "control").touch()  # an MPS control pipe's place: the process would be an MPS client
    mps = {"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path)}
    assert _worker({"OMP_NUM_THREADS": "3"}) == "False False 3 True"
    assert _worker({"OMP_NUM_THREADS": "1", "FACE3D_CUDA_WAIT": "block"}) == "False True 1 True"
    assert _worker({"OMP_NUM_THREADS": "1", **mps}) == "False True 1 True"
    assert _worker({"OMP_NUM_THREADS": "1", "FACE3D_CUDA_WAIT": "spin", **mps}) == "False False 1 True"
