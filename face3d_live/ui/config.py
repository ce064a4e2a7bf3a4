"""The live app's configuration (one frozen dataclass; only the CLI maps flags to it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from face3d_live.detect.tracker import TrackerConfig
from face3d_live.geometry.one_euro import OneEuroConfig
from face3d_live.monitor.alerts import AlertConfig
from face3d_live.ui.scene import SceneConfig

BACKEND_CHOICES = ("auto", "litert", "torch", "onnxruntime", "tensorrt")
RECORD_FORMATS = ("glb", "npz", "obj")


@dataclass(frozen=True)
class AppConfig:
    """source: "demo", a camera index ("0") or a file/folder path; a missing camera falls back to the
    demo with a visible message. pace_fps: file playback rate (None: the file's own). quit_after_frames:
    close after this many frames shown (scripted runs), saving ``screenshot`` first when given."""

    source: str = "0"
    model: str = "mediapipe"
    backend: str = "auto"
    tracker: TrackerConfig = TrackerConfig()
    smoothing: OneEuroConfig | None = OneEuroConfig()
    scene: SceneConfig = SceneConfig()
    alerts: AlertConfig = AlertConfig()
    pace_fps: float | None = None
    record_dir: Path = Path("recordings")
    record_format: str = "glb"
    snapshot_dir: Path = Path("snapshots")
    quit_after_frames: int | None = None
    screenshot: Path | None = None
    window_size: tuple[int, int] = (1360, 760)

    def __post_init__(self) -> None:
        from face3d_live.errors import ConfigError

        if self.backend not in BACKEND_CHOICES:
            raise ConfigError(
                f"unknown backend {self.backend!r}; choose one of: {', '.join(BACKEND_CHOICES)}"
            )
        if self.record_format not in RECORD_FORMATS:
            raise ConfigError(
                f"unknown record format {self.record_format!r}; choose one of: {', '.join(RECORD_FORMATS)}"
            )
        if self.quit_after_frames is not None and self.quit_after_frames < 1:
            raise ConfigError(f"--frames must be >= 1, got {self.quit_after_frames}")
