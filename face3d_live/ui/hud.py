"""HUD text: frame rate, latency percentiles, per-stage breakdown, model/backend, GPU state. No Qt."""

from __future__ import annotations

from face3d_live.monitor.gpu import GpuState
from face3d_live.monitor.stats import E2E, StatsSnapshot

# stages in data-flow order; others (e.g. injected stalls) follow
STAGE_ORDER = (
    "capture",
    "queue",
    "detect",
    "crop",
    "infer",
    "decode",
    "smooth",
    "texture",
    "render",
    "display",
)


def hud_lines(
    stats: StatsSnapshot | None,
    description: dict[str, str],
    gpu: GpuState | None,
    gpu_reason: str = "no NVIDIA GPU",
    source: str = "",
    status: str = "loading model…",
) -> list[str]:
    """The HUD, one string per line. ``status`` replaces the model line until the model is ready."""
    lines = []
    if stats is None or stats.e2e is None:
        lines.append("FPS   --      waiting for frames")
    else:
        e = stats.e2e
        lines.append(
            f"FPS {stats.fps:4.1f}  end-to-end ms  p50 {e.p50:.1f}  p95 {e.p95:.1f}  p99 {e.p99:.1f}"
        )
        stages = [s for s in STAGE_ORDER if s in stats.stages]
        stages += [s for s in stats.stages if s not in STAGE_ORDER and s != E2E]
        parts = [f"{s} {stats.stages[s].p50:.1f}" for s in stages]
        for i in range(0, len(parts), 4):
            lines.append(("stage p50 ms " if i == 0 else "             ") + "  ".join(parts[i : i + 4]))
        lines.append(f"frames {stats.frames_total}   dropped {stats.dropped_total}")
    if description:
        lines.append(
            f"{description.get('model', '?')} · {description.get('backend', '?')} "
            f"({description.get('device', '?')}, {description.get('precision', '?')})"
        )
    else:
        lines.append(status)
    if source:
        lines.append(f"source {source}")
    if gpu is None:
        lines.append(f"GPU: {gpu_reason}")
    else:
        lines.append(
            f"GPU {gpu.name}: {gpu.utilization_pct:.0f}%  {gpu.memory_used_mb:.0f}/{gpu.memory_total_mb:.0f} MB  "
            f"{gpu.power_w:.0f} W  {gpu.temperature_c:.0f} °C"
        )
    return lines
