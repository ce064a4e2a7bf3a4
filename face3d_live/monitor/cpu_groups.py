"""CPU time per process group on this machine (Linux /proc): which processes a benchmark keeps busy.

Processes are grouped by what they are: a Ray actor by its class (``ray::ServeReplica:face3d:Api`` → the
service's HTTP replicas), any other program by its name (``haproxy``, ``wrk``, ``python3 -m pytest``).
``CpuSampler`` samples every process's CPU time while a block runs, so that processes which exit before its
end (a load generator) still count. ``thread_snapshot`` reads one process's threads (which of a replica's
threads burn its CPU: ``scripts/cpu_by_thread.py``). Elsewhere than Linux it measures nothing (an empty result).
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass

from face3d_live.monitor.periodic import PeriodicSampler

_PROC = "/proc"


def group_name(cmdline: str) -> str:
    """The group of a process from its command line (Ray sets its actors' titles to ``ray::Class...``)."""
    if cmdline.startswith("ray::"):
        return cmdline.split()[0].split(".")[0]
    words = cmdline.split()
    if not words:
        return "?"
    prog = os.path.basename(words[0])
    if prog.startswith("python") and len(words) > 1:
        prog += " " + os.path.basename(words[1] if not words[1].startswith("-") else " ".join(words[1:3]))
    return re.sub(r"\s+", " ", prog)[:60]


def short_name(group: str) -> str:
    """``ray::ServeReplica:face3d:Api`` → ``Api``, ``ray::ServeController`` → ``ServeController``; other groups
    as they are."""
    if group.startswith("ray::ServeReplica:"):
        return group.rsplit(":", 1)[-1]
    return group.removeprefix("ray::")


def _read_stat(path: str) -> tuple[float, str]:
    """A /proc ``stat`` file's CPU seconds so far (user + system) and its name (``comm``, in brackets there);
    OSError where the process or thread has gone."""
    with open(path) as f:
        head, _, rest = f.read().rpartition(")")
    fields = rest.split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), head.partition("(")[2]


def snapshot() -> dict[int, tuple[float, str]]:
    """Every process's CPU seconds so far (user + system) and command line, by pid ({} without /proc)."""
    if not os.path.isdir(_PROC):
        return {}
    out = {}
    for pid in os.listdir(_PROC):
        if not pid.isdigit():
            continue
        try:
            cpu, _ = _read_stat(f"{_PROC}/{pid}/stat")
            with open(f"{_PROC}/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):  # gone meanwhile
            continue
        out[int(pid)] = (cpu, cmd)
    return out


def thread_snapshot(pid: int) -> dict[int, tuple[float, str]]:
    """A process's threads: CPU seconds so far (user + system) and OS name (``comm``: a thread that never named
    itself has its process's name), by thread id ({} for a process gone or without /proc)."""
    try:
        tids = os.listdir(f"{_PROC}/{pid}/task")
    except OSError:
        return {}
    out = {}
    for tid in tids:
        try:
            out[int(tid)] = _read_stat(f"{_PROC}/{pid}/task/{tid}/stat")
        except (OSError, IndexError):  # ended meanwhile
            continue
    return out


@dataclass
class GroupUsage:
    cpu_s: float  # CPU seconds used in the window
    processes: int  # processes of the group that used any


class CpuSampler(PeriodicSampler):
    """``with CpuSampler() as s: ...`` then ``s.groups()``: CPU seconds per group used inside the block, and
    ``s.wall_s``. Samples every ``interval_s`` in a thread (an exiting process keeps its last reading)."""

    thread_name = "cpu-sampler"

    def __init__(self, interval_s: float = 0.5) -> None:
        super().__init__(interval_s)
        self.wall_s = 0.0
        self._first: dict[int, tuple[float, str]] = {}
        self._last: dict[int, tuple[float, str]] = {}

    def __enter__(self) -> CpuSampler:
        self._first = snapshot()
        self._last = dict(self._first)
        self._t0 = time.monotonic()
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self.tick()
        self.wall_s = time.monotonic() - self._t0

    def tick(self) -> None:
        for pid, (cpu, cmd) in snapshot().items():  # an exiting process loses its command line: keep it
            self._last[pid] = (cpu, cmd or self._last.get(pid, (0.0, ""))[1])

    def groups(self) -> dict[str, GroupUsage]:
        """CPU seconds per group, most first (a pid reused by a new process counts from zero)."""
        used: dict[str, float] = defaultdict(float)
        procs: dict[str, int] = defaultdict(int)
        for pid, (cpu, cmd) in self._last.items():
            first_cpu, first_cmd = self._first.get(pid, (0.0, cmd))
            delta = cpu - (first_cpu if first_cmd == cmd else 0.0)
            if delta > 0:
                name = group_name(cmd)
                used[name] += delta
                procs[name] += 1
        return {k: GroupUsage(round(used[k], 3), procs[k]) for k in sorted(used, key=lambda k: -used[k])}
