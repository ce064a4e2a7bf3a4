"""A textured GLB of one face in one photo (``POST /v1/avatar``, photo inputs of a job with --glb), built by
the recording package's public writer, as ``face3d-live record photo.jpg --out head.glb`` builds it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from face3d_live.types import Face

AVATAR_TEXTURE = 1024


def avatar_glb(
    image: np.ndarray, face: Face, texture_size: int = AVATAR_TEXTURE, baker: str = "cpu"
) -> bytes:
    """GLB bytes: the face's mesh with the photo baked into its UV texture. ``baker="cpu"`` needs no GL
    context (a service replica bakes on any machine); "auto" uses EGL when it can."""
    from face3d_live.record import RecordConfig, SequenceWriter

    config = RecordConfig(format="glb", texture_size=texture_size, texture_baker=baker)
    with tempfile.TemporaryDirectory(prefix="face3d-avatar-") as tmp:
        out = Path(tmp) / "avatar.glb"
        with SequenceWriter(out, config, journal_dir=Path(tmp) / "journal", fps=None) as writer:
            writer.write(0, 0.0, [face], image=image)
        return out.read_bytes()
