"""Closed-loop HTTP load at a fixed concurrency: ``wrk`` (C, a Lua script posts the image) or, where wrk is
not installed, an asyncio client on httpx spread over processes. Both keep ``concurrency`` requests in
flight for ``duration_s`` and report requests/s, latency percentiles and refusals in one dict:

    {"client", "concurrency", "requests", "duration_s", "rps", "ok", "non_2xx", "socket_errors",
     "latency_ms": {"p50", "p95", "p99", "max", "mean"}, "statuses": {code: count} (httpx only)}
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

WRK_SCRIPT = r"""
local f = assert(io.open(os.getenv("FACE3D_BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = os.getenv("FACE3D_BENCH_TYPE")
local key = os.getenv("FACE3D_BENCH_KEY")
if key and key ~= "" then wrk.headers["X-API-Key"] = key end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d, "p50": %d, "p95": %d, "p99": %d, "max": %d, "mean": %f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean))
end
"""


def find_wrk(path: str | None = None) -> str | None:
    return path if path and Path(path).is_file() else shutil.which("wrk")


def run_wrk(
    url: str,
    body_path: Path,
    content_type: str,
    concurrency: int,
    duration_s: float,
    *,
    wrk: str = "wrk",
    threads: int | None = None,
    api_key: str | None = None,
    timeout_s: float = 10.0,
) -> dict:
    threads = max(1, min(concurrency, threads or os.cpu_count() or 1))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT)
        script = f.name
    env = {
        **os.environ,
        "FACE3D_BENCH_BODY": str(body_path),
        "FACE3D_BENCH_TYPE": content_type,
        "FACE3D_BENCH_KEY": api_key or "",
    }
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "-s",
        script,
        url,
    ]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration_s + 60)
    finally:
        os.unlink(script)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {out.stderr.strip() or out.stdout.strip()}")
    r = json.loads(line[len("WRKJSON ") :])
    dur = r["duration_us"] / 1e6
    non_2xx = r["status"]
    return {
        "client": "wrk",
        "concurrency": concurrency,
        "requests": r["requests"],
        "duration_s": round(dur, 3),
        "rps": round(r["requests"] / dur, 2) if dur else 0.0,
        "ok": r["requests"] - non_2xx,
        "ok_rps": round((r["requests"] - non_2xx) / dur, 2) if dur else 0.0,
        "non_2xx": non_2xx,
        "socket_errors": r["connect"] + r["read"] + r["write"] + r["timeout"],
        "latency_ms": {
            "p50": r["p50"] / 1000,
            "p95": r["p95"] / 1000,
            "p99": r["p99"] / 1000,
            "max": r["max"] / 1000,
            "mean": round(r["mean"] / 1000, 3),
        },
    }


# ---- httpx --------------------------------------------------------------------------------------------------
def _httpx_worker(url, body, headers, connections, duration_s, timeout_s, conn) -> None:
    """One process: ``connections`` loops, each posting as soon as its last answer came."""
    import asyncio

    import httpx

    async def main():
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        errors = 0
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as client:
            end = time.perf_counter() + duration_s

            async def loop():
                nonlocal errors
                while time.perf_counter() < end:
                    t0 = time.perf_counter()
                    try:
                        r = await client.post(url, content=body, headers=headers)
                        await r.aread()
                    except httpx.HTTPError:
                        errors += 1
                        continue
                    latencies.append(time.perf_counter() - t0)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

            t_start = time.perf_counter()
            await asyncio.gather(*(loop() for _ in range(connections)))
            return latencies, statuses, errors, time.perf_counter() - t_start

    conn.send(asyncio.run(main()))
    conn.close()


def run_httpx(
    url: str,
    body: bytes,
    content_type: str,
    concurrency: int,
    duration_s: float,
    *,
    procs: int = 1,
    api_key: str | None = None,
    timeout_s: float = 10.0,
) -> dict:
    import multiprocessing as mp

    headers = {"Content-Type": content_type}
    if api_key:
        headers["X-API-Key"] = api_key
    procs = max(1, min(procs, concurrency))
    shares = [concurrency // procs + (i < concurrency % procs) for i in range(procs)]
    ctx = mp.get_context("spawn")
    pipes, workers = [], []
    for share in shares:
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(
            target=_httpx_worker, args=(url, body, headers, share, duration_s, timeout_s, send), daemon=True
        )
        p.start()
        pipes.append(recv)
        workers.append(p)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors, wall = 0, 0.0
    for recv, p in zip(pipes, workers):
        lat, st, err, w = recv.recv()
        p.join()
        latencies += lat
        for k, v in st.items():
            statuses[k] = statuses.get(k, 0) + v
        errors += err
        wall = max(wall, w)
    n = len(latencies)
    ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
    ms = np.asarray(latencies) * 1000 if n else np.zeros(1)
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "client": f"httpx ({procs} process{'es' if procs > 1 else ''})",
        "concurrency": concurrency,
        "requests": n,
        "duration_s": round(wall, 3),
        "rps": round(n / wall, 2) if wall else 0.0,
        "ok": ok,
        "ok_rps": round(ok / wall, 2) if wall else 0.0,
        "non_2xx": n - ok,
        "socket_errors": errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "latency_ms": {
            "p50": round(float(p50), 3),
            "p95": round(float(p95), 3),
            "p99": round(float(p99), 3),
            "max": round(float(ms.max()), 3),
            "mean": round(float(ms.mean()), 3),
        },
    }


class StageProbe:
    """Where requests' time goes while a load generator runs: one request at a time every ``interval_s``
    (at most 1 / interval_s requests/s added to the load), its latency at the client and the service's
    ``timing_ms`` stages. A context manager (the probing thread runs inside it); ``summary()`` gives each
    stage's median in ms over the answered probes, "client" first."""

    def __init__(
        self,
        url: str,
        body: bytes,
        content_type: str,
        interval_s: float,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"StageProbe: interval_s must be > 0, not {interval_s}")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"StageProbe: {url!r} is not an http:// URL")
        self._address = (parts.hostname, parts.port or 80)
        self._path = parts.path or "/"
        self._body, self.interval_s, self.timeout_s = body, interval_s, timeout_s
        self._headers = {"Content-Type": content_type}
        if api_key:
            self._headers["X-API-Key"] = api_key
        self.samples: list[dict[str, float]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StageProbe:
        self._thread = threading.Thread(target=self._loop, name="stage-probe", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 5)

    def _loop(self) -> None:
        conn = http.client.HTTPConnection(*self._address, timeout=self.timeout_s)
        try:
            while not self._stop.wait(self.interval_s):
                t0 = time.perf_counter()
                try:
                    conn.request("POST", self._path, self._body, self._headers)
                    reply = conn.getresponse()
                    data = reply.read()
                except (OSError, http.client.HTTPException):
                    self.errors += 1
                    conn.close()  # the next request connects again
                    continue
                client_ms = (time.perf_counter() - t0) * 1000
                try:
                    timing = json.loads(data)["timing_ms"] if reply.status == 200 else None
                except (ValueError, KeyError, TypeError):
                    timing = None
                if not isinstance(timing, dict):
                    self.errors += 1
                    continue
                stages = {k: float(v) for k, v in timing.items() if isinstance(v, int | float)}
                self.samples.append({"client": client_ms, **stages})
        finally:
            conn.close()

    def summary(self) -> dict:
        """``{"probes", "errors", "median_ms": {stage: ms}}``, the stages in the order the service gave them."""
        names: dict[str, None] = {}
        for s in self.samples:
            names.update(dict.fromkeys(s))
        median = {k: round(float(np.median([s[k] for s in self.samples if k in s])), 3) for k in names}
        return {"probes": len(self.samples), "errors": self.errors, "median_ms": median}
