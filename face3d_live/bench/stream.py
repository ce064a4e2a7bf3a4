"""`face3d-live bench stream`: the streaming CLI's loop against a local UDP receiver on loopback.

Reports frames/s streamed, packets/s, latency from capture (the frame's read) to the last packet handed to
the kernel (p50/p95/p99; the first frames — model warm-up and first detection — are left out), the send
alone (encode + sendto), drops, and this process's RSS sampled once a second (start after warm-up, end, max,
growth and its trend per minute). The issue's 10-minute soak is ``--duration 600``. Targets reported
against: a 2-core CPU with the default INT8 model streams ≥ 30 frames/s with p95 ≤ 15 ms.
"""

from __future__ import annotations

import argparse
import socket
import time

import numpy as np

NAME = "stream"
HELP = "stream to a loopback UDP receiver: frames/s, packets/s, capture→sent latency, RSS over time"
WARMUP_FRAMES = 15
TARGET_FPS = 30.0
TARGET_P95_MS = 15.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from face3d_live.cli.options import add_model_options
    from face3d_live.training.data import default_data_dir

    default = default_data_dir() / "videos" / "single_face.mp4"
    p.add_argument(
        "--source", default=str(default) if default.exists() else "demo", help="video file (looped) or 'demo'"
    )
    p.add_argument("--duration", type=float, default=60.0, help="seconds to stream (default 60; soak: 600)")
    p.add_argument(
        "--protocol", choices=("vmc", "livelink", "both"), default="both", help="what to send (default both)"
    )
    p.add_argument(
        "--realtime", action="store_true", help="pace the file at its frame rate (default: unpaced)"
    )
    add_model_options(p)


def _count_datagrams(sock: socket.socket, conn) -> None:
    """Receiver process: count datagrams until an empty one arrives, then report (packets, bytes)."""
    packets = nbytes = 0
    while data := sock.recv(65536):
        packets += 1
        nbytes += len(data)
    conn.send((packets, nbytes))
    conn.close()


class _Receiver:
    """A UDP receiver on a loopback port in its own process (as the avatar app would be: it must not take
    the streaming thread's GIL). Counts datagrams; ``stop()`` sends the empty datagram that ends it."""

    def __init__(self) -> None:
        import multiprocessing as mp

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.packets = self.bytes = 0
        ctx = mp.get_context("fork")
        self._conn, child = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_count_datagrams, args=(self.sock, child), daemon=True)

    def start(self) -> None:
        self._proc.start()

    def stop(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"", self.sock.getsockname())
        if self._conn.poll(5.0):
            self.packets, self.bytes = self._conn.recv()
        self._proc.join(timeout=2.0)
        self.sock.close()


def _rss_mb() -> float:
    """Resident set size of this process now (Linux /proc; nan elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _load_avg() -> float | None:
    import os

    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    p = np.percentile(np.asarray(values), [50, 95, 99])
    return {
        "p50": round(float(p[0]), 3),
        "p95": round(float(p[1]), 3),
        "p99": round(float(p[2]), 3),
        "max": round(float(np.max(values)), 3),
    }


def run(args: argparse.Namespace) -> dict:
    from face3d_live.capture import open_source
    from face3d_live.cli.options import reconstructor_from_args
    from face3d_live.models.registry import default_model
    from face3d_live.stream.session import stream_source
    from face3d_live.stream.streamer import FaceStreamer

    args.model = args.model or default_model()
    load_start = _load_avg()
    receivers = {
        k: _Receiver() for k in (("vmc", "livelink") if args.protocol == "both" else (args.protocol,))
    }
    for r in receivers.values():
        r.start()
    rss: list[tuple[float, float]] = []  # (seconds since warm-up, MB)
    t_warm = [0.0]

    def sample(frame, summary) -> None:
        now = time.perf_counter()
        if summary.frames == WARMUP_FRAMES:
            t_warm[0] = now
            rss.append((0.0, _rss_mb()))
        elif summary.frames > WARMUP_FRAMES and now - t_warm[0] - rss[-1][0] >= 1.0:
            rss.append((now - t_warm[0], _rss_mb()))

    try:
        with (
            FaceStreamer(
                vmc=receivers["vmc"].address if "vmc" in receivers else None,
                livelink=receivers["livelink"].address if "livelink" in receivers else None,
            ) as streamer,
            open_source(args.source, realtime_demo=args.realtime) as source,
            reconstructor_from_args(args, still=source.still) as rec,
        ):
            summary = stream_source(
                source,
                rec,
                streamer,
                duration_s=args.duration,
                realtime=args.realtime,
                loop=True,
                keep_timings=True,
                on_frame=sample,
            )
            if rss:  # the end sample while the model is still loaded
                rss.append((time.perf_counter() - t_warm[0], _rss_mb()))
            stats = streamer.stats
    finally:
        time.sleep(0.05)  # let the last datagrams land before counting
        for r in receivers.values():
            r.stop()
    steady = summary.latency_ms[WARMUP_FRAMES:]
    mb = np.array([m for _, m in rss]) if rss else np.array([np.nan])
    ts = np.array([t for t, _ in rss]) if rss else np.array([0.0])
    trend = float(np.polyfit(ts / 60.0, mb, 1)[0]) if len(rss) >= 3 else float("nan")
    latency = _pct(steady)
    result = {
        "source": args.source,
        "model": args.model,
        "backend": args.backend,
        "protocol": args.protocol,
        "realtime": args.realtime,
        "duration_s": round(summary.wall_s, 2),
        "frames": summary.frames,
        "frames_with_face": summary.frames_with_face,
        "loops": summary.loops,
        "fps": round(summary.fps, 2),
        "packets_sent": stats["packets_sent"],
        "packets_received": sum(r.packets for r in receivers.values()),
        "packets_per_s": round(stats["packets_sent"] / summary.wall_s, 1) if summary.wall_s else 0.0,
        "bytes_per_packet": round(stats["bytes_sent"] / max(stats["packets_sent"], 1), 1),
        "dropped": stats["dropped"],
        "errors": stats["errors"],
        "latency_ms": latency,
        "send_ms": _pct(summary.send_ms[WARMUP_FRAMES:]),
        "rss_mb": {
            "start": round(float(mb[0]), 1),
            "end": round(float(mb[-1]), 1),
            "max": round(float(np.nanmax(mb)), 1),
            "growth": round(float(mb[-1] - mb[0]), 1),
            "trend_mb_per_min": round(trend, 2),
            "samples": len(rss),
        },
        # other processes' load: on a shared 2-core machine it moves every latency figure
        "load_avg_1m": {"start": load_start, "end": _load_avg()},
        "targets": {
            "fps_min": TARGET_FPS,
            "p95_max_ms": TARGET_P95_MS,
            "fps_met": summary.fps >= TARGET_FPS,
            "p95_met": bool(latency) and latency["p95"] <= TARGET_P95_MS,
        },
    }
    print(
        f"stream ({args.model}, {args.protocol}, {'paced' if args.realtime else 'unpaced'}): "
        f"{summary.frames} frames in {summary.wall_s:.1f} s = {summary.fps:.1f} frames/s, "
        f"{result['packets_per_s']:.0f} packets/s ({result['packets_received']}/{stats['packets_sent']} received), "
        f"{stats['dropped']} dropped"
    )
    if latency:
        print(
            f"  capture → sent ms: p50 {latency['p50']:.2f}, p95 {latency['p95']:.2f}, p99 {latency['p99']:.2f}; "
            f"send alone p95 {result['send_ms']['p95']:.3f}"
        )
    r = result["rss_mb"]
    print(
        f"  RSS MB: start {r['start']}, end {r['end']}, max {r['max']}, growth {r['growth']} "
        f"({r['trend_mb_per_min']} MB/min)"
    )
    return result
