"""How many replicas of what the service deploys, from the cluster's CPUs and GPUs (no Ray needed here).

By default every HTTP replica holds its own model and batches its own requests (no model calls between
processes). On the H200 (16 cores) that measured 4.3× the throughput of one model deployment fed by the
HTTP replicas (1,190 against 277.9 requests/s at c=256, README "Scale-out on Ray"); ``model_replicas`` ≥ 1
brings the model deployment back.

With GPUs, each such replica is a CUDA context of its own (1.0 GiB each on the H200, measured: 10.9 GiB with
10 replicas, 15.0 with 14). Replicas beyond ~5 per 8 CPUs only time-slice the GPU between more contexts
(16 cores: 10 replicas 863 requests/s at c=64, 14 replicas 733, the same hour), and a new replica takes
seconds to load and capture its graphs, so on GPUs the HTTP replicas are a fixed set (5/8 of the CPUs,
within the GPU memory) rather than autoscaled from one. Under MPS (one shared context, ``scale.mps``) with
decoding and detection on the GPU that limit goes: on the H200 10, 14 and 16 replicas served 662, 851 and 986
requests/s at c=64 (1,214 at c=256 with 16), so there it is one replica per CPU. There too, a model host per
GPU (``scale.model_host``: one process holds the model and batches the crops of all the replicas on its GPU)
takes a CPU and a GPU share like a replica, and there it is the default (``resolve_model_host``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from face3d_live.scale.cluster import gpu_share
from face3d_live.scale.config import ServeConfig

GPU_REPLICAS_PER_CPU = 5 / 8  # HTTP replicas with their own model on a GPU machine (see above)
REPLICA_GPU_GIB = 1.25  # GPU memory one such replica may take (1.0 measured) when capping by memory
# Model hosts per GPU by default. H200, 16 cores, one pass a photo, 2026-12-05 (README "Scale-out on Ray"):
# 3 hosts served ≥ 2,000 requests/s at p95 ≤ 50 ms in 5 of 6 runs over two leases (c=64: median 2,087.8),
# 4 hosts in 2 of 3, 2 hosts in none of 3 (≤ 1,989.5 within p95 50): one host process's Python and GIL
# bound its batches; each host takes a CPU from the HTTP replicas, so more only move the limit to them.
AUTO_HOSTS_PER_GPU = 3


@dataclass(frozen=True)
class ReplicaPlan:
    embedded: bool  # a model in each HTTP replica (no model deployment)
    model_replicas: int  # the model deployment's maximum (0 when embedded)
    min_http: int
    max_http: int
    gpus_per_http: float  # each HTTP replica's GPU share (embedded models on GPUs)
    gpus_per_model: float  # each model replica's GPU share
    model_hosts: int = 0  # shared model hosts (they take the embedded replicas' model calls)
    hosts_per_gpu: int = 1  # of them on each GPU
    model_host: str = "off"  # --model-host as resolved for this cluster (resolve_model_host)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def describe(self) -> str:
        """One line for people: how many HTTP replicas and where the model runs."""
        http = f"{self.min_http}" if self.min_http == self.max_http else f"{self.min_http}-{self.max_http}"
        if self.model_hosts:
            if not self.gpus_per_model:
                return f"{http} HTTP replica(s) and 1 model host (on the CPU) batching their crops"
            return (
                f"{http} HTTP replica(s) ({self.gpus_per_http:.2g} GPU each) and {self.model_hosts} model "
                f"host(s), {self.hosts_per_gpu} per GPU, batching the replicas' crops"
            )
        if self.embedded:
            where = f"{self.gpus_per_http:.2g} GPU each" if self.gpus_per_http else "on the CPU"
            return f"{http} HTTP replica(s), each with its own model ({where})"
        gpu = f", {self.gpus_per_model:.2g} GPU each" if self.gpus_per_model else ""
        return f"{http} HTTP replica(s) and up to {self.model_replicas} model replica(s){gpu}"


def resolve_model_host(
    config: ServeConfig, gpus: float, shared_gpu_context: bool, unavailable: str | None = None
) -> tuple[str, int]:
    """``--model-host`` and ``--hosts-per-gpu`` for this cluster: "auto" is "model" where the replicas would
    share a GPU context and decode on it (``shared_gpu_context``: MPS and GPU decoding), each holding its
    own model otherwise (no model deployment, no first-pass model, ``unavailable`` None: the host's
    needs are met), else "off"; hosts per GPU unset is ``AUTO_HOSTS_PER_GPU`` on GPUs, one without (and one
    with no host)."""
    mode = config.model_host
    if mode == "auto":
        usable = (
            gpus > 0
            and shared_gpu_context
            and not config.model_replicas
            and not config.model.first_pass
            and unavailable is None
        )
        mode = "model" if usable else "off"
    if mode == "off":  # a count given for "auto" that found no place for hosts has nothing to size
        return mode, 1
    return mode, config.hosts_per_gpu or (AUTO_HOSTS_PER_GPU if gpus > 0 else 1)


def plan_replicas(
    config: ServeConfig,
    cpus: float,
    gpus: float,
    gpu_memory_gib: float | None = None,
    gpu_node_cpus: float | None = None,
    shared_gpu_context: bool = False,
    model_host: bool = False,
) -> ReplicaPlan:
    """The deployment sizes. ``gpu_memory_gib``: the smallest GPU's memory where it is known (NVML on this
    node), which caps the HTTP replicas that each hold a model on a GPU. ``gpu_node_cpus``: the CPUs of the
    nodes that have GPUs (default: all ``cpus``): replicas that hold a model on a GPU can only run there, so
    a cluster's GPU-less nodes do not count for them (``model_replicas`` ≥ 1 uses those nodes for HTTP).
    ``shared_gpu_context``: the replicas run under MPS with decoding on the GPU (one replica per CPU);
    ``model_host``: with it, ``config.hosts_per_gpu`` model hosts per GPU (one without GPUs) take the
    replicas' model calls."""
    embedded = not config.model_replicas  # None (the default) or 0
    n_model = 0 if embedded else int(config.model_replicas)
    on_gpu = embedded and gpus > 0
    # one per GPU beside replicas that hold no context of their own; without GPUs, one (a model shared
    # by the replicas: one copy in memory, its batches across them)
    hosts = 0
    per_gpu = config.hosts_per_gpu or AUTO_HOSTS_PER_GPU
    if model_host and embedded:
        hosts = (math.ceil(gpus) * per_gpu if shared_gpu_context else 0) if gpus > 0 else 1
    if on_gpu and gpu_node_cpus is not None:
        cpus = gpu_node_cpus
    free = max(config.ingress_cpus, cpus - n_model * config.model_cpus - hosts * config.model_cpus)
    by_cpu = max(1, int(free // config.ingress_cpus))
    if on_gpu:
        if not shared_gpu_context:
            by_cpu = max(1, int(by_cpu * GPU_REPLICAS_PER_CPU))
        if gpu_memory_gib:
            by_cpu = min(by_cpu, max(1, int(gpus * gpu_memory_gib // REPLICA_GPU_GIB)))
    max_http = config.ingress_max_replicas or by_cpu
    if config.ingress_min_replicas is not None:
        min_http = config.ingress_min_replicas
    else:
        min_http = max_http if on_gpu else 1
    min_http = min(min_http, max_http)
    return ReplicaPlan(
        embedded=embedded,
        model_replicas=n_model,
        min_http=min_http,
        max_http=max_http,
        gpus_per_http=gpu_share(gpus, max_http + hosts) if embedded else 0.0,
        # a model host takes the same share as a replica (under MPS the shares only place them)
        gpus_per_model=gpu_share(gpus, max_http + hosts) if hosts else gpu_share(gpus, n_model),
        model_hosts=hosts,
        hosts_per_gpu=per_gpu if hosts and gpus > 0 else 1,
        model_host=(config.model_host if config.model_host != "auto" else "model") if hosts else "off",
    )


def local_gpu_memory_gib() -> float | None:
    """GPU 0's memory on this node through NVML, or None (no NVML, no GPU)."""
    from face3d_live.monitor.gpu import gpu_summary

    gpu = gpu_summary()
    return gpu["memory_total_mb"] / 1024.0 if isinstance(gpu, dict) else None
