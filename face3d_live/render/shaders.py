"""GLSL programs loaded by name from ``shaders/<name>.glsl``.

One file per program, with ``#if defined VERTEX_SHADER`` / ``#elif defined FRAGMENT_SHADER`` sections
(the moderngl-window single-file layout), or one ``#if defined COMPUTE_SHADER`` section (GL 4.3+, a
moderngl.ComputeShader). The file's first line is its ``#version``; we insert the stage
define after it followed by ``#line 2`` so the compiler's line numbers are the file's line numbers.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from face3d_live.errors import Face3DError

log = logging.getLogger(__name__)

#: the repository's shader folder; ``FACE3D_SHADERS`` (os.pathsep-separated) is searched first
SHADER_DIR = Path(__file__).resolve().parents[2] / "shaders"

STAGES = ("VERTEX_SHADER", "GEOMETRY_SHADER", "FRAGMENT_SHADER", "COMPUTE_SHADER")
_KWARG = {
    "VERTEX_SHADER": "vertex_shader",
    "GEOMETRY_SHADER": "geometry_shader",
    "FRAGMENT_SHADER": "fragment_shader",
    "COMPUTE_SHADER": "compute_shader",
}
_STAGE_TITLE = {
    "vertex_shader": "VERTEX_SHADER",
    "geometry_shader": "GEOMETRY_SHADER",
    "fragment_shader": "FRAGMENT_SHADER",
    "compute_shader": "COMPUTE_SHADER",
}
# Mesa "0:12(5): error: ...", NVIDIA "0(12) : error C0000: ...", ANGLE/others "ERROR: 0:12: ..."
_LINE_RE = re.compile(r"^\s*(?:ERROR:\s*)?\d+[:(](\d+)[):(]")


class ShaderError(Face3DError):
    """A shader file is missing, or failed to compile or link. ``path``, ``line`` (1-based, or None), ``stage``."""

    def __init__(self, message: str, path: Path | None = None, line: int | None = None, stage: str = ""):
        super().__init__(message)
        self.path, self.line, self.stage = path, line, stage


def shader_dirs(extra: list[Path] | tuple[Path, ...] = ()) -> list[Path]:
    env = [Path(p) for p in os.environ.get("FACE3D_SHADERS", "").split(os.pathsep) if p]
    return [*map(Path, extra), *env, SHADER_DIR]


def find_shader(name: str, dirs: list[Path]) -> Path:
    for d in dirs:
        path = d / f"{name}.glsl"
        if path.is_file():
            return path
    searched = ", ".join(str(d) for d in dirs)
    raise ShaderError(f"shader {name!r} not found (looked for {name}.glsl in {searched})")


def stage_sources(path: Path) -> dict[str, str]:
    """Split one single-file program into ``{moderngl kwarg: source}`` for the stages it defines."""
    text = path.read_text()
    lines = text.splitlines()
    if not lines or not lines[0].lstrip().startswith("#version"):
        raise ShaderError(f"{path}:1: the first line must be the #version directive", path, 1)
    head, body = lines[0], "\n".join(lines[1:])
    out = {}
    for stage in STAGES:
        if f"defined {stage}" in text:
            out[_KWARG[stage]] = f"{head}\n#define {stage} 1\n#line 2\n{body}\n"
    if "vertex_shader" not in out and "compute_shader" not in out:
        raise ShaderError(f"{path}: no '#if defined VERTEX_SHADER' (or COMPUTE_SHADER) section", path)
    return out


def compile_program(ctx, path: Path):
    """Compile and link ``path``; errors become ShaderError naming the file, stage and line."""
    import moderngl

    sources = stage_sources(path)
    try:
        if "compute_shader" in sources:
            return ctx.compute_shader(sources["compute_shader"])
        return ctx.program(**sources)
    except moderngl.Error as exc:
        raise _shader_error(path, str(exc)) from None


def _shader_error(path: Path, log_text: str) -> ShaderError:
    stage = ""
    for raw in log_text.splitlines():
        line = raw.strip()
        if line in _STAGE_TITLE:
            stage = _STAGE_TITLE[line]
            continue
        m = _LINE_RE.match(line)
        if m:
            lineno = int(m.group(1))
            msg = line[m.end() :].lstrip(": ")
            return ShaderError(f"{path}:{lineno}: {stage.lower() or 'shader'}: {msg}", path, lineno, stage)
    first = next(
        (ln.strip() for ln in log_text.splitlines() if ln.strip() and "failed" not in ln), log_text.strip()
    )
    kind = "link" if "Linker" in log_text else "compile"
    return ShaderError(f"{path}: {kind} error: {first}", path, None, stage)


def set_uniform(prog, name: str, value) -> None:
    """Set a uniform if the program kept it (GLSL compilers drop unused ones); bytes are written raw."""
    u = prog.get(name, None)
    if u is None:
        return
    if isinstance(value, bytes):
        u.write(value)
    else:
        u.value = value


class ShaderLibrary:
    """Compiles each named program once per context; ``reload()`` recompiles all (dev hot-reload).

    The library owns the programs it compiled: ``close()`` releases them (idempotent).
    """

    def __init__(self, ctx, dirs: list[Path] | tuple[Path, ...] = ()) -> None:
        self.ctx = ctx
        self.dirs = shader_dirs(dirs)
        self._programs: dict[str, object] = {}
        self.generation = 0  # bumped by reload(): vertex arrays made for the old programs are stale

    def program(self, name: str):
        prog = self._programs.get(name)
        if prog is None:
            path = find_shader(name, self.dirs)
            prog = compile_program(self.ctx, path)
            self._programs[name] = prog
            log.debug("compiled shader %s", path)
        return prog

    def reload(self) -> None:
        """Recompile every program; on an error the old programs stay in place and the error is raised."""
        fresh = {}
        try:
            for name in self._programs:
                fresh[name] = compile_program(self.ctx, find_shader(name, self.dirs))
        except ShaderError:
            for p in fresh.values():
                p.release()
            raise
        for p in self._programs.values():
            p.release()
        self._programs = fresh
        self.generation += 1

    def close(self) -> None:
        for p in self._programs.values():
            p.release()
        self._programs.clear()

    def __enter__(self) -> ShaderLibrary:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
