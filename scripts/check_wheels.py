#!/usr/bin/env python3
"""Check that every runtime dependency of face3d-live has wheels for the given CPython versions.

A dry-run resolution with binaries only (``pip install --dry-run --only-binary=:all: --python-version X``)
on manylinux x86_64: what a plain ``pip install face3d-live`` would pull on that Python, with no compiler.
Usage: python scripts/check_wheels.py 3.13 3.14   (exit 1 with pip's reason if one does not resolve)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
# glibc 2.17 ... 2.39: Debian 12/13, Ubuntu 22.04-25.04, Fedora 41+
PLATFORMS = ["manylinux2014_x86_64"] + [f"manylinux_2_{v}_x86_64" for v in range(17, 40)]


def runtime_requirements() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["dependencies"]


def resolve(version: str, requirements: list[str]) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory() as target:
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
        cmd += ["--only-binary=:all:", "--python-version", version, "--implementation", "cp"]
        cmd += [arg for p in PLATFORMS for arg in ("--platform", p)]
        cmd += ["--target", target, "--report", "-", *requirements]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return False, (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
    import json

    report = json.loads(proc.stdout)
    picked = sorted(f"{i['metadata']['name']}=={i['metadata']['version']}" for i in report["install"])
    return True, ", ".join(picked)


def main(argv: list[str]) -> int:
    versions = argv or ["3.13", "3.14"]
    requirements = runtime_requirements()
    failed = 0
    for version in versions:
        ok, detail = resolve(version, requirements)
        print(f"CPython {version}: {'OK' if ok else 'FAILED'}: {detail}")
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
