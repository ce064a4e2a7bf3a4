"""Per-frame result files for `face3d-live process`: one NPZ per frame (+ optional OBJ per face)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np

from face3d_live.errors import Face3DError
from face3d_live.types import Face, Frame


def faces_to_arrays(faces: list[Face]) -> dict[str, np.ndarray]:
    """Stack a frame's faces; zero-length arrays when there is no face (an empty frame is a result)."""
    n = len(faces)
    return {
        "vertices": np.array([f.vertices for f in faces], np.float32).reshape(n, 468, 3),
        "landmarks68": np.array([f.landmarks68 for f in faces], np.float32).reshape(n, 68, 3),
        "rotation": np.array([f.pose.rotation for f in faces], np.float64).reshape(n, 3, 3),
        "translation": np.array([f.pose.translation for f in faces], np.float64).reshape(n, 3),
        "scale": np.array([f.pose.scale for f in faces], np.float64).reshape(n),
        "bbox": np.array([f.bbox for f in faces], np.float32).reshape(n, 4),
        "score": np.array([f.score for f in faces], np.float32).reshape(n),
        "track_id": np.array([f.track_id for f in faces], np.int32).reshape(n),
        # NaN where a face has none (a model without iris), so the arrays stay rectangular
        "iris": _stack([f.iris for f in faces], (10, 3)),
        "gaze": _stack([f.gaze for f in faces], (2, 2)),
        "blendshapes": _stack([f.blendshapes for f in faces], (52,)),
    }


def _stack(values: list[np.ndarray | None], shape: tuple[int, ...]) -> np.ndarray:
    out = np.full((len(values), *shape), np.nan, np.float32)
    for i, v in enumerate(values):
        if v is not None:
            out[i] = v
    return out


def write_obj(path: Path, face: Face) -> None:
    """Wavefront OBJ with UVs; y and z flipped so the mesh is upright and faces +z in usual 3D tools."""
    v = face.vertices.astype(np.float64) * np.array([1.0, -1.0, -1.0])
    lines = ["# face3d_live mesh, image pixel units"]
    lines += [f"v {x:.4f} {y:.4f} {z:.4f}" for x, y, z in v]
    lines += [f"vt {u:.6f} {1.0 - w:.6f}" for u, w in face.uv]
    # flipping y and z keeps the handedness, so the winding stays counter-clockwise from the viewer
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in face.triangles + 1]
    path.write_text("\n".join(lines) + "\n")


class FrameResultWriter:
    """Writes DIR/frames/frame_NNNNNN.npz (+ DIR/obj/frame_NNNNNN_faceK.obj), DIR/mesh.npz (topology)
    and, on close, DIR/summary.json. Each frame is on disk as soon as it is processed."""

    def __init__(self, out_dir: Path, write_obj_files: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.write_obj_files = write_obj_files
        self.frames = 0
        self._topology_written = False
        try:
            (self.out_dir / "frames").mkdir(parents=True, exist_ok=True)
            if write_obj_files:
                (self.out_dir / "obj").mkdir(exist_ok=True)
        except OSError as exc:
            raise Face3DError(f"cannot create output folder {self.out_dir}: {exc.strerror}") from exc

    def write(self, frame: Frame) -> None:
        try:
            arrays = faces_to_arrays(frame.faces)
            np.savez(
                self.out_dir / "frames" / f"frame_{frame.frame_id:06d}.npz",
                frame_index=np.int64(frame.frame_id),
                timestamp_s=np.float64(frame.timestamp_s),
                t_capture_ns=np.int64(frame.t_capture_ns),
                **arrays,
            )
            if frame.faces and not self._topology_written:
                np.savez(self.out_dir / "mesh.npz", triangles=frame.faces[0].triangles, uv=frame.faces[0].uv)
                self._topology_written = True
            if self.write_obj_files:
                for k, face in enumerate(frame.faces):
                    write_obj(self.out_dir / "obj" / f"frame_{frame.frame_id:06d}_face{k}.obj", face)
        except OSError as exc:
            reason = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
            raise Face3DError(f"cannot write results to {self.out_dir}: {reason}") from exc
        self.frames += 1

    def close(self, summary: dict) -> None:
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
