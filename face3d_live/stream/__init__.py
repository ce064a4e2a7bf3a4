"""Streaming sinks for avatar apps: VMC over OSC (VSeeFace, VNyan, Warudo, EVMC4U) and Live Link Face (Unreal).

``FaceStreamer(vmc="127.0.0.1:39539", livelink=None).send(faces, timestamp_s)``: fire-and-forget UDP, never
blocks or raises for network errors (drops are counted). ``livelink`` also holds the Live Link Face CSV
writer the recorder uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["LIVELINK_CURVES", "FaceStreamer", "LiveLinkCsvWriter", "livelink_values"]

if TYPE_CHECKING:
    from face3d_live.stream.livelink import LIVELINK_CURVES, LiveLinkCsvWriter, livelink_values
    from face3d_live.stream.streamer import FaceStreamer


def __getattr__(name: str):  # lazy: the Live Link names must not import python-osc
    if name == "FaceStreamer":
        from face3d_live.stream.streamer import FaceStreamer

        return FaceStreamer
    if name in ("LIVELINK_CURVES", "LiveLinkCsvWriter", "livelink_values"):
        from face3d_live.stream import livelink

        return getattr(livelink, name)
    raise AttributeError(name)
