"""The service's Prometheus metrics, gathered from every replica into one place.

Each replica records into a ``MetricsBuffer`` (plain counters and observation lists, no locks on the hot
path beyond the GIL) and hands its delta to the ``MetricsHub`` deployment every ``FLUSH_S`` seconds; the hub
keeps them in a prometheus_client registry that ``GET /metrics`` renders. GPU state (NVML, through
``monitor.gpu.GpuMonitor``) is sampled by the model replicas, which run where the GPUs are.
"""

from __future__ import annotations

import socket
from collections import defaultdict

FLUSH_S = 0.5

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)

# name → (kind, help, label names, buckets)
METRICS: dict[str, tuple[str, str, tuple[str, ...], tuple[float, ...] | None]] = {
    "face3d_requests": ("counter", "HTTP requests answered", ("endpoint", "status"), None),
    "face3d_request_errors": (
        "counter",
        "Requests refused or failed, by reason",
        ("endpoint", "reason"),
        None,
    ),
    "face3d_request_latency_seconds": (
        "histogram",
        "Request latency in the HTTP replica (body read to response)",
        ("endpoint",),
        LATENCY_BUCKETS,
    ),
    "face3d_faces": ("counter", "Faces returned", ("endpoint",), None),
    "face3d_batch_requests": (
        "histogram",
        "Requests per model batch (@serve.batch)",
        ("deployment",),
        BATCH_BUCKETS,
    ),
    "face3d_batch_crops": ("histogram", "Face crops per model batch", ("deployment",), BATCH_BUCKETS),
    "face3d_batch_latency_seconds": (
        "histogram",
        "Model batch time: executor submit to decoded output",
        ("deployment",),
        LATENCY_BUCKETS,
    ),
    "face3d_gpu_available": (
        "gauge",
        "1 when the model replica sees an NVIDIA GPU through NVML",
        ("node",),
        None,
    ),
    "face3d_gpu_utilization_percent": ("gauge", "GPU utilisation (NVML)", ("node", "gpu"), None),
    "face3d_gpu_memory_used_bytes": ("gauge", "GPU memory used (NVML)", ("node", "gpu"), None),
    "face3d_gpu_power_watts": ("gauge", "GPU board power (NVML)", ("node", "gpu"), None),
}


class MetricsBuffer:
    """One replica's metrics since the last ``take()``."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, tuple[str, ...]], float] = defaultdict(float)
        self.observations: dict[tuple[str, tuple[str, ...]], list[float]] = defaultdict(list)
        self.gauges: dict[tuple[str, tuple[str, ...]], float] = {}

    def inc(self, name: str, labels: tuple[str, ...], value: float = 1.0) -> None:
        self.counters[(name, labels)] += value

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        self.observations[(name, labels)].append(float(value))

    def set(self, name: str, labels: tuple[str, ...], value: float) -> None:
        self.gauges[(name, labels)] = float(value)

    def take(self) -> dict | None:
        if not (self.counters or self.observations or self.gauges):
            return None
        delta = {
            "counters": list(self.counters.items()),
            "observations": list(self.observations.items()),
            "gauges": list(self.gauges.items()),
        }
        self.counters, self.observations, self.gauges = defaultdict(float), defaultdict(list), {}
        return delta


class MetricsStore:
    """A prometheus_client registry of METRICS, fed with replicas' deltas."""

    def __init__(self) -> None:
        import prometheus_client as pc

        pc.disable_created_metrics()  # no *_created samples: they double the scrape for nothing
        self.registry = pc.CollectorRegistry()
        self.metrics = {}
        for name, (kind, doc, labels, buckets) in METRICS.items():
            if kind == "counter":
                self.metrics[name] = pc.Counter(name, doc, labels, registry=self.registry)
            elif kind == "gauge":
                self.metrics[name] = pc.Gauge(name, doc, labels, registry=self.registry)
            else:
                self.metrics[name] = pc.Histogram(name, doc, labels, buckets=buckets, registry=self.registry)

    def apply(self, delta: dict) -> None:
        for (name, labels), value in delta.get("counters", []):
            self.metrics[name].labels(*labels).inc(value)
        for (name, labels), values in delta.get("observations", []):
            h = self.metrics[name].labels(*labels)
            for v in values:
                h.observe(v)
        for (name, labels), value in delta.get("gauges", []):
            self.metrics[name].labels(*labels).set(value)

    def render(self) -> bytes:
        import prometheus_client as pc

        return pc.generate_latest(self.registry)


class GpuSampler:
    """NVML state of the GPUs a model replica was given (``gpu_ids``), as gauges."""

    def __init__(self, gpu_ids: list) -> None:
        from face3d_live.monitor.gpu import GpuMonitor

        self.node = socket.gethostname()
        self.monitors = [(str(g), GpuMonitor(int(g))) for g in gpu_ids]
        self.available = any(m.available for _, m in self.monitors)

    def sample(self, buffer: MetricsBuffer) -> None:
        buffer.set("face3d_gpu_available", (self.node,), 1.0 if self.available else 0.0)
        for gpu, mon in self.monitors:
            state = mon.read()
            if state is None:
                continue
            labels = (self.node, gpu)
            buffer.set("face3d_gpu_utilization_percent", labels, state.utilization_pct)
            buffer.set("face3d_gpu_memory_used_bytes", labels, state.memory_used_mb * 2**20)
            buffer.set("face3d_gpu_power_watts", labels, state.power_w)

    def close(self) -> None:
        for _, mon in self.monitors:
            mon.close()


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text → {sample name: [(labels, value)]} (for the benchmark and tests)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name].append((dict(s.labels), float(s.value)))
    return out
