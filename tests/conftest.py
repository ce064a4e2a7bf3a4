"""Shared fixtures: real images (scikit-image's astronaut ships with the package) and the real clips
in ../shared/data/videos (tests that need them skip when the folder is absent, as in a fresh clone)."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# A native crash (a segfault in the GL driver, a codec or a model runtime) kills the test process. README's
# test command runs the tests in one pytest-xdist worker (`-n 1`), so such a crash ends that worker only:
# pytest-rerunfailures runs the crashed test once more on a fresh worker, the crash's traceback
# (faulthandler) stays in the log and the summary counts the rerun. Failed assertions and errors are
# never rerun: CRASH_ONLY is a pattern no error message matches.
CRASH_ONLY = "(?!)"


def pytest_collection_modifyitems(config, items):
    if config.pluginmanager.hasplugin("rerunfailures"):
        for item in items:
            item.add_marker(pytest.mark.flaky(reruns=1, only_rerun=[CRASH_ONLY]))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    from face3d_live.training.data import default_data_dir

    d = default_data_dir()
    if not (d / "videos").is_dir():
        pytest.skip(f"shared data not found at {d}")
    return d


@pytest.fixture(scope="session")
def video_path(data_dir: Path):
    def find(name: str) -> Path:
        p = data_dir / "videos" / name
        if not p.is_file():
            pytest.skip(f"{p} missing")
        return p

    return find


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def reconstructor():
    from face3d_live import Reconstructor

    with Reconstructor("mediapipe") as rec:
        yield rec


@pytest.fixture(scope="module")
def ctx():
    """A headless (EGL) ModernGL context; the test module skips where none can be made."""
    from face3d_live.errors import BackendUnavailable
    from face3d_live.render import create_context

    try:
        context = create_context("egl")
    except BackendUnavailable as exc:
        pytest.skip(f"no headless GL: {exc}")
    yield context
    context.release()


@pytest.fixture
def cli_error_with_broken_weights(tmp_path: Path):
    """``run(args)``: `face3d-live ARGS` in a subprocess with FACE3D_R50_WEIGHTS pointing at a corrupt file;
    asserts a non-zero exit with exactly one ``face3d-live: error:`` line, and returns that line."""
    import subprocess
    import sys

    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a weights file")
    env = dict(os.environ, FACE3D_R50_WEIGHTS=str(bad))
    cmd = [sys.executable, "-c", "import sys; from face3d_live.cli import main; sys.exit(main(sys.argv[1:]))"]

    def run(args: list[str]) -> str:
        proc = subprocess.run(cmd + args, env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode != 0
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("face3d-live: error: ")]
        assert len(errors) == 1, proc.stderr[-2000:]
        return errors[0]

    return run


@contextlib.contextmanager
def local_ray(num_cpus: int, num_gpus: int):
    """A real local Ray instance (the project's system config) for a test module, shut down after."""
    ray = pytest.importorskip("ray")
    from face3d_live.scale.cluster import LOCAL_SYSTEM_CONFIG

    ray.init(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        logging_level=logging.WARNING,
        _system_config=LOCAL_SYSTEM_CONFIG,
    )
    try:
        yield
    finally:
        ray.shutdown()
