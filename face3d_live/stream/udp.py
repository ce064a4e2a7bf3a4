"""A non-blocking UDP sender that never raises for network errors: it counts them."""

from __future__ import annotations

import logging
import socket
import time

log = logging.getLogger(__name__)
LOG_EVERY_S = 10.0  # the same network error is logged at most this often


class UdpTarget:
    """One connected, non-blocking UDP socket.

    Connecting makes the kernel report an ICMP "port unreachable" (nothing listening) as
    ConnectionRefusedError on a later send; a full send buffer is BlockingIOError. Both, and any other
    OSError, drop the frame and are counted, never raised: a missing receiver must not stop tracking.
    """

    def __init__(self, label: str, family: int, sockaddr: tuple) -> None:
        self.label = label
        self.target = f"{sockaddr[0]}:{sockaddr[1]}"
        self.packets_sent = 0
        self.bytes_sent = 0
        self.dropped = 0  # frames not (fully) sent
        self.errors = 0  # sends that failed with an OS error (not a full buffer)
        self.last_error = ""
        self._last_log = {}  # message -> monotonic time last logged
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        try:
            self._sock.connect(sockaddr)
        except OSError as exc:  # e.g. no route: still a sink that counts, not a crash
            self._fail(exc)

    def send_frame(self, datagrams: list[bytes]) -> bool:
        """Send one frame's datagrams; on the first failure drop the rest of the frame (True: all sent)."""
        if self._sock is None:
            return False
        for d in datagrams:
            try:
                n = self._sock.send(d)
            except BlockingIOError:
                self.dropped += 1
                return False
            except OSError as exc:
                self._fail(exc)
                self.dropped += 1
                return False
            self.packets_sent += 1
            self.bytes_sent += n
        return True

    def _fail(self, exc: OSError) -> None:
        self.errors += 1
        if isinstance(exc, ConnectionRefusedError):
            msg = f"{self.label} {self.target}: no receiver (port closed); is the app listening?"
        else:
            msg = f"{self.label} {self.target}: {exc.strerror or exc}"
        self.last_error = msg
        now = time.monotonic()
        if now - self._last_log.get(msg, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._last_log[msg] = now
            log.warning("%s (%d send errors so far)", msg, self.errors)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
