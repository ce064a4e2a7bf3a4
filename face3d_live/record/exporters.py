"""Turn a read-back journal (``Recording``) into GLB (per-frame morph targets, or ``rig.py``'s ARKit rig),
an OBJ+MTL sequence, NPZ, or Live Link Face CSV takes (``livelink.py``)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import cv2
import numpy as np

from face3d_live.errors import RecordError
from face3d_live.geometry import mesh
from face3d_live.record.config import RecordConfig
from face3d_live.record.coords import node_apply, to_asset, vertex_normals
from face3d_live.record.journal import Recording, atomic_write, os_error

log = logging.getLogger(__name__)


def texture_format(config: RecordConfig) -> str:
    """jpeg or png; 'auto' is JPEG inside a GLB (small) and PNG beside OBJ files (lossless)."""
    if config.texture_format != "auto":
        return config.texture_format
    return "png" if config.format == "obj" else "jpeg"


def encode_texture(texture: np.ndarray, config: RecordConfig) -> tuple[bytes, str]:
    """Resize to ``config.texture_size`` and encode: (bytes, MIME type)."""
    size = config.texture_size
    if texture.shape[:2] != (size, size):
        interp = cv2.INTER_CUBIC if size > texture.shape[0] else cv2.INTER_AREA
        texture = cv2.resize(texture, (size, size), interpolation=interp)
    bgr = cv2.cvtColor(np.ascontiguousarray(texture, np.uint8), cv2.COLOR_RGB2BGR)
    if texture_format(config) == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        mime = "image/png"
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
        mime = "image/jpeg"
    if not ok:
        raise RecordError(f"could not encode the {size}² texture as {mime}")
    return buf.tobytes(), mime


def export(rec: Recording, texture: np.ndarray | None, out: Path, config: RecordConfig) -> dict:
    """Write ``rec`` to ``out`` in ``config.format``; returns a summary dict (frames, bytes, …)."""
    out = Path(out)
    if config.format == "livelink-csv":  # curves only: no mesh, no texture
        from face3d_live.record.livelink import export_livelink_csv

        return export_livelink_csv(rec, out)
    if config.texture_size == 0:
        texture = None
    elif texture is None:
        log.warning("no texture was captured; the asset gets a flat skin colour")
    if config.format == "glb" and config.rig == "arkit":
        from face3d_live.record.rig import export_rig_glb

        return export_rig_glb(rec, texture, out, config)
    if config.format == "glb":
        return export_glb(rec, texture, out, config)
    if config.format == "obj":
        return export_obj(rec, texture, out, config)
    return export_npz(rec, texture, out, config)


def export_glb(rec: Recording, texture: np.ndarray | None, out: Path, config: RecordConfig) -> dict:
    from face3d_live.record.glb import write_glb

    frames = to_asset(rec)
    data, mime = encode_texture(texture, config) if texture is not None else (None, "")
    return {"path": out, **write_glb(out, frames, data, mime, config)}


def export_npz(rec: Recording, texture: np.ndarray | None, out: Path, config: RecordConfig) -> dict:
    """Frames with a face only, in image pixels exactly as reconstructed."""
    keep = rec.has_face
    arrays = {
        "vertices": rec.vertices[keep],
        "landmarks68": rec.landmarks68[keep],
        "rotation": rec.rotation[keep],
        "translation": rec.translation[keep],
        "scale": rec.scale[keep],
        "timestamps": rec.timestamps[keep],
        "frame_index": rec.frame_index[keep],
        "score": rec.score[keep],
        "track_id": rec.track_id[keep],
        "triangles": mesh.triangles(),
        "uv": mesh.uv_coords(),
    }
    if texture is not None:
        size = config.texture_size
        if texture.shape[0] != size:
            texture = cv2.resize(texture, (size, size), interpolation=cv2.INTER_CUBIC)
        arrays["texture"] = texture
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(out, buf.getbuffer())
    return {
        "path": out,
        "frames": int(keep.sum()),
        "bytes": buf.getbuffer().nbytes,
        "duration_s": rec.duration,
    }


def export_obj(rec: Recording, texture: np.ndarray | None, out: Path, config: RecordConfig) -> dict:
    """A folder: ``frame_NNNNNN.obj`` per frame with a face (scene metres, +Y up, head pose applied),
    one ``face.mtl`` and the texture, plus ``timestamps.txt`` (frame file, seconds)."""
    frames = to_asset(rec)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, out, "create the folder") from None
    tris = mesh.triangles()
    uv = mesh.uv_coords()
    ext = texture_format(config)
    tex_name = f"face_albedo.{'png' if ext == 'png' else 'jpg'}"
    mtl = "newmtl face\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\n"
    total = 0
    if texture is not None:
        data, _ = encode_texture(texture, config)
        atomic_write(out / tex_name, data)
        mtl += f"map_Kd {tex_name}\n"
        total += len(data)
    atomic_write(out / "face.mtl", mtl.encode())
    # OBJ's v axis points up the image; our UVs have v = 0 at the top
    vt = "".join(f"vt {u:.6f} {1 - v:.6f}\n" for u, v in uv)
    f1 = tris + 1
    faces = "".join(f"f {a}/{a}/{a} {b}/{b}/{b} {c}/{c}/{c}\n" for a, b, c in f1)
    stamps = []
    idx = np.flatnonzero(rec.has_face)
    world = np.stack(
        [
            node_apply(frames.shapes[i], frames.rotation[i], frames.translation[i], frames.scale[i])
            for i in idx
        ]
    )
    all_normals = vertex_normals(world, tris)
    for j, i in enumerate(idx):
        normals = all_normals[j]
        name = f"frame_{int(rec.frame_index[i]):06d}.obj"
        text = "".join(
            [
                f"# face3d-live frame {int(rec.frame_index[i])} t={rec.timestamps[i]:.6f}s\n",
                "mtllib face.mtl\n",
                _rows("v", world[j]),
                vt,
                _rows("vn", normals),
                "usemtl face\n",
                faces,
            ]
        ).encode()
        atomic_write(out / name, text)
        total += len(text)
        stamps.append(f"{name} {rec.timestamps[i]:.6f}\n")
    atomic_write(out / "timestamps.txt", "".join(stamps).encode())
    return {"path": out, "frames": len(stamps), "bytes": total, "duration_s": rec.duration}


def _rows(tag: str, arr: np.ndarray) -> str:
    return (f"{tag} %.6f %.6f %.6f\n" * len(arr)) % tuple(np.asarray(arr, np.float64).ravel())
