"""CPU seconds used per process group while a command runs (Linux /proc; a benchmark diagnostic).

    python3 scripts/cpu_by_process.py -- COMMAND ARGS...

Samples every process's CPU time each 0.5 s (so processes that exit before the end still count), groups
them by name (Ray actors by class, e.g. ``ray::ServeReplica:face3d:Api``; others by program), and prints
the groups by CPU seconds after the command exits, with its exit status.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package, run from anywhere
from face3d_live.monitor.cpu_groups import CpuSampler  # noqa: E402


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print(__doc__)
        return 2
    with CpuSampler() as sampler:
        code = subprocess.call(argv)
    groups = sampler.groups()
    total = sum(g.cpu_s for g in groups.values())
    wall = sampler.wall_s
    print(
        f"cpu_by_process: {total:.1f} CPU-s in {wall:.1f} s wall ({total / wall:.1f} cores busy on average)"
    )
    for name, g in list(groups.items())[:25]:
        print(f"  {g.cpu_s:8.1f} s  {name}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
