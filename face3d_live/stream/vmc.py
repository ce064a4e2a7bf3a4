"""VMC protocol (OSC over UDP) frames for VSeeFace, VNyan, Warudo and EVMC4U (protocol.vmc.info).

Per frame, in order: ``/VMC/Ext/Blend/Val (s name, f value)`` for the 52 ARKit shapes (perfect-sync clip
names, exactly as ARKit spells them), ``/VMC/Ext/Blend/Apply``, ``/VMC/Ext/Root/Pos "root"`` at the origin,
``/VMC/Ext/Bone/Pos`` for "Head", "LeftEye", "RightEye", ``/VMC/Ext/OK (i loaded, i calibration state,
i calibration mode, i tracking status)`` (v2.7: 1, 3 = calibrated, 0 = normal mode, 1/0 = tracking or
lost) and ``/VMC/Ext/T (f seconds)``. A frame without a face sends only OK (tracking 0) and T, so the
receiver keeps the last pose.

Rotations are Unity's (left-handed, y up, z forward; ``rotation.py``) and mirrored like VSeeFace's own
tracking: the avatar faces the viewer and moves as the subject's reflection: turning or winking to the
subject's left turns or winks the avatar to its right, so Left/Right shapes and eyes swap. ``mirror=False``
keeps the subject's sides (then the head rotation is the subject's own, x = the subject's right).

Bone positions are nominal local offsets of an adult VRM (metres): EVMC4U applies bone positions by default
and would fold the head into the neck at (0, 0, 0); receivers that use only rotations ignore them.

Each frame is one OSC bundle (about 3 KB); bundles larger than ``max_datagram`` are split in order, so
Apply still follows every Val.
"""

from __future__ import annotations

import struct

import numpy as np
from pythonosc.osc_message_builder import OscMessageBuilder

from face3d_live.expression.arkit import ARKIT_BLENDSHAPES, ARKIT_INDEX
from face3d_live.stream.rotation import eye_rotation, face_rotation, quaternion_xyzw
from face3d_live.types import Face

DEFAULT_PORT = 39539
MAX_DATAGRAM = 8192  # well under UDP's 65,507-byte limit; a VMC frame is ~3 KB
HEAD_POSITION = (0.0, 0.09, 0.0)  # Head relative to Neck
EYE_POSITION = (0.032, 0.065, 0.055)  # RightEye relative to Head (LeftEye: x negated)
_BUNDLE_HEAD = b"#bundle\x00" + struct.pack(">Q", 1)  # time tag 1 = "immediately"
# MIRROR[i]: the ARKit index whose value the avatar's shape i takes (Left <-> Right)
MIRROR = np.array(
    [
        ARKIT_INDEX[n.replace("Left", "#").replace("Right", "Left").replace("#", "Right")]
        for n in ARKIT_BLENDSHAPES
    ],
    np.int64,
)


def _message(address: str, *args: object) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a, "s" if isinstance(a, str) else "i" if isinstance(a, int) else "f")
    return b.build().dgram


# "/VMC/Ext/Blend/Val" + name, without the trailing float: the one part that changes per frame
_BLEND_PREFIX = [_message("/VMC/Ext/Blend/Val", n, 0.0)[:-4] for n in ARKIT_BLENDSHAPES]
_APPLY = _message("/VMC/Ext/Blend/Apply")
_ROOT = _message("/VMC/Ext/Root/Pos", "root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
_OK_TRACKING = _message("/VMC/Ext/OK", 1, 3, 0, 1)
_OK_LOST = _message("/VMC/Ext/OK", 1, 3, 0, 0)
_REFLECT_X = np.diag([-1.0, 1.0, 1.0])


def bundles(elements: list[bytes], max_datagram: int = MAX_DATAGRAM) -> list[bytes]:
    """OSC bundles (time tag "immediately") holding ``elements`` in order, each at most ``max_datagram``
    bytes where an element allows it."""
    out: list[bytes] = []
    parts: list[bytes] = [_BUNDLE_HEAD]
    size = len(_BUNDLE_HEAD)
    for e in elements:
        piece = struct.pack(">i", len(e)) + e
        if size + len(piece) > max_datagram and len(parts) > 1:
            out.append(b"".join(parts))
            parts, size = [_BUNDLE_HEAD], len(_BUNDLE_HEAD)
        parts.append(piece)
        size += len(piece)
    if len(parts) > 1:
        out.append(b"".join(parts))
    return out


class VmcEncoder:
    """Face → VMC bundles for one avatar (the first face of each frame: the largest)."""

    def __init__(self, mirror: bool = True, max_datagram: int = MAX_DATAGRAM) -> None:
        self.mirror = mirror
        self.max_datagram = max_datagram

    def messages(self, face: Face | None, timestamp_s: float) -> list[bytes]:
        """The OSC messages of one frame, in sending order (layout in the module docstring)."""
        if face is None:
            return [_OK_LOST, _message("/VMC/Ext/T", float(timestamp_s))]
        shapes = np.zeros(len(ARKIT_BLENDSHAPES), np.float32)
        if face.blendshapes is not None:
            shapes = np.asarray(face.blendshapes, np.float32)
            if self.mirror:
                shapes = shapes[MIRROR]
        out = [p + struct.pack(">f", v) for p, v in zip(_BLEND_PREFIX, shapes.tolist())]
        out += [_APPLY, _ROOT]
        out.append(_message("/VMC/Ext/Bone/Pos", "Head", *HEAD_POSITION, *self.head_quaternion(face)))
        for bone, q in self.eye_quaternions(face).items():
            x = EYE_POSITION[0] if bone == "RightEye" else -EYE_POSITION[0]
            out.append(_message("/VMC/Ext/Bone/Pos", bone, x, *EYE_POSITION[1:], *q))
        out.append(_OK_TRACKING)
        out.append(_message("/VMC/Ext/T", float(timestamp_s)))
        return out

    def encode(self, faces: list[Face], timestamp_s: float) -> list[bytes]:
        """Datagrams for one frame (one bundle unless it exceeds ``max_datagram``)."""
        return bundles(self.messages(faces[0] if faces else None, timestamp_s), self.max_datagram)

    def head_quaternion(self, face: Face) -> tuple[float, float, float, float]:
        """Unity (x, y, z, w) of the head: mirrored (default) or the subject's own sides."""
        r = face_rotation(face.pose.rotation)
        if not self.mirror:  # the subject's right is -x of the mirrored frame: reflect x
            r = _REFLECT_X @ r @ _REFLECT_X
        return quaternion_xyzw(r)

    def eye_quaternions(self, face: Face) -> dict[str, tuple[float, float, float, float]]:
        """{"LeftEye": q, "RightEye": q} in the head's frame, from ``Face.gaze`` (identity without it)."""
        gaze = np.zeros((2, 2)) if face.gaze is None else np.asarray(face.gaze, np.float64)
        # gaze rows: subject's (left, right) eye; yaw > 0 towards the subject's left, pitch > 0 up.
        # Mirrored, the subject's left is the avatar's right: left eye drives RightEye, yaw keeps its sign
        # (Unity yaw > 0 turns to the avatar's right); unmirrored, yaw flips.
        (ly, lp), (ry, rp) = gaze.tolist()
        if self.mirror:
            return {
                "LeftEye": quaternion_xyzw(eye_rotation(ry, rp)),
                "RightEye": quaternion_xyzw(eye_rotation(ly, lp)),
            }
        return {
            "LeftEye": quaternion_xyzw(eye_rotation(-ly, lp)),
            "RightEye": quaternion_xyzw(eye_rotation(-ry, rp)),
        }
