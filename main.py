"""face3d_live front door: `python main.py [--source FILE|INDEX|demo] [options]`.

Starts the live app (`face3d-live app`). Where the app is not installed yet it processes the source
headlessly (`face3d-live process`, default: the built-in demo) so the command always does the main job.
"""

from __future__ import annotations

import sys

from face3d_live.cli import build_parser, main


def _has_command(name: str) -> bool:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return name in sub.choices


if __name__ == "__main__":
    argv = sys.argv[1:]
    if _has_command("app"):
        sys.exit(main(["app", *argv]))
    source = "demo"
    if "--source" in argv:
        i = argv.index("--source")
        source = argv[i + 1]
        argv = argv[:i] + argv[i + 2 :]
    print(f"face3d-live: processing {source!r} headlessly (results in out/main)", file=sys.stderr)
    sys.exit(main(["process", source, "--out", "out/main", *argv]))
