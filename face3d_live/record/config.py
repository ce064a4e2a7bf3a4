"""Recording options (one frozen dataclass; only the CLI maps flags to it)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from face3d_live.errors import ConfigError

FORMATS = ("glb", "obj", "npz", "livelink-csv")
RIGS = ("none", "arkit")
TEXTURE_FORMATS = ("auto", "jpeg", "png")
INTERPOLATIONS = ("linear", "step")
TEXTURE_BAKERS = ("auto", "gl", "cpu")
MAX_TEXTURE_SIZE = 4096


@dataclass(frozen=True)
class RecordConfig:
    """How a recorded sequence is written.

    format:              glb (one animated asset), obj (OBJ+MTL per frame, one PNG), npz (arrays),
                         livelink-csv (the Live Link Face app's CSV take: 61 curves a frame, one file per face).
    texture_size:        side of the square texture in pixels (16 … 4096); 0 writes no texture.
    texture_format:      jpeg (small), png (lossless) or auto (JPEG in a GLB, PNG beside OBJ files).
    jpeg_quality:        1 … 100.
    keyframe_tolerance_mm: a frame becomes a new morph target only when some vertex of its pose-free
                         shape moved more than this (millimetres) from the last target; 0 keeps all.
    quantize:            KHR_mesh_quantization: morph targets as normalised int16 positions / int8 normals,
                         weights as normalised uint8.
    interpolation:       animation interpolation between capture timestamps (linear reaches every
                         recorded frame exactly at its timestamp and is smooth at VR frame rates).
    texture_every:       update the texture from every k-th frame (the texture converges in a few views).
    texture_views_per_pose: bake at most this many frames per 10° yaw/pitch bin (0 = no limit): long
                         takes stop paying for views the texture already has.
    texture_baker:       gl (the render package's TextureAccumulator on an EGL context: occlusion-aware,
                         mirror fill), cpu (record/texture.py, no GL needed) or auto (gl, else cpu).
    snapshot_every_s:    how often (wall seconds) the texture is saved beside the journal for --recover.
    rig:                 none (GLB: one morph target per frame of the followed face) or arkit (GLB: every
                         tracked face as its own node with 52 ARKit-named morph targets, the learned rig on
                         that person's neutral face, animated by the per-frame blendshapes; record/rig.py).
    """

    format: str = "glb"
    texture_size: int = 2048
    texture_format: str = "auto"
    jpeg_quality: int = 90
    keyframe_tolerance_mm: float = 0.0
    quantize: bool = False
    interpolation: str = "linear"
    texture_every: int = 3
    texture_views_per_pose: int = 6
    texture_baker: str = "auto"
    snapshot_every_s: float = 5.0
    rig: str = "none"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"unknown record format {self.format!r}; choose one of: {', '.join(FORMATS)}")
        if self.texture_format not in TEXTURE_FORMATS:
            raise ConfigError(
                f"unknown texture format {self.texture_format!r}; choose one of: {', '.join(TEXTURE_FORMATS)}"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"unknown interpolation {self.interpolation!r}; choose one of: {', '.join(INTERPOLATIONS)}"
            )
        if self.texture_size != 0 and not 16 <= self.texture_size <= MAX_TEXTURE_SIZE:
            raise ConfigError(
                f"texture size must be 0 (none) or 16…{MAX_TEXTURE_SIZE}, got {self.texture_size}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"JPEG quality must be 1…100, got {self.jpeg_quality}")
        if self.keyframe_tolerance_mm < 0:
            raise ConfigError(f"keyframe tolerance must be ≥ 0 mm, got {self.keyframe_tolerance_mm}")
        if self.texture_baker not in TEXTURE_BAKERS:
            raise ConfigError(
                f"unknown texture baker {self.texture_baker!r}; choose one of: {', '.join(TEXTURE_BAKERS)}"
            )
        if self.texture_views_per_pose < 0:
            raise ConfigError(f"texture_views_per_pose must be ≥ 0, got {self.texture_views_per_pose}")
        if self.texture_every < 1:
            raise ConfigError(f"texture_every must be ≥ 1, got {self.texture_every}")
        if self.snapshot_every_s <= 0:
            raise ConfigError(f"snapshot_every_s must be > 0, got {self.snapshot_every_s}")
        if self.rig not in RIGS:
            raise ConfigError(f"unknown rig {self.rig!r}; choose one of: {', '.join(RIGS)}")
        if self.rig != "none" and self.format != "glb":
            raise ConfigError(
                f"--rig {self.rig} writes a GLB; it cannot be combined with format {self.format}"
            )

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict) -> RecordConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown record option(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def with_(self, **changes) -> RecordConfig:
        return replace(self, **changes)
