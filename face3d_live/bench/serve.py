"""`face3d-live bench serve`: the HTTP service under a real load generator at concurrency 1…256.

Starts the service on Ray (or targets ``--url``), posts one 640×480 JPEG with one face (made from the bundled
astronaut photo; ``--image`` for another) with wrk (a Lua script posts the body) or, without wrk, an asyncio
httpx client in ``--client-procs`` processes, for ``--duration`` seconds per level. Per level: requests/s,
p50/p95/p99 latency, refusals, and the model batches of that level (requests and crops per batch, from the
difference of two ``/metrics`` scrapes), the CPU cores each process group used, and with ``--stage-probe S``
the medians of the service's own stage times (``timing_ms``: queues, decoding, detection, the model) for one
extra request every S seconds. Target reported against: ≥ 2,000 requests/s at p95 ≤ 50 ms on
one H200.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from face3d_live.monitor.cpu_groups import CpuSampler, short_name
from face3d_live.monitor.gpu import GpuLoadSampler
from face3d_live.scale.loadgen import StageProbe

NAME = "serve"
HELP = "HTTP service under load (wrk/httpx) at concurrency 1…256: requests/s, p50/p95/p99, batch sizes"
TARGET_RPS = 2000.0
TARGET_P95_MS = 50.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from face3d_live.cli.serve import add_service_options

    p.add_argument("--url", default=None, help="a running service (default: start one here on Ray)")
    p.add_argument("--ray", default="auto", metavar="ADDRESS", help="Ray for the service started here")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance")
    p.add_argument("--port", type=int, default=8765, help="port of the service started here (8765)")
    p.add_argument("--image", type=Path, default=None, help="JPEG/PNG to post (default: 640×480, one face)")
    p.add_argument("--levels", default="1,2,4,8,16,32,64,128,256", help="concurrency levels, comma-separated")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per level (default 10)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before the first level (3)")
    p.add_argument("--client", choices=("auto", "wrk", "httpx"), default="auto", help="load generator")
    p.add_argument("--wrk", default=None, help="path of the wrk binary (default: on PATH)")
    p.add_argument("--client-procs", type=int, default=2, help="httpx client processes (default 2)")
    p.add_argument("--client-threads", type=int, default=None, help="wrk threads (default: CPUs)")
    p.add_argument("--api-key", default=None, help="key to send (and to require, for a service started here)")
    p.add_argument(
        "--stage-probe",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="during each level, one more request every SECONDS whose timing_ms stages are reported as medians "
        "(where the latency goes: queues, decoding, the model...); 0 (default): off",
    )
    add_service_options(p, max_queued=1024)  # the load generator, not the queue, is what is measured


def bench_image(size: tuple[int, int] = (640, 480), quality: int = 90) -> bytes:
    """A 640×480 JPEG with one face: the astronaut photo's top 480 rows, edge-padded to 640 wide."""
    import cv2

    from face3d_live.capture.demo import demo_photo

    img = demo_photo()[: size[1]]
    pad = size[0] - img.shape[1]
    img = cv2.copyMakeBorder(img, 0, 0, pad // 2, pad - pad // 2, cv2.BORDER_REPLICATE)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _batch_totals(url: str) -> dict[str, float]:
    import httpx

    from face3d_live.scale.metrics import parse_metrics

    m = parse_metrics(httpx.get(f"{url}/metrics", timeout=30).text)

    def total(name: str) -> float:
        return sum(v for _, v in m.get(name, []))

    return {
        "batches": total("face3d_batch_requests_count"),
        "requests": total("face3d_batch_requests_sum"),
        "crops": total("face3d_batch_crops_sum"),
        "batch_s": total("face3d_batch_latency_seconds_sum"),
        "gpu_util": max((v for _, v in m.get("face3d_gpu_utilization_percent", [])), default=None),
        # the whole device's memory in use (every process on it: with a model in each HTTP replica, ÷ replicas)
        "gpu_memory": max((v for _, v in m.get("face3d_gpu_memory_used_bytes", [])), default=None),
    }


def _load(
    args, url: str, body: bytes, body_path: Path, ctype: str, concurrency: int, duration: float
) -> dict:
    from face3d_live.scale.loadgen import find_wrk, run_httpx, run_wrk

    wrk = find_wrk(args.wrk) if args.client in ("auto", "wrk") else None
    if args.client == "wrk" and wrk is None:
        raise SystemExit("bench serve: wrk not found (apt-get install wrk, or --client httpx)")
    target = f"{url}/v1/reconstruct"
    if wrk:
        try:
            return run_wrk(
                target,
                body_path,
                ctype,
                concurrency,
                duration,
                wrk=wrk,
                threads=args.client_threads,
                api_key=args.api_key,
            )
        except (OSError, RuntimeError) as exc:  # e.g. a wrk binary whose libraries this machine lacks
            if args.client == "wrk":
                raise
            print(f"wrk failed ({exc}); using httpx")
            args.client = "httpx"
    return run_httpx(
        target, body, ctype, concurrency, duration, procs=args.client_procs, api_key=args.api_key
    )


def _cpu_cores(sampler: CpuSampler, top: int = 6) -> dict[str, dict]:
    """The busiest process groups during a level, as cores (CPU seconds / wall) and process counts: the
    service's replicas and model hosts, the ingress (HAProxy, Serve's proxy), the load generator."""
    wall = max(sampler.wall_s, 1e-6)
    return {
        short_name(name): {"cores": round(g.cpu_s / wall, 2), "processes": g.processes}
        for name, g in list(sampler.groups().items())[:top]
        if g.cpu_s / wall >= 0.05
    }


def _measure(args, url: str, image_path: Path | None, local_gpus: bool = False) -> dict:
    """The levels against ``url``; ``local_gpus``: the service runs on this machine's GPUs, which are then
    sampled through each level (else a level's GPU figure is the service's own gauge, read after it)."""
    import cv2
    import numpy as np

    body = image_path.read_bytes() if image_path else bench_image()
    ctype = "image/png" if body.startswith(b"\x89PNG") else "image/jpeg"
    shape = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    with tempfile.NamedTemporaryFile(suffix=".jpg") as f:
        f.write(body)
        f.flush()
        body_path = Path(f.name)
        if args.warmup > 0:
            _load(args, url, body, body_path, ctype, max(levels[0], 4), args.warmup)
        rows = []
        for c in levels:
            before = _batch_totals(url)
            probe = (
                StageProbe(f"{url}/v1/reconstruct", body, ctype, args.stage_probe, api_key=args.api_key)
                if args.stage_probe > 0
                else contextlib.nullcontext()
            )
            with (
                CpuSampler() as cpu,
                GpuLoadSampler() if local_gpus else contextlib.nullcontext() as gpu,
                probe,
            ):
                r = _load(args, url, body, body_path, ctype, c, args.duration)
            after = _batch_totals(url)
            busy = gpu.summary() if gpu is not None else None
            d = {k: (after[k] or 0) - (before[k] or 0) for k in ("batches", "requests", "crops", "batch_s")}
            r["batch"] = {
                "batches": int(d["batches"]),
                "mean_requests": round(d["requests"] / d["batches"], 2) if d["batches"] else 0.0,
                "mean_crops": round(d["crops"] / d["batches"], 2) if d["batches"] else 0.0,
                "mean_batch_ms": round(d["batch_s"] / d["batches"] * 1000, 3) if d["batches"] else 0.0,
            }
            # sampled through the level where the GPUs are here; else the gauge (one reading, after the level)
            r["gpu_util_pct"] = busy["mean_pct"] if busy else after["gpu_util"]
            r["gpu_util"] = busy or {"gauge_pct": after["gpu_util"]}
            gauge_mem = after["gpu_memory"]
            mem_mb = busy["memory_max_mb"] if busy else None if gauge_mem is None else gauge_mem / 2**20
            r["gpu_memory_used_mb"] = None if mem_mb is None else round(mem_mb, 1)
            r["cpu_cores"] = _cpu_cores(cpu)
            rows.append(r)
            lat = r["latency_ms"]
            print(
                f"c={c:4d}: {r['ok_rps']:8.1f} ok req/s ({r['rps']:.1f} total, {r['non_2xx']} refused, "
                f"{r['socket_errors']} socket errors)  p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  "
                f"p99 {lat['p99']:.1f} ms  batch: {r['batch']['mean_requests']} requests / "
                f"{r['batch']['mean_crops']} crops"
                + (
                    f"  GPU {r['gpu_util_pct'] or 0:.0f} %, {mem_mb / 1024:.1f} GiB"
                    if mem_mb is not None
                    else ""
                )
                + (f" (GPU {busy['min_pct']:.0f}–{busy['max_pct']:.0f} % over the level)" if busy else "")
            )
            if r["cpu_cores"]:
                print(
                    "        CPU cores: "
                    + ", ".join(f"{k} {v['cores']:.2f} ({v['processes']})" for k, v in r["cpu_cores"].items())
                )
            if isinstance(probe, StageProbe):
                r["stages"] = stages = probe.summary()
                print(
                    f"        stages (medians of {stages['probes']} probes, ms): "
                    + ", ".join(f"{k} {v:.1f}" for k, v in stages["median_ms"].items())
                    + (f"; {stages['errors']} probes failed" if stages["errors"] else "")
                )
    meeting = [r for r in rows if r["ok_rps"] >= TARGET_RPS and r["latency_ms"]["p95"] <= TARGET_P95_MS]
    under_p95 = [r for r in rows if r["latency_ms"]["p95"] <= TARGET_P95_MS and r["non_2xx"] == 0]
    best = max(under_p95, key=lambda r: r["ok_rps"], default=None)
    return {
        "url": url,
        "image": {"width": shape[1], "height": shape[0], "bytes": len(body), "type": ctype},
        "client": rows[0]["client"] if rows else None,
        "duration_per_level_s": args.duration,
        "levels": rows,
        "best_under_p95_target": (
            {
                "concurrency": best["concurrency"],
                "ok_rps": best["ok_rps"],
                "p95_ms": best["latency_ms"]["p95"],
            }
            if best
            else None
        ),
        "targets": {
            "rps_min": TARGET_RPS,
            "p95_max_ms": TARGET_P95_MS,
            "met": bool(meeting),
            "met_at_concurrency": [r["concurrency"] for r in meeting],
        },
    }


def run(args: argparse.Namespace) -> dict:
    from face3d_live.cli.serve import service_mps
    from face3d_live.scale.cluster import ray_session, require_serve, serve_environment, starts_local

    require_serve()
    if args.url:
        return {"service": "external", **_measure(args, args.url.rstrip("/"), args.image)}
    from face3d_live.scale.config import ServeConfig

    config = ServeConfig.from_args(args, port=args.port, api_key=args.api_key)
    serve_env = serve_environment(args.ingress)
    local = starts_local(args.ray)  # asked before Ray starts: inside the session it is connected already
    with service_mps(args) as mps, ray_session(args.ray, args.num_cpus) as cluster:
        from face3d_live.scale.serve_app import service_plan, start_service, stop_service

        print(mps)
        plan = service_plan(config)
        print(f"service: {plan.describe()}")
        t0 = time.perf_counter()
        url = start_service(config, plan)
        started = time.perf_counter() - t0
        try:
            result = _measure(args, url, args.image, local_gpus=local)
        finally:
            stop_service()
    cfg = {
        k: getattr(config, k)
        for k in (
            "max_batch",
            "batch_wait_ms",
            "streams",
            "max_concurrent_batches",
            "threads_per_replica",
            "gpu_decode",
            "gpu_batch_threads",
        )
    }
    cfg.update(model_host=plan.model_host, hosts_per_gpu=plan.hosts_per_gpu)  # as resolved (auto)
    return {
        "service": "started here",
        "serve_environment": serve_env,
        "mps": mps,
        "cluster": cluster.to_dict(),
        "start_s": round(started, 2),
        "config": {
            **cfg,
            "max_replicas": config.ingress_max_replicas,
            "min_replicas": config.ingress_min_replicas,
            "model_replicas": config.model_replicas,
            "model": asdict(config.model),  # the model flags (--model, --no-flip, --first-pass, ...)
        },
        "replicas": plan.to_dict(),
        **result,
    }
