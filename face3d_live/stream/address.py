"""``HOST:PORT`` parsing and resolution, checked once at construction so a typo is a one-line ConfigError."""

from __future__ import annotations

import socket

from face3d_live.errors import ConfigError

DEFAULT_VMC = "127.0.0.1:39539"  # VSeeFace's VMC receiver
DEFAULT_LIVELINK = "127.0.0.1:11111"  # Unreal's Live Link Face listener


def parse_address(text: str, what: str = "address") -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` → (host, port); ConfigError naming the problem and the fix."""
    raw = str(text).strip()
    example = f"give {what} as HOST:PORT, e.g. 127.0.0.1:39539"
    host, sep, port_text = raw.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{what} {raw!r} has no port: {example}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"{what} {raw!r}: write an IPv6 host in brackets, e.g. [::1]:39539")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{what} {raw!r}: port {port_text!r} is not a number; {example}") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"{what} {raw!r}: port {port} is outside 1-65535")
    return host, port


def resolve_udp(text: str, what: str = "address") -> tuple[int, tuple]:
    """(address family, sockaddr) for a UDP target; an unknown host is a ConfigError (resolved once here,
    never in the sending path)."""
    host, port = parse_address(text, what)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"{what} {text!r}: cannot resolve host {host!r} ({exc})") from None
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr
