"""Which threads of which processes burn the CPU while a load runs (Linux /proc; a benchmark diagnostic).

    python3 scripts/cpu_by_thread.py --seconds 5 --match ':Api' --match '^haproxy' [--json out.json]

Reads every thread's CPU time of the processes whose command line matches a ``--match`` pattern (a regular
expression; each process counts under the first that matches), sleeps ``--seconds``, reads again, and prints
CPU cores per (pattern, thread name), most first, with the machine's /proc/stat split (user, nice, system,
idle, steal, ...) over the same window. Thread names: Python's own (``gpu-front-0``, ``AsyncIO Thread:
default``) where py-spy is installed (``py-spy dump`` of each process, before the window), else the OS name
(a thread that never named itself shows its process's name in brackets, e.g. ``[ray::IDLE]``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package, run from anywhere
from face3d_live.monitor.cpu_groups import snapshot, thread_snapshot  # noqa: E402

STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_DUMP_THREAD = re.compile(r'Thread (0x[0-9A-Fa-f]+|\d+) \(([^)]*)\): "([^"]*)"')


def matching_pids(patterns: list[str]) -> dict[int, str]:
    """pid → the first pattern its command line matches (this process left out)."""
    out = {}
    for pid, (_, cmd) in snapshot().items():
        hit = next((p for p in patterns if re.search(p, cmd)), None)
        if hit is not None and pid != os.getpid():
            out[pid] = hit
    return out


def python_thread_names(pid: int, spy: str | None) -> dict[int, str]:
    """thread id → Python thread name, from ``py-spy dump`` (nothing without py-spy or for a non-Python
    process)."""
    if spy is None:
        return {}
    try:
        text = subprocess.run(
            [spy, "dump", "--pid", str(pid), "--nonblocking"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    names = {}
    for m in _DUMP_THREAD.finditer(text):
        tid = m.group(1)
        names[int(tid, 16) if tid.startswith("0x") else int(tid)] = m.group(3)
    return names


def cpu_stat() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1 : 1 + len(STAT_FIELDS)]]


def measure(patterns: list[str], seconds: float, spy: str | None) -> dict:
    pids = matching_pids(patterns)
    names = {pid: python_thread_names(pid, spy) for pid in pids}
    first = {pid: thread_snapshot(pid) for pid in pids}
    stat0, t0 = cpu_stat(), time.monotonic()
    time.sleep(seconds)
    last = {pid: thread_snapshot(pid) for pid in pids}
    stat1, wall = cpu_stat(), time.monotonic() - t0
    cores: dict[tuple[str, str], float] = defaultdict(float)
    per_pattern: dict[str, float] = defaultdict(float)
    for pid, pattern in pids.items():
        for tid, (cpu, comm) in last[pid].items():
            used = cpu - first[pid].get(tid, (0.0, comm))[0]
            name = names[pid].get(tid) or f"[{comm}]"
            cores[(pattern, name)] += used / wall
            per_pattern[pattern] += used / wall
    ticks = [b - a for a, b in zip(stat0, stat1)]
    total = sum(ticks) or 1
    return {
        "wall_s": round(wall, 3),
        "machine_pct": {k: round(100 * v / total, 1) for k, v in zip(STAT_FIELDS, ticks)},
        "processes": {p: sum(1 for q in pids.values() if q == p) for p in patterns},
        "cores": {p: round(per_pattern[p], 3) for p in patterns},
        "threads": [
            {"match": p, "thread": n, "cores": round(c, 3)}
            for (p, n), c in sorted(cores.items(), key=lambda kv: -kv[1])
            if c >= 0.005
        ],
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--match", action="append", required=True, help="a command-line regex (repeatable)")
    ap.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy for Python thread names")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    if not os.path.isdir("/proc"):
        print("cpu_by_thread: needs Linux /proc", file=sys.stderr)
        return 2
    result = measure(args.match, args.seconds, args.py_spy)
    stat = " ".join(f"{k} {v}" for k, v in result["machine_pct"].items())
    print(f"cpu_by_thread: {result['wall_s']} s; machine %: {stat}")
    for p, c in result["cores"].items():
        print(f"  {c:6.2f} cores  {p} ({result['processes'][p]} processes)")
    for row in result["threads"][:40]:
        print(f"  {row['cores']:6.2f} cores  {row['match']}  {row['thread']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
