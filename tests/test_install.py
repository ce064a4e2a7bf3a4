"""Install anywhere: the runtime dependencies resolve to wheels on CPython 3.13 and 3.14, and a plain
`pip install face3d-live` (no extras) on Python 3.13, where this machine has one, runs `process` on a real
clip and the app (offscreen Qt window, screenshot) with the default CPU model while `import torch` and
`import mediapipe` fail.

Both reach PyPI (as the setup does); they skip, saying so, where the index cannot be reached.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NETWORK_ERRORS = (
    "Could not fetch",
    "NewConnectionError",
    "Temporary failure in name resolution",
    "timed out",
)


def _python313() -> str | None:
    """A working CPython 3.13 interpreter: python3.13 on PATH (Debian 13's package), or a pyenv build."""
    for candidate in [
        shutil.which("python3.13"),
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.13*/bin/python3.13"))),
    ]:
        if candidate:
            proc = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
            )
            if proc.returncode == 0 and proc.stdout.strip() == "(3, 13)":
                return candidate
    return None


@pytest.mark.slow
def test_runtime_wheels_resolve_on_python_313_and_314():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_wheels.py"), "3.13", "3.14"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0 and any(e in proc.stdout + proc.stderr for e in NETWORK_ERRORS):
        pytest.skip(f"PyPI unreachable: {proc.stdout.strip()[-300:]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["CPython 3.13", "CPython 3.14"]
    for line in lines:
        picked = line.split(": ", 2)[2]
        assert "numpy==2." in picked  # numpy 2 on current Pythons
        assert "torch" not in picked and "mediapipe" not in picked


@pytest.mark.slow
def test_plain_install_on_python_313_runs_without_torch(tmp_path, video_path):
    py = _python313()
    if py is None:
        pytest.skip("no CPython 3.13 on this machine")
    clip = video_path("single_face.mp4")
    venv = tmp_path / "venv"
    subprocess.run([py, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    proc = subprocess.run([*pip, str(ROOT)], capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0 and any(e in proc.stderr for e in NETWORK_ERRORS):
        pytest.skip(f"PyPI unreachable: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    bin_ = venv / "bin"
    for module in ("torch", "mediapipe"):
        probe = subprocess.run(
            [str(bin_ / "python"), "-c", f"import {module}"], capture_output=True, text=True
        )
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, module
    env = {**os.environ, "FACE3D_ENGINES": str(tmp_path / "engines")}
    out = tmp_path / "out"
    run = subprocess.run(
        [
            str(bin_ / "face3d-live"),
            "process",
            str(clip),
            "--out",
            str(out),
            "--max-frames",
            "30",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # not the checkout: the installed package runs
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "r50-int8" and summary["frames_with_face"] >= 28, summary
    shot = tmp_path / "app.png"  # the app too, in a real (offscreen) Qt window, with the default CPU model
    app = subprocess.run(
        [
            str(bin_ / "face3d-live"),
            "app",
            "--source",
            str(clip),
            "--frames",
            "15",
            "--screenshot",
            str(shot),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**env, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert app.returncode == 0, app.stderr[-3000:]
    assert shot.is_file() and shot.stat().st_size > 10_000
    version = subprocess.run(
        [str(bin_ / "python"), "-c", "import numpy; print(numpy.__version__)"], capture_output=True, text=True
    )
    assert version.stdout.startswith("2."), version.stdout  # numpy 2 on Python 3.13
