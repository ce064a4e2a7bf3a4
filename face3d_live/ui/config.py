"""The live app's configuration (frozen dataclasses composed in AppConfig; only the CLI maps flags to it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from face3d_live.detect.tracker import TrackerConfig
from face3d_live.geometry.one_euro import OneEuroConfig
from face3d_live.monitor.alerts import AlertConfig
from face3d_live.ui.scene import SceneConfig

BACKEND_CHOICES = ("auto", "litert", "torch", "onnxruntime", "tensorrt")
RECORD_FORMATS = ("glb", "npz", "obj")
VIEWS = ("3d", "avatar")  # what the right-hand pane shows (and the virtual camera sends)


@dataclass(frozen=True)
class OutputConfig:
    """Avatar output at start: ``vmc`` / ``livelink`` HOST:PORT to stream to (None: off; the UI still
    offers the default addresses), ``virtual_camera``: send the shown view to a virtual camera of
    ``vcam_size`` (w, h) at ``vcam_fps`` (None: the source's frame rate). ``subject``: the Live Link name."""

    vmc: str | None = None
    livelink: str | None = None
    subject: str = "face3d"
    virtual_camera: bool = False
    vcam_size: tuple[int, int] = (1280, 720)
    vcam_fps: float | None = None

    def __post_init__(self) -> None:
        from face3d_live.errors import ConfigError
        from face3d_live.stream.address import parse_address

        if self.vmc is not None:
            parse_address(self.vmc, "VMC address")
        if self.livelink is not None:
            parse_address(self.livelink, "Live Link address")
        w, h = self.vcam_size
        if w < 16 or h < 16 or w % 2 or h % 2:
            raise ConfigError(f"virtual camera size must be even and at least 16x16, got {w}x{h}")
        if self.vcam_fps is not None and not 1 <= self.vcam_fps <= 240:
            raise ConfigError(f"virtual camera frame rate must be 1-240, got {self.vcam_fps}")


@dataclass(frozen=True)
class AppConfig:
    """source: "demo", a camera index ("0") or a file/folder path; a missing camera falls back to the
    demo with a visible message. pace_fps: file playback rate (None: the file's own). quit_after_frames:
    close after this many frames shown (scripted runs), saving ``screenshot`` first when given.
    view: the right-hand pane at start, "3d" (the textured face) or "avatar" (the rigged head + bars)."""

    source: str = "0"
    model: str = "mediapipe"
    backend: str = "auto"
    tracker: TrackerConfig = TrackerConfig()
    smoothing: OneEuroConfig | None = OneEuroConfig()
    scene: SceneConfig = SceneConfig()
    alerts: AlertConfig = AlertConfig()
    output: OutputConfig = OutputConfig()
    view: str = "3d"
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
        if self.view not in VIEWS:
            raise ConfigError(f"unknown view {self.view!r}; choose one of: {', '.join(VIEWS)}")
        if self.quit_after_frames is not None and self.quit_after_frames < 1:
            raise ConfigError(f"--frames must be >= 1, got {self.quit_after_frames}")
