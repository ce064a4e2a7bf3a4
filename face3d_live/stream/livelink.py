"""Live Link Face: the 61 curves, the UDP packet of Epic's iPhone app, and its CSV take format.

Packet (version 6, what Unreal's ``AppleARKitFaceSupport`` listener reads with ``FNboSerializeFromBuffer``,
network byte order throughout)::

    uint8 version (6)
    int32 length + UTF-8 device id
    int32 length + UTF-8 subject name
    int32 frame number, float32 sub-frame, int32 fps numerator, int32 fps denominator  (FQualifiedFrameTime)
    uint8 curve count (61)
    61 x float32: the 52 ARKit shapes, then HeadYaw, HeadPitch, HeadRoll, LeftEyeYaw, LeftEyePitch,
                  LeftEyeRoll, RightEyeYaw, RightEyePitch, RightEyeRoll (radians)

Angles are in ARKit's face frame (right-handed, x = the face's own left, y up, z out of the face;
``rotation.py``): yaw > 0 turns to the subject's own left, pitch > 0 tips down, roll > 0 tilts towards the
right shoulder. Eye roll is 0 (the model has none). Live Link is not mirrored: "Left" is the subject's left.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from face3d_live.expression.arkit import ARKIT_BLENDSHAPES
from face3d_live.stream.rotation import face_rotation, yaw_pitch_roll
from face3d_live.types import Face

PACKET_VERSION = 6
DEFAULT_PORT = 11111
HEAD_EYE_CURVES: tuple[str, ...] = (
    "HeadYaw", "HeadPitch", "HeadRoll",
    "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
    "RightEyeYaw", "RightEyePitch", "RightEyeRoll",
)  # fmt: skip
# Live Link's curve names: the ARKit names with a capital first letter (EyeBlinkLeft ... TongueOut)
LIVELINK_CURVES: tuple[str, ...] = tuple(n[0].upper() + n[1:] for n in ARKIT_BLENDSHAPES) + HEAD_EYE_CURVES
_CURVES = struct.Struct(f">B{len(LIVELINK_CURVES)}f")


def livelink_values(face: Face) -> np.ndarray:
    """(61,) float32 in ``LIVELINK_CURVES`` order: blendshapes [0, 1], then head and eye angles in radians."""
    out = np.zeros(len(LIVELINK_CURVES), np.float32)
    if face.blendshapes is not None:
        out[: len(ARKIT_BLENDSHAPES)] = face.blendshapes
    out[52:55] = yaw_pitch_roll(face_rotation(face.pose.rotation))
    if face.gaze is not None:
        g = np.radians(np.asarray(face.gaze, np.float64))
        # gaze: rows (left, right eye), columns (yaw > 0 to the subject's left, pitch > 0 up)
        out[55:58] = g[0, 0], -g[0, 1], 0.0
        out[58:61] = g[1, 0], -g[1, 1], 0.0
    return out


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack(">i", len(raw)) + raw


def encode_packet(
    values: np.ndarray, subject: str, device_id: str, timestamp_s: float, fps: int = 60
) -> bytes:
    """One Live Link Face UDP packet (layout in the module docstring); the frame time is ``timestamp_s``
    at ``fps`` (frame number + sub-frame), wrapped at 24 h like a timecode so any clock fits the int32."""
    t = float(timestamp_s) if math.isfinite(timestamp_s) else 0.0
    frames = (t % 86400.0) * fps
    whole = math.floor(frames)
    head = struct.pack(">B", PACKET_VERSION) + _string(device_id) + _string(subject)
    return (
        head
        + struct.pack(">ifii", int(whole), float(frames - whole), int(fps), 1)
        + _CURVES.pack(len(LIVELINK_CURVES), *np.asarray(values, np.float32))
    )


def timecode(timestamp_s: float, fps: float = 60.0) -> str:
    """``HH:MM:SS:FF.mmm`` as the Live Link Face app writes it (frame, then the sub-frame in thousandths)."""
    t = max(0.0, float(timestamp_s))
    secs = math.floor(t)
    frames = (t - secs) * fps
    ff = min(math.floor(frames), int(math.ceil(fps)) - 1)
    sub = min(int(round((frames - ff) * 1000)), 999)
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    return f"{h % 100:02d}:{m:02d}:{s:02d}:{ff:02d}.{sub:03d}"


class LiveLinkCsvWriter:
    """A take in the Live Link Face app's CSV layout (``Timecode,BlendShapeCount,EyeBlinkLeft,...``).

    Each row is flushed as it is written, so a crash loses at most the row being written. ``timestamp_s``
    is written as a timecode at ``fps`` (pass seconds since midnight for a wall-clock timecode).
    """

    def __init__(self, path: str | Path, fps: float = 60.0) -> None:
        self.path = Path(path)
        self.fps = fps
        self.rows = 0
        self._file = self.path.open("w", encoding="ascii", newline="")
        self._file.write(",".join(("Timecode", "BlendShapeCount", *LIVELINK_CURVES)) + "\n")
        self._file.flush()

    def write(self, timestamp_s: float, values61: np.ndarray) -> None:
        v = np.asarray(values61, np.float32).reshape(-1)
        if v.shape != (len(LIVELINK_CURVES),):
            raise ValueError(f"expected {len(LIVELINK_CURVES)} values, got {v.shape[0]}")
        if self._file.closed:
            raise ValueError(f"{self.path}: writer is closed")
        cells = ",".join(f"{x:.6g}" for x in v.tolist())
        self._file.write(f"{timecode(timestamp_s, self.fps)},{len(v)},{cells}\n")
        self._file.flush()
        self.rows += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> LiveLinkCsvWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
