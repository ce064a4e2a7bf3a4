"""Rank the functions of a py-spy raw profile (``py-spy record --format raw``, as scripts/device_scale.sh
SPY=1 writes): each function's share of the samples in which it is on the stack (inclusive), highest first.

    python3 scripts/spy_summary.py FILE [--top 40] [--match NAME ...]

``--match`` prints only the functions whose name starts with one of the NAMEs (say ``GpuFrontEnd._wait``).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# a raw frame: "function (path/file.py:line)"; the line number is dropped so a function counts once
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>[^():]*?)(?::\d+)?\)$")


def inclusive_shares(path: Path) -> tuple[int, Counter]:
    """(samples, samples per "function file.py" with the function anywhere on the stack)."""
    total, counts = 0, Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        total += int(n)
        names = set()
        for frame in stack.split(";"):
            m = _FRAME.match(frame)
            names.add(f"{m['func']} {Path(m['path']).name}" if m else frame)
        for name in names:
            counts[name] += int(n)
    return total, counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", type=Path)
    p.add_argument("--top", type=int, default=40, help="functions to print (default 40)")
    p.add_argument(
        "--match", nargs="*", default=[], help="only functions whose name starts with one of these"
    )
    args = p.parse_args()
    total, counts = inclusive_shares(args.file)
    if not total:
        raise SystemExit(f"{args.file}: no py-spy raw samples")
    rows = [(k, v) for k, v in counts.most_common() if not args.match or k.startswith(tuple(args.match))]
    print(f"{args.file}: {total} samples")
    for name, n in rows[: args.top]:
        print(f"{100 * n / total:6.1f} %  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
