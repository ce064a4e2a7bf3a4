"""``FaceStreamer``: the sink the app and the CLI use to send faces to avatar apps."""

from __future__ import annotations

import socket
import uuid

from face3d_live.errors import ConfigError
from face3d_live.stream.address import DEFAULT_VMC, resolve_udp
from face3d_live.stream.livelink import encode_packet, livelink_values
from face3d_live.stream.udp import UdpTarget
from face3d_live.stream.vmc import MAX_DATAGRAM, VmcEncoder
from face3d_live.types import Face, Frame


def _device_id() -> str:
    """36 characters like the iPhone app's UUID; stable per machine so Unreal keeps one source."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"face3d-live.{socket.gethostname()}"))


class FaceStreamer:
    """Send each frame's faces over VMC (OSC/UDP) and/or Live Link Face (UDP).

    ``send`` never blocks, queues or raises for network errors: sockets are non-blocking, a frame that
    cannot be sent is dropped and counted (``stats``), the last problem is in ``status``. Bad addresses
    are a ConfigError here, at construction. VMC drives one avatar with the first (largest) face; Live
    Link sends one subject per face: ``subject`` for the first, ``subject_<track id>`` for the others.
    """

    def __init__(
        self,
        vmc: str | None = DEFAULT_VMC,
        livelink: str | None = None,
        subject: str = "face3d",
        *,
        mirror: bool = True,
        fps: int = 60,
        max_datagram: int = MAX_DATAGRAM,
    ) -> None:
        if vmc is None and livelink is None:
            raise ConfigError("nothing to stream to: give a VMC and/or a Live Link address")
        if not subject:
            raise ConfigError("the Live Link subject name must not be empty")
        self.subject = subject
        self.fps = fps
        self.frames = 0
        self._vmc_encoder = VmcEncoder(mirror=mirror, max_datagram=max_datagram)
        self._device_id = _device_id()
        self._vmc: UdpTarget | None = None
        self._livelink: UdpTarget | None = None
        if vmc is not None:
            self._vmc = UdpTarget("VMC", *resolve_udp(vmc, "VMC address"))
        if livelink is not None:
            try:
                self._livelink = UdpTarget("Live Link", *resolve_udp(livelink, "Live Link address"))
            except ConfigError:
                self.close()
                raise

    @property
    def targets(self) -> list[UdpTarget]:
        return [t for t in (self._vmc, self._livelink) if t is not None]

    def send(self, faces: list[Face], timestamp_s: float) -> None:
        """Send one frame (an empty list tells VMC receivers that tracking is lost)."""
        self.frames += 1
        if self._vmc is not None:
            self._vmc.send_frame(self._vmc_encoder.encode(faces, timestamp_s))
        if self._livelink is not None and faces:
            packets = [
                encode_packet(
                    livelink_values(f), self.subject_name(i, f), self._device_id, timestamp_s, self.fps
                )
                for i, f in enumerate(faces)
            ]
            self._livelink.send_frame(packets)

    def process(self, frame: Frame) -> Frame:
        """Stage form: send ``frame.faces`` at ``frame.timestamp_s``; the frame passes through unchanged."""
        self.send(frame.faces, frame.timestamp_s)
        return frame

    def subject_name(self, index: int, face: Face) -> str:
        if index == 0:
            return self.subject
        return f"{self.subject}_{face.track_id if face.track_id >= 0 else index}"

    @property
    def stats(self) -> dict:
        """packets_sent, bytes_sent, dropped (frames not sent to a target), errors, last_error, frames,
        and the same per target under ``targets``."""
        per = {
            t.label: {
                "target": t.target,
                "packets_sent": t.packets_sent,
                "bytes_sent": t.bytes_sent,
                "dropped": t.dropped,
                "errors": t.errors,
                "last_error": t.last_error,
            }
            for t in self.targets
        }
        last = [t.last_error for t in self.targets if t.last_error]
        return {
            "frames": self.frames,
            "packets_sent": sum(t.packets_sent for t in self.targets),
            "bytes_sent": sum(t.bytes_sent for t in self.targets),
            "dropped": sum(t.dropped for t in self.targets),
            "errors": sum(t.errors for t in self.targets),
            "last_error": last[-1] if last else "",
            "targets": per,
        }

    @property
    def status(self) -> str:
        """One line for a UI: where it sends, what got through, the last problem."""
        where = ", ".join(f"{t.label} → {t.target}" for t in self.targets) or "closed"
        s = self.stats
        line = f"{where}: {s['packets_sent']} packets, {s['dropped']} dropped"
        if s["errors"]:
            line += f", {s['errors']} errors ({s['last_error']})"
        return line

    def close(self) -> None:
        """Close the sockets (idempotent)."""
        for t in self.targets:
            t.close()

    def __enter__(self) -> FaceStreamer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
