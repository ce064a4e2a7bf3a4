"""`face3d-live bench TARGET`: benchmarks that print a table and write JSON.

Each module in ``face3d_live.bench`` defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> dict``; the dict is printed and written to ``--json`` (default ``bench-NAME.json``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import pkgutil
import platform
import time
from pathlib import Path

import face3d_live.bench as bench_pkg


def machine_info() -> dict:
    """What the numbers were measured on: CPU, cores, GPU (if any), date."""
    import os

    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from face3d_live.inference.ort_backend import int8_kernels
    from face3d_live.monitor.gpu import gpu_summary

    info["cpu_int8"] = int8_kernels()
    info["gpu"] = gpu_summary()
    return info


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="run a benchmark; prints results and writes JSON")
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for info in sorted(pkgutil.iter_modules(bench_pkg.__path__), key=lambda m: m.name):
        try:
            module = importlib.import_module(f"{bench_pkg.__name__}.{info.name}")
        except Exception as exc:  # one broken benchmark must not take the CLI down
            logging.getLogger(__name__).warning("benchmark %s unavailable: %s", info.name, exc)
            continue
        if not hasattr(module, "NAME"):  # a helper module, not a benchmark
            continue
        p = targets.add_parser(module.NAME, help=module.HELP)
        p.add_argument("--json", type=Path, default=None, help="output JSON path (default bench-NAME.json)")
        module.add_arguments(p)
        p.set_defaults(func=_runner(module))


def write_json(path: Path, obj, indent: int = 2) -> None:
    """A result file (numpy values included), its folder made if missing: a long run never ends in an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=indent, default=_jsonable))


def _runner(module):
    def run(args: argparse.Namespace) -> int:
        result = {"benchmark": module.NAME, "machine": machine_info(), **module.run(args)}
        out = args.json or Path(f"bench-{module.NAME}.json")
        write_json(out, result)
        print(f"wrote {out}")
        return 0

    return run


def _jsonable(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")
