"""CUDA MPS for the service: one GPU context shared by all the replicas' processes.

Why: every HTTP replica that holds its model on a GPU is a process with its own CUDA context, and without MPS
the GPU time-slices between them. With JPEG decoding and detection on the GPU too (``gpu_front``), ten replicas'
small kernels kept the H200 99 % busy switching contexts: 538-617 requests/s against 641-675 with decoding on
the CPU. Under MPS their kernels share the GPU at once (70 % busy) and the same service answered 717-791
(README "Scale-out on Ray", 2026-12-04). So ``serve`` starts a private MPS control daemon for the local Ray
instance it starts (its own pipe directory: other programs on the GPU are not affected and do not connect),
and the replicas decode on the GPU where they are MPS clients (``gpu_decode`` auto).

A cluster: start MPS on each GPU node before ``ray start`` (``nvidia-cuda-mps-control -d``); the replicas
there find its pipe and decode on the GPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from face3d_live.errors import ConfigError
from face3d_live.inference.cuda import mps_client

log = logging.getLogger(__name__)

MPS_MODES = ("auto", "on", "off")
CONTROL = "nvidia-cuda-mps-control"
_ENV = ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")

# a CUDA context on device 0 through the driver API: under MPS this connects to (and starts) the MPS server,
# so a server that cannot run here fails this probe instead of every replica
_PROBE = """
import ctypes, sys
cu = ctypes.CDLL("libcuda.so.1")
dev, ctx = ctypes.c_int(), ctypes.c_void_p()
for step, rc in (("cuInit", lambda: cu.cuInit(0)), ("cuDeviceGet", lambda: cu.cuDeviceGet(ctypes.byref(dev), 0)),
                 ("cuCtxCreate", lambda: cu.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev))):
    code = rc()
    if code:
        sys.exit(f"{step} failed with CUDA error {code}")
cu.cuCtxDestroy_v2(ctx)
"""


@contextlib.contextmanager
def mps_session(mode: str, local: bool, gpus: bool) -> Iterator[str]:
    """Inside the block, processes started from here (a local Ray instance and its replicas) are MPS clients
    when ``mode`` asks for it. ``local``: Ray will start here (a cluster's nodes run their own MPS); ``gpus``:
    this machine has an NVIDIA GPU. Yields one line saying what was done. "on" raises ConfigError where MPS
    cannot run; "auto" goes on without it and says why."""
    if mode not in MPS_MODES:
        raise ConfigError(f"--mps must be one of {', '.join(MPS_MODES)}, got {mode!r}")
    why = _why_not(mode, local, gpus)
    if why is not None:
        if mode == "on":
            raise ConfigError(f"--mps on: {why}")
        yield f"MPS off: {why}"
        return
    if mps_client():
        yield "MPS: a server already runs here; the replicas connect to it"
        return
    root = Path(tempfile.mkdtemp(prefix="face3d-mps-"))
    env = {
        **os.environ,
        "CUDA_MPS_PIPE_DIRECTORY": str(root / "pipe"),
        "CUDA_MPS_LOG_DIRECTORY": str(root / "log"),
    }
    saved = {k: os.environ.get(k) for k in _ENV}
    try:
        failure = _start(env, root)
        if failure is not None:
            _stop(env)
            if mode == "on":
                raise ConfigError(f"--mps on: {failure}")
            log.warning("MPS not used: %s", failure)
            yield f"MPS off: {failure}"
            return
        os.environ.update({k: env[k] for k in _ENV})  # read by Ray and every process it starts
        try:
            yield f"MPS on: the replicas share one GPU context (pipe {env['CUDA_MPS_PIPE_DIRECTORY']})"
        finally:
            _stop(env)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(root, ignore_errors=True)


def _why_not(mode: str, local: bool, gpus: bool) -> str | None:
    if mode == "off":
        return "turned off (--mps off)"
    if not local:
        return "a Ray cluster: start MPS on each GPU node before `ray start` (nvidia-cuda-mps-control -d)"
    if not gpus:
        return "no NVIDIA GPU here"
    if shutil.which(CONTROL) is None:
        return f"{CONTROL} is not on PATH (it comes with the NVIDIA driver's utilities)"
    return None


def _start(env: dict, root: Path) -> str | None:
    """Start the control daemon and connect once; None, or why it failed (one line)."""
    (root / "pipe").mkdir()
    (root / "log").mkdir()
    try:
        subprocess.run([CONTROL, "-d"], env=env, check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{CONTROL} -d failed: {exc}"
    deadline = time.monotonic() + 5.0
    while not mps_client(env):
        if time.monotonic() > deadline:
            return f"{CONTROL} -d started no control pipe in 5 s"
        time.sleep(0.05)
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"a CUDA context under MPS failed: {exc}"
    if probe.returncode != 0:
        lines = (probe.stderr or probe.stdout or "").strip().splitlines()
        server_log = _last_line(root / "log" / "server.log") or _last_line(root / "log" / "control.log")
        return f"a CUDA context under MPS failed: {lines[-1] if lines else probe.returncode}" + (
            f" (MPS: {server_log})" if server_log else ""
        )
    return None


def _stop(env: dict) -> None:
    """Ask the daemon to quit (it stops its server once the clients have gone)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([CONTROL], input=b"quit\n", env=env, capture_output=True, timeout=10)


def _last_line(path: Path) -> str | None:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    return lines[-1].strip() if lines else None
