"""`face3d-live` command line. Each sub-command lives in its own module in this package.

A module here defines ``register(subparsers)`` that adds its parser and sets ``func=run(args) -> int``.
Modules are discovered, so adding a command never edits this file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from face3d_live import __version__
from face3d_live.errors import Face3DError, missing_extra
from face3d_live.threads import limit_blas_threads


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="face3d-live", description="Real-time 3D face reconstruction from one camera."
    )
    parser.add_argument("--version", action="version", version=f"face3d-live {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        try:
            module = importlib.import_module(f"{__name__}.{info.name}")
        except Exception as exc:  # one broken command must not take the others down
            logging.getLogger(__name__).warning("command module %s unavailable: %s", info.name, exc)
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    limit_blas_threads()  # the CLI owns the process: one BLAS thread (face3d_live/threads.py says why)
    try:
        return int(args.func(args) or 0)
    except Face3DError as exc:
        print(f"face3d-live: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # an optional extra (torch, mediapipe, ...) that is not installed
        hint = missing_extra(exc)
        if hint is None:
            raise
        print(f"face3d-live: error: {hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("face3d-live: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
