"""``record --rig arkit``: every tracked face as a personal ARKit rig animated by its blendshapes.

Per track (a node with its own mesh):
  * the base mesh is that person's neutral face (``avatar.calibrate.personal_rig``: the pose-free mesh of their
    least expressive frames, the little expression left in them taken off with the rig), metres, glTF axes;
  * 52 morph targets, named as ARKit in ``mesh.extras.targetNames`` (what Blender, three.js and Babylon
    read), hold the learned rig's offsets carried onto that neutral (``ArkitRig.personalised``);
  * the ``weights`` animation is the per-frame ``Face.blendshapes``; the node's TRS animation is the head
    pose, in record/coords.py's convention (rotation ``F R F``, translation ``F (t - origin) * metres_per_pixel``,
    uniform scale ``s / s_ref``), with the pose fitted on the rigid points (``avatar.rig.rigid_pose``) that
    the rig's pose-free frame uses, so an open jaw does not nod the head;
  * the texture baked for that track (the existing texture path, one accumulator per track).
One ``s_ref`` (median scale over every face) and one ``origin`` (the first face's position) serve all tracks,
so the heads keep their places and relative sizes from the video. Frames where a track is not seen hold its
last pose and expression (its first before it appears). Tracks seen in fewer than ``MIN_TRACK_FRAMES``
frames (a detector blip) are left out unless nothing else is left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from face3d_live import __version__
from face3d_live.avatar.calibrate import personal_rig
from face3d_live.avatar.rig import ArkitRig, pose_free, rigid_pose
from face3d_live.errors import RecordError
from face3d_live.expression.arkit import ARKIT_BLENDSHAPES
from face3d_live.geometry import mesh
from face3d_live.record.config import RecordConfig
from face3d_live.record.coords import CANONICAL_UNIT_M, FLIP, _hold_last_face, quaternions, vertex_normals
from face3d_live.record.glb import (
    ARRAY_BUFFER,
    ELEMENT_ARRAY_BUFFER,
    QUANT_EXT,
    USHORT,
    _node_name,
    _Packer,
    add_texture,
    assemble,
    morph_targets,
)
from face3d_live.record.journal import Recording, atomic_write

log = logging.getLogger(__name__)

MIN_TRACK_FRAMES = 3


@dataclass
class RigTrack:
    """One tracked face in glTF terms, one row per recorded frame (F).

    rig: the personal rig (canonical units); neutral_frames: frame rows its neutral came from;
    weights (F, 52) float32; rotation (F, 4) xyzw; translation (F, 3) metres; scale (F,); own_face (F,) bool;
    texture: HxWx3 uint8 or None.
    """

    key: int
    rig: ArkitRig
    neutral_frames: np.ndarray
    weights: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    scale: np.ndarray
    own_face: np.ndarray
    texture: np.ndarray | None


def track_keys(rec: Recording) -> list[int]:
    """The tracks an every-face export writes, in order of first appearance: those seen in at least
    ``MIN_TRACK_FRAMES`` frames, or all of them when none is; ``RecordError`` without any face."""
    keys = rec.track_keys(min(MIN_TRACK_FRAMES, len(rec))) or rec.track_keys()
    if not keys:
        raise RecordError("no face was recorded in any frame; nothing to export")
    return keys


def rig_tracks(
    rec: Recording, rig: ArkitRig, texture: np.ndarray | None = None
) -> tuple[list[RigTrack], dict]:
    """Every track of the recording as a ``RigTrack`` + the shared scene mapping (``metres_per_pixel``,
    ``origin_px``, ``s_ref``). ``texture`` stands in for the followed face's track when it has none."""
    keys = track_keys(rec)
    views = [rec.track(k) for k in keys]
    poses = {k: rigid_pose(v.vertices[v.has_face]) for k, v in zip(keys, views)}
    all_scales = np.concatenate([[p.scale for p in ps] for ps in poses.values()])
    s_ref = float(np.median(all_scales))
    mpp = CANONICAL_UNIT_M / s_ref
    origin = np.asarray(poses[keys[0]][0].translation)  # keys[0] is the first face to appear
    primary_key = int(rec.track_id[np.argmax(rec.has_face)]) if rec.has_face.any() else None
    tracks = []
    for key, view in zip(keys, views):
        own = view.has_face
        meshes = pose_free(view.vertices[own])
        personal, used = personal_rig(meshes, view.blendshapes[own], rig)
        ps = poses[key]
        rot = np.stack([p.rotation for p in ps])
        t = np.stack([p.translation for p in ps])
        s = np.array([p.scale for p in ps])
        idx = (np.cumsum(own) - 1)[_hold_last_face(own)]  # frame row → this track's face shown there
        node_rot = rot * FLIP[None, :, None] * FLIP[None, None, :]  # F R F
        tex = rec.track_textures.get(key)
        if tex is None and key == primary_key:
            tex = texture
        tracks.append(
            RigTrack(
                key=key,
                rig=personal,
                neutral_frames=np.flatnonzero(own)[used],
                weights=view.blendshapes[own][idx].astype(np.float32),
                rotation=quaternions(node_rot)[idx],
                translation=((t - origin) * FLIP * mpp).astype(np.float32)[idx],
                scale=(s / s_ref).astype(np.float32)[idx],
                own_face=own.copy(),
                texture=tex,
            )
        )
    mapping = {"metres_per_pixel": mpp, "origin_px": origin.tolist(), "s_ref": s_ref}
    return tracks, mapping


def _to_gltf(points: np.ndarray) -> np.ndarray:
    """Canonical units (y down, +z away) → metres, glTF axes (+Y up, +Z towards the viewer)."""
    return (np.asarray(points, np.float64) * FLIP * CANONICAL_UNIT_M).astype(np.float32)


def build_rig_glb(
    rec: Recording,
    tracks: list[RigTrack],
    mapping: dict,
    textures: dict[int, tuple[bytes, str]],
    config: RecordConfig,
    name: str = "take",
) -> tuple[bytes, dict]:
    """The GLB bytes (layout in the module docstring) and a summary."""
    tris = mesh.triangles()
    q = config.quantize
    pk = _Packer()
    a_uv = pk.array(mesh.uv_coords().astype("<f4"), "VEC2", ARRAY_BUFFER)
    a_idx = pk.array(tris.reshape(-1).astype("<u2"), "SCALAR", ELEMENT_ARRAY_BUFFER)
    times = np.r_[rec.timestamps - rec.timestamps[0], rec.duration].astype("<f4")
    keys = np.r_[np.arange(len(rec)), len(rec) - 1]  # a last key holds the last frame to the end
    a_time = pk.array(times, "SCALAR", minmax=True)
    interp = config.interpolation.upper()
    gltf: dict = {
        "asset": {"version": "2.0", "generator": f"face3d-live {__version__}"},
        "scene": 0,
        "scenes": [{"name": name, "nodes": list(range(len(tracks)))}],
        "nodes": [],
        "meshes": [],
        "materials": [],
    }
    samplers, channels = [], []
    for n, tr in enumerate(tracks):
        label = f"{name}_face{n}" if len(tracks) > 1 else name
        base = _to_gltf(tr.rig.neutral)
        targets_pos = _to_gltf(tr.rig.deltas)
        base_n = vertex_normals(base, tris)
        targets_nrm = vertex_normals(base[None] + targets_pos, tris) - base_n[None]
        prim = {
            "attributes": {
                "POSITION": pk.array(base, "VEC3", ARRAY_BUFFER, minmax=True),
                "NORMAL": pk.array(base_n, "VEC3", ARRAY_BUFFER),
                "TEXCOORD_0": a_uv,
            },
            "indices": a_idx,
            "material": n,
            "mode": 4,
            "targets": morph_targets(pk, targets_pos, targets_nrm, bool(q)),
        }
        gltf["meshes"].append(
            {
                "name": label,
                "primitives": [prim],
                "weights": [0.0] * len(ARKIT_BLENDSHAPES),
                "extras": {"targetNames": list(ARKIT_BLENDSHAPES)},
            }
        )
        material = {
            "name": f"{label}_skin",
            "pbrMetallicRoughness": {"metallicFactor": 0.0, "roughnessFactor": 0.7},
        }
        data, mime = textures.get(tr.key, (None, ""))
        add_texture(gltf, pk, material, data, mime, f"{label}_albedo")
        gltf["materials"].append(material)
        gltf["nodes"].append(
            {
                "name": label,
                "mesh": n,
                "translation": tr.translation[0].astype(float).tolist(),
                "rotation": tr.rotation[0].astype(float).tolist(),
                "scale": [float(tr.scale[0])] * 3,
                "extras": {
                    "face3d_live": {
                        **mapping,
                        "image_px_from_scene": "px = (x, -y, -z) / metres_per_pixel + origin_px",
                        "track_id": tr.key,
                        "frames_seen": int(tr.own_face.sum()),
                        "neutral_from_frames": [int(rec.frame_index[i]) for i in tr.neutral_frames],
                        "rig": "ARKit 52, learned (face3d_live/assets/arkit_rig.npz), personalised",
                    }
                },
            }
        )
        outputs = (
            pk.array(tr.translation[keys].astype("<f4"), "VEC3"),
            pk.array(tr.rotation[keys].astype("<f4"), "VEC4"),
            pk.array(np.repeat(tr.scale[keys, None], 3, axis=1).astype("<f4"), "VEC3"),
            _weights(pk, tr.weights[keys], q),
        )
        for a, path in zip(outputs, ("translation", "rotation", "scale", "weights")):
            channels.append({"sampler": len(samplers), "target": {"node": n, "path": path}})
            samplers.append({"input": a_time, "output": a, "interpolation": interp})
    gltf["animations"] = [{"name": f"{name}_performance", "channels": channels, "samplers": samplers}]
    if q:
        gltf["extensionsUsed"] = [QUANT_EXT]
        gltf["extensionsRequired"] = [QUANT_EXT]
    out = assemble(gltf, pk)
    summary = {
        "frames": len(rec),
        "tracks": len(tracks),
        "targets": len(ARKIT_BLENDSHAPES) * len(tracks),
        "duration_s": float(rec.duration),
        "bytes": len(out),
        "texture_bytes": sum(len(d) for d, _ in textures.values()),
        "quantized": bool(q),
        "rig": "arkit",
    }
    return out, summary


def _weights(pk: _Packer, weights: np.ndarray, quantize: bool) -> int:
    """(K, 52) weights → the sampler output accessor: float, or normalised uint16 (step 1.5e-5)."""
    w = np.clip(np.asarray(weights, np.float64), 0.0, 1.0)
    if not quantize:
        return pk.array(w.reshape(-1).astype("<f4"), "SCALAR")
    stored = np.rint(w.reshape(-1) * 65535).astype("<u2")
    return pk.accessor(pk.view(stored.tobytes()), 0, USHORT, stored.size, "SCALAR", normalized=True)


def export_rig_glb(rec: Recording, texture: np.ndarray | None, out: Path, config: RecordConfig) -> dict:
    """``record --rig arkit``: the take as personal ARKit rigs, one node per tracked face."""
    from face3d_live.record.exporters import encode_texture

    rig = ArkitRig.load()
    tracks, mapping = rig_tracks(rec, rig, texture)
    textures = {}
    if config.texture_size:
        textures = {tr.key: encode_texture(tr.texture, config) for tr in tracks if tr.texture is not None}
    data, summary = build_rig_glb(rec, tracks, mapping, textures, config, name=_node_name(out))
    atomic_write(out, data)
    log.info(
        "wrote %s: %d frames, %d faces with 52 ARKit shapes, %.1f MB",
        out,
        len(rec),
        len(tracks),
        len(data) / 1e6,
    )
    return {"path": out, **summary}
