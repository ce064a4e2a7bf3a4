"""Rolling statistics and the alert engine, driven with controlled clocks and latency sequences."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from face3d_live.monitor.alerts import AlertConfig, AlertEngine
from face3d_live.monitor.gpu import GpuMonitor, GpuState
from face3d_live.monitor.stats import FrameRecord, RollingStats, StatsConfig

MS = 1_000_000
FRAME_NS = 33 * MS


def _feed(engine: AlertEngine, latencies_ms, t0_ns: int = 0, faces: int = 1) -> int:
    t = t0_ns
    for x in latencies_ms:
        t += FRAME_NS
        engine.observe_frame(int(x * MS), faces, t)
    return t


def test_percentiles_fps_and_drops():
    stats = RollingStats(StatsConfig(window_s=2.0, fps_window_s=1.0))
    t = 10_000 * MS
    for i in range(90):  # 3 s at 30 frames/s, latency 10..19 ms
        t += FRAME_NS
        stats.add(FrameRecord(t, (10 + i % 10) * MS, {"infer": 4 * MS, "render": 2 * MS}, faces=1))
        stats.set_dropped(i // 3, t)  # one frame in three dropped
    snap = stats.snapshot(t)
    assert 28 <= snap.fps <= 32
    assert snap.e2e.p50 == pytest.approx(14.5, abs=1.0)
    assert 18 <= snap.e2e.p95 <= 19 and snap.e2e.p99 <= 19
    assert list(snap.stages) == ["infer", "render"] and snap.stages["infer"].p50 == pytest.approx(4.0)
    assert snap.dropped_total == 29
    assert 9 <= snap.dropped_window <= 11 and snap.drop_rate == pytest.approx(0.25, abs=0.03)
    # nothing shown for 2 s: frame rate falls to 0, the window empties
    later = stats.snapshot(t + 2_100 * MS)
    assert later.fps == 0.0 and later.e2e is None


def test_one_spike_raises_exactly_one_alert_that_clears():
    rng = np.random.default_rng(0)
    engine = AlertEngine()
    t = _feed(engine, 20 + rng.normal(0, 1.5, 200))
    assert engine.drain() == []  # steady noise: no false alarm
    t = _feed(engine, [150, 180, 160, 170, 155, 165], t)  # the spike: one alert, not six
    events = engine.drain()
    assert [(e.kind, e.alert.key) for e in events] == [("raised", "latency")]
    alert = events[0].alert
    assert alert.active and "180 ms" in alert.message and alert.raised_at > 0
    _feed(engine, 20 + rng.normal(0, 1.5, 30), t)
    events = engine.drain()
    assert [(e.kind, e.alert.key) for e in events] == [("cleared", "latency")]
    assert not alert.active and alert.cleared_ns > alert.raised_ns
    assert engine.raised_count == {"latency": 1} and list(engine.history) == [alert]


def test_single_frame_hiccup_and_warmup_do_not_alert():
    engine = AlertEngine()
    t = _feed(engine, [200] * 5 + [20] * 40)  # slow first frames: warm-up, not an anomaly
    t = _feed(engine, [20, 20, 400, 20, 20, 300, 20] * 5, t)  # isolated hiccups
    assert engine.drain() == []


def test_lasting_shift_becomes_the_new_normal():
    engine = AlertEngine(AlertConfig(latency_accept_after=60))
    t = _feed(engine, [20.0] * 60)
    t = _feed(engine, [45.0] * 61, t)
    assert [(e.kind, e.alert.key) for e in engine.drain()] == [("raised", "latency"), ("cleared", "latency")]
    _feed(engine, [45.0] * 100, t)
    assert engine.drain() == []


def test_face_lost_fps_drop_and_dropped_frames():
    engine = AlertEngine(AlertConfig(warmup_s=1.0, fps_drop_after_s=1.0))
    stats = RollingStats()
    t = 0
    for _ in range(60):  # 2 s healthy at 30 fps
        t += FRAME_NS
        stats.add(FrameRecord(t, 20 * MS, faces=1))
        stats.set_dropped(0, t)
        engine.observe_frame(20 * MS, 1, t)
        engine.observe(stats.snapshot(t), None, t, expected_fps=30.0)
    assert engine.drain() == []
    dropped = 0
    for _ in range(30):  # 3 s at 10 fps, 2 of 3 frames dropped, no face
        t += 100 * MS
        dropped += 2
        stats.add(FrameRecord(t, 20 * MS, faces=0))
        stats.set_dropped(dropped, t)
        engine.observe_frame(20 * MS, 0, t)
        engine.observe(stats.snapshot(t), None, t, expected_fps=30.0)
    raised = [e.alert.key for e in engine.drain() if e.kind == "raised"]
    assert sorted(raised) == ["dropped_frames", "face_lost", "fps_drop"]
    for _ in range(60):  # healthy again
        t += FRAME_NS
        stats.add(FrameRecord(t, 20 * MS, faces=1))
        stats.set_dropped(dropped, t)
        engine.observe_frame(20 * MS, 1, t)
        engine.observe(stats.snapshot(t), None, t, expected_fps=30.0)
    cleared = [e.alert.key for e in engine.drain() if e.kind == "cleared"]
    assert sorted(cleared) == ["dropped_frames", "face_lost", "fps_drop"]
    assert engine.active() == []


def _gpu(used_mb: float, throttle: tuple[str, ...] = ()) -> GpuState:
    return GpuState("Test GPU", (9, 0), used_mb, 80_000.0, 50.0, 300.0, 60.0, 1800.0, throttle)


def test_gpu_memory_growth_and_throttling():
    engine = AlertEngine()
    stats = RollingStats().snapshot(0)
    t = 0
    for used in np.linspace(2000, 2600, 40):  # +600 MB within 10 s: a leak
        t += 250 * MS
        engine.observe(stats, _gpu(float(used)), t)
    assert [e.alert.key for e in engine.drain()] == ["gpu_memory"]
    for _ in range(300):  # flat for 75 s: the window no longer shows growth
        t += 250 * MS
        engine.observe(stats, _gpu(2600.0), t)
    assert [(e.kind, e.alert.key) for e in engine.drain()] == [("cleared", "gpu_memory")]
    engine.observe(stats, _gpu(2600.0, ("hw thermal",)), t + 1)
    engine.observe(stats, _gpu(2600.0, ("hw thermal", "power cap")), t + 2)
    events = engine.drain()
    assert [(e.kind, e.alert.key) for e in events] == [("raised", "gpu_throttle")]
    assert "power cap" in events[0].alert.message  # de-duplicated, message kept current
    engine.observe(stats, _gpu(2600.0), t + 3)
    assert [(e.kind, e.alert.key) for e in engine.drain()] == [("cleared", "gpu_throttle")]


def test_gpu_monitor_degrades_without_gpu():
    mon = GpuMonitor()
    try:
        if mon.available:
            state = mon.read()
            assert state is not None and state.memory_total_mb > 0
        else:
            assert mon.read() is None and mon.reason == "no NVIDIA GPU"  # not a raw NVMLError name
    finally:
        mon.close()
        mon.close()  # idempotent


@pytest.mark.skipif(not __import__("os").path.isdir("/proc"), reason="Linux /proc")
def test_cpu_sampler_counts_a_busy_process_that_exits_inside_the_block():
    """A load generator exits before its level ends: its CPU still counts, in its own group (bench serve's
    per-level "CPU cores" line)."""
    import subprocess
    import sys

    from face3d_live.monitor.cpu_groups import CpuSampler, group_name, short_name

    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass"
    with CpuSampler(interval_s=0.1) as sampler:
        subprocess.run([sys.executable, "-c", busy], check=True)
    groups = sampler.groups()
    mine = [g for name, g in groups.items() if name.startswith("python") and name.endswith("-c import")]
    assert mine and max(g.cpu_s for g in mine) >= 0.5, groups
    assert sampler.wall_s >= 0.6
    assert list(groups) == sorted(groups, key=lambda k: -groups[k].cpu_s)  # busiest first
    assert group_name("ray::ServeReplica:face3d:Api.__init__ extra") == "ray::ServeReplica:face3d:Api"
    assert short_name("ray::ServeReplica:face3d:ModelHost") == "ModelHost" and short_name("wrk") == "wrk"
    assert short_name("ray::ServeController") == "ServeController"
    assert group_name("/usr/sbin/haproxy -f cfg") == "haproxy"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="Linux /proc")
def test_thread_snapshot_finds_the_thread_that_burns_cpu():
    """A thread that spins for 0.4 s shows that CPU time under its own id; an idle one shows next to none."""
    from face3d_live.monitor.cpu_groups import thread_snapshot

    ids: dict[str, int] = {}
    stop = threading.Event()

    def spin() -> None:
        ids["busy"] = threading.get_native_id()
        end = time.process_time() + 10
        while not stop.is_set() and time.process_time() < end:
            pass

    def idle() -> None:
        ids["idle"] = threading.get_native_id()
        stop.wait()

    before = thread_snapshot(os.getpid())
    threads = [threading.Thread(target=f) for f in (spin, idle)]
    for t in threads:
        t.start()
    time.sleep(0.4)
    during = thread_snapshot(os.getpid())
    stop.set()
    for t in threads:
        t.join()
    assert ids["busy"] not in before and ids["busy"] in during
    assert during[ids["busy"]][0] >= 0.2, during[ids["busy"]]
    assert during[ids["idle"]][0] < 0.05
    assert thread_snapshot(-1) == {}


def test_gpu_load_sampler_summary_and_no_gpu():
    """The per-level GPU figure of bench serve: the samples' mean, median, range and peak memory; on a machine
    without NVML the block runs and there is nothing to summarise (the bench then falls back to the gauge)."""
    from face3d_live.monitor.gpu import GpuLoadSampler, summarize_load

    assert summarize_load([]) is None
    s = summarize_load([(98.0, 30_000.0), (27.0, 31_000.0), (100.0, 30_500.0), (95.0, 29_000.0)])
    assert s == {
        "mean_pct": 80.0,
        "median_pct": 96.5,
        "min_pct": 27.0,
        "max_pct": 100.0,
        "samples": 4,
        "memory_max_mb": 31_000.0,
    }
    with GpuLoadSampler(interval_s=0.05) as sampler:
        time.sleep(0.3)
    probe = GpuMonitor()
    has_gpu = probe.available
    probe.close()
    if has_gpu:
        assert sampler.summary()["samples"] >= 3
    else:
        assert sampler.samples == [] and sampler.summary() is None


@pytest.mark.gpu
def test_gpu_load_sampler_sees_a_busy_gpu():
    """On a GPU: matrix products kept running for 1.5 s read as a busy GPU (NVML's utilisation, mean of the
    samples over the block), and the memory they hold is counted."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from face3d_live.monitor.gpu import GpuLoadSampler

    a = torch.randn(4096, 4096, device="cuda")
    with GpuLoadSampler(interval_s=0.1) as sampler:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.5:
            for _ in range(20):
                a = (a @ a).clamp_(-1.0, 1.0)
            torch.cuda.synchronize()
    s = sampler.summary()
    assert s is not None and s["samples"] >= 8, s
    assert s["median_pct"] >= 80 and s["max_pct"] <= 100, s
    assert s["memory_max_mb"] >= 64, s
