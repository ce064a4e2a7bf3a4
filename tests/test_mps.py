"""The service's private CUDA MPS daemon (scale/mps.py): why it is not used, said in one line (here, in CI),
and on a machine with an NVIDIA GPU and the MPS binary a real daemon whose clients share one server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from face3d_live.errors import ConfigError
from face3d_live.scale.mps import CONTROL, mps_client, mps_session


def test_modes_and_the_reasons_mps_is_not_started(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match="--mps must be one of"), mps_session("maybe", True, True):
        pass
    with mps_session("off", True, True) as line:
        assert line == "MPS off: turned off (--mps off)"
    with mps_session("auto", False, True) as line:
        assert "a Ray cluster" in line and "before `ray start`" in line
    with mps_session("auto", True, False) as line:
        assert line == "MPS off: no NVIDIA GPU here"
    with pytest.raises(ConfigError, match="--mps on: no NVIDIA GPU here"), mps_session("on", True, False):
        pass
    monkeypatch.setenv("PATH", "/nonexistent")
    with mps_session("auto", True, True) as line:
        assert f"{CONTROL} is not on PATH" in line
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ  # nothing left behind


def test_client_detection_follows_the_pipe_directory_and_a_live_daemon(tmp_path) -> None:
    """A control socket counts while something listens on it; the file a daemon that quit leaves does not."""
    import socket

    env = {"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path)}
    assert not mps_client(env)
    # the driver's daemon listens with SOCK_SEQPACKET; a stream socket stands for another driver's choice
    for kind in (socket.SOCK_SEQPACKET, socket.SOCK_STREAM):
        daemon = socket.socket(socket.AF_UNIX, kind)
        daemon.bind(str(tmp_path / "control"))
        daemon.listen(4)
        assert mps_client(env), kind
        daemon.close()  # the daemon quit: its socket file stays
        assert (tmp_path / "control").exists() and not mps_client(env), kind
        (tmp_path / "control").unlink()


def _gpu_reason() -> str | None:
    from face3d_live.scale.placement import local_gpu_memory_gib

    if shutil.which(CONTROL) is None:
        return f"{CONTROL} not on PATH"
    return None if local_gpu_memory_gib() is not None else "no NVIDIA GPU"


@pytest.mark.gpu
@pytest.mark.skipif(bool(_gpu_reason()), reason=_gpu_reason() or "GPU and MPS present")
def test_a_private_daemon_serves_its_clients_and_stops(monkeypatch) -> None:
    """Processes started inside the session connect to the private server (nvidia-smi lists its
    nvidia-cuda-mps-server); after it, the pipe directory is gone and the environment restored."""
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    with mps_session("on", True, True) as line:
        assert line.startswith("MPS on"), line
        pipe = os.environ["CUDA_MPS_PIPE_DIRECTORY"]
        assert mps_client()
        code = "import torch; x = torch.ones(1 << 20, device='cuda'); print(float(x.sum()))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stdout.strip() == str(float(1 << 20)), out.stderr[-500:]
        apps = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=process_name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        ).stdout
        assert "nvidia-cuda-mps-server" in apps, apps
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ
    assert not os.path.exists(pipe)
