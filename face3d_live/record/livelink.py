"""``record --format livelink-csv``: the take as Live Link Face CSV files, one per tracked face.

The layout is the one Epic's Live Link Face app records (``Timecode,BlendShapeCount,EyeBlinkLeft,…``, 61
curves: the 52 ARKit shapes, then head and eye yaw/pitch/roll in radians), written by the streaming sinks'
``LiveLinkCsvWriter`` from ``livelink_values(face)`` so a recorded take and a live stream carry the same
numbers. Timecodes count from the first recorded frame at the source's frame rate (60 for a camera).
The first face (in order of first appearance) goes to ``OUT``; each further face to ``OUT`` with ``_1``,
``_2``, … before the suffix (``take.csv``, ``take_1.csv``). A face gets a row for every frame it was seen in.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from face3d_live.geometry import mesh
from face3d_live.record.journal import FLAG_BLENDSHAPES, FLAG_GAZE, FLAG_IRIS, Recording, os_error
from face3d_live.types import Face, Pose

DEFAULT_FPS = 60.0  # the Live Link Face app's own rate; used when the source has none (a camera)


def csv_paths(out: Path, n: int) -> list[Path]:
    """``OUT``, then ``OUT`` with ``_1``, ``_2``, … before the suffix."""
    out = Path(out)
    return [out] + [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(1, n)]


def face_at(view: Recording, i: int) -> Face:
    """The recorded face of frame row ``i`` as a ``Face`` (what the stream sinks take)."""
    flags = int(view.flags[i])
    v = view.vertices[i]
    lo, hi = v[:, :2].min(0), v[:, :2].max(0)
    return Face(
        vertices=v,
        landmarks68=view.landmarks68[i],
        triangles=mesh.triangles(),
        uv=mesh.uv_coords(),
        pose=Pose(view.rotation[i], view.translation[i], float(view.scale[i])),
        bbox=(float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])),
        score=float(view.score[i]),
        track_id=int(view.track_id[i]),
        iris=view.iris[i] if flags & FLAG_IRIS else None,
        gaze=view.gaze[i] if flags & FLAG_GAZE else None,
        blendshapes=view.blendshapes[i] if flags & FLAG_BLENDSHAPES else None,
    )


def export_livelink_csv(rec: Recording, out: Path) -> dict:
    """One CSV per tracked face (module docstring); returns a summary (paths, rows, bytes)."""
    from face3d_live.record.rig import track_keys
    from face3d_live.stream.livelink import LiveLinkCsvWriter, livelink_values

    keys = track_keys(rec)
    fps = float(rec.header.get("fps") or DEFAULT_FPS)
    paths = csv_paths(out, len(keys))
    rows, size = [], 0
    for key, path in zip(keys, paths):
        view = rec.track(key)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with LiveLinkCsvWriter(tmp, fps=fps) as w:
                for i in np.flatnonzero(view.has_face):
                    w.write(float(rec.timestamps[i] - rec.timestamps[0]), livelink_values(face_at(view, i)))
            os.replace(tmp, path)
            size += path.stat().st_size
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise os_error(exc, path, "write") from None
        rows.append(w.rows)
    return {
        "path": paths[0],
        "paths": paths,
        "frames": len(rec),
        "tracks": len(keys),
        "rows": rows,
        "bytes": size,
        "duration_s": rec.duration,
    }
