"""CPU seconds used per process group while a command runs (Linux /proc; a benchmark diagnostic).

    python3 scripts/cpu_by_process.py -- COMMAND ARGS...

Samples every process's CPU time each 0.5 s (so processes that exit before the end still count), groups
them by name (Ray actors by class, e.g. ``ray::ServeReplica:face3d:Api``; others by program), and prints
the groups by CPU seconds after the command exits, with its exit status.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import defaultdict

TICK = os.sysconf("SC_CLK_TCK")


def _group(cmdline: str) -> str:
    if cmdline.startswith("ray::"):
        return cmdline.split()[0].split(".")[0]
    words = cmdline.split()
    if not words:
        return "?"
    prog = os.path.basename(words[0])
    if prog.startswith("python") and len(words) > 1:
        prog += " " + os.path.basename(words[1] if not words[1].startswith("-") else " ".join(words[1:3]))
    return re.sub(r"\s+", " ", prog)[:60]


def _snapshot() -> dict[int, tuple[float, str]]:
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        out[int(pid)] = ((int(fields[11]) + int(fields[12])) / TICK, cmd)
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print(__doc__)
        return 2
    first = _snapshot()
    last = dict(first)
    proc = subprocess.Popen(argv)
    t0 = time.monotonic()
    while proc.poll() is None:
        time.sleep(0.5)
        for pid, (cpu, cmd) in _snapshot().items():  # an exiting process loses its command line: keep it
            last[pid] = (cpu, cmd or last.get(pid, (0.0, ""))[1])
    wall = time.monotonic() - t0
    used: dict[str, float] = defaultdict(float)
    for pid, (cpu, cmd) in last.items():
        base = first.get(pid, (0.0, cmd))[0] if first.get(pid, (0, ""))[1] == cmd else 0.0
        if cpu - base > 0:
            used[_group(cmd)] += cpu - base
    total = sum(used.values())
    print(
        f"cpu_by_process: {total:.1f} CPU-s in {wall:.1f} s wall ({total / wall:.1f} cores busy on average)"
    )
    for name, sec in sorted(used.items(), key=lambda kv: -kv[1])[:25]:
        print(f"  {sec:8.1f} s  {name}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
