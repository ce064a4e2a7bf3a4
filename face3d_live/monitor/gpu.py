"""GPU state through NVML (nvidia-ml-py). No driver / no GPU is a capability, never a crash."""

from __future__ import annotations

import contextlib
import logging
import statistics
from dataclasses import asdict, dataclass

from face3d_live.monitor.periodic import PeriodicSampler

log = logging.getLogger(__name__)
NO_GPU = "no NVIDIA GPU"


@dataclass(frozen=True)
class GpuState:
    name: str
    compute_capability: tuple[int, int]
    memory_used_mb: float
    memory_total_mb: float
    utilization_pct: float
    power_w: float
    temperature_c: float
    sm_clock_mhz: float
    throttle_reasons: tuple[str, ...]


_THROTTLE_NAMES = {
    "clocksEventReasonSwPowerCap": "power cap",
    "clocksEventReasonHwSlowdown": "hw slowdown",
    "clocksEventReasonSwThermalSlowdown": "sw thermal",
    "clocksEventReasonHwThermalSlowdown": "hw thermal",
    "clocksEventReasonHwPowerBrakeSlowdown": "power brake",
}


class GpuMonitor:
    """Reads one GPU's state. ``available`` is False (and ``read()`` returns None) without NVML/GPU."""

    def __init__(self, index: int = 0) -> None:
        self.available = False
        self.reason = ""
        self._handle = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._nvml = pynvml
            self.available = True
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ImportError: all mean "no GPU"
            # users read "no NVIDIA GPU"; the NVML detail (library not found, driver not loaded) goes to the log
            self.reason = NO_GPU
            log.info("GPU monitor off: %s: %s", type(exc).__name__, exc)

    def read(self) -> GpuState | None:
        if not self.available:
            return None
        n, h = self._nvml, self._handle

        def safe(fn, default):
            try:
                return fn()
            except n.NVMLError:
                return default

        mem = n.nvmlDeviceGetMemoryInfo(h)
        util = safe(lambda: n.nvmlDeviceGetUtilizationRates(h).gpu, 0.0)
        reasons = safe(lambda: n.nvmlDeviceGetCurrentClocksEventReasons(h), 0)
        throttles = tuple(
            label
            for attr, label in _THROTTLE_NAMES.items()
            if hasattr(n, "nvml" + attr[0].upper() + attr[1:])
            and reasons & getattr(n, "nvml" + attr[0].upper() + attr[1:])
        )
        name = n.nvmlDeviceGetName(h)
        return GpuState(
            name=name.decode() if isinstance(name, bytes) else name,
            compute_capability=tuple(safe(lambda: n.nvmlDeviceGetCudaComputeCapability(h), (0, 0))),
            memory_used_mb=mem.used / 2**20,
            memory_total_mb=mem.total / 2**20,
            utilization_pct=float(util),
            power_w=safe(lambda: n.nvmlDeviceGetPowerUsage(h), 0) / 1000.0,
            temperature_c=float(safe(lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU), 0)),
            sm_clock_mhz=float(safe(lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM), 0)),
            throttle_reasons=throttles,
        )

    def power_w(self) -> float | None:
        """Board power draw now (W), or None without NVML. Cheap: for sampling in a loop."""
        if not self.available:
            return None
        try:
            return self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0
        except self._nvml.NVMLError:
            return None

    def energy_j(self) -> float | None:
        """Energy the board used since the driver loaded (J; Volta and newer), or None."""
        if not self.available:
            return None
        try:
            return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0
        except self._nvml.NVMLError:
            return None

    def device_count(self) -> int:
        """NVIDIA GPUs on this machine (NVML's count; 1 where it cannot say, 0 without NVML)."""
        if not self.available:
            return 0
        try:
            return int(self._nvml.nvmlDeviceGetCount())
        except self._nvml.NVMLError:
            return 1

    def close(self) -> None:
        if self.available:
            with contextlib.suppress(Exception):  # shutting down a half-initialised NVML is harmless
                self._nvml.nvmlShutdown()
            self.available = False


def gpu_summary() -> dict | str:
    """One-shot GPU description for benchmark JSON: a dict, or the string 'no NVIDIA GPU'."""
    mon = GpuMonitor()
    try:
        state = mon.read()
        return asdict(state) if state else mon.reason
    finally:
        mon.close()


class GpuLoadSampler(PeriodicSampler):
    """``with GpuLoadSampler() as g: ...`` then ``g.summary()``: every GPU of this machine sampled every
    ``interval_s`` while the block runs: utilisation (NVML's: the share of its last sample period, 1/6 to 1 s,
    in which a kernel ran; each sample the mean over the GPUs) and memory in use.
    Why: a benchmark level's GPU figure must cover the level; one reading taken after it (the service's gauge,
    read when its metrics are scraped) read 27 % for a level that nvidia-smi showed 98 % busy midway (H200,
    stop 33), because the load had stopped by then. Without NVML it samples nothing (``summary()`` None)."""

    thread_name = "gpu-sampler"

    def __init__(self, interval_s: float = 0.25) -> None:
        super().__init__(interval_s)
        self.samples: list[tuple[float, float]] = []  # (mean utilisation %, memory MB over all GPUs)
        self._monitors: list[GpuMonitor] = []

    def __enter__(self) -> GpuLoadSampler:
        first = GpuMonitor(0)
        if first.available:
            self._monitors = [first] + [GpuMonitor(k) for k in range(1, first.device_count())]
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        for mon in self._monitors:
            mon.close()

    def tick(self) -> None:
        states = [s for s in (m.read() for m in self._monitors) if s is not None]
        if states:
            util = sum(s.utilization_pct for s in states) / len(states)
            self.samples.append((util, sum(s.memory_used_mb for s in states)))

    def summary(self) -> dict | None:
        """{"mean_pct", "median_pct", "min_pct", "max_pct", "samples", "memory_max_mb"}, or None (no samples)."""
        return summarize_load(self.samples)


def summarize_load(samples: list[tuple[float, float]]) -> dict | None:
    """GpuLoadSampler's samples ((utilisation %, memory MB) each) summarised; None for none."""
    if not samples:
        return None
    util = sorted(u for u, _ in samples)
    return {
        "mean_pct": round(sum(util) / len(util), 1),
        "median_pct": round(statistics.median(util), 1),
        "min_pct": round(util[0], 1),
        "max_pct": round(util[-1], 1),
        "samples": len(util),
        "memory_max_mb": round(max(mb for _, mb in samples), 1),
    }
