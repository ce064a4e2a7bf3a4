"""A job's INPUTS → work items: videos, photo sets (an image file, a folder of images), list files, globs.

- a video file                  → one video item
- an image file                 → one photo item (one photo)
- a folder of images            → one photo item (its images in name order, as ``ImageFolderSource``)
- a folder of videos (no image) → one video item per video in it (a library folder)
- a list file (.txt .lst .list) → each non-empty line that is not a ``#`` comment, relative to the file
- a pattern with ``* ? [``      → every match (``**`` recurses), in name order

Anything else (a missing path, a camera index, ``demo``) is a ``BadInput`` with the reason: the job
reports it and goes on with the rest. Each item gets an output folder name under ``--out``: the file or
folder name without suffix, with a short hash of its path when two inputs would share a name.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from face3d_live.capture.images import IMAGE_SUFFIXES

LIST_SUFFIXES = {".txt", ".lst", ".list"}
GLOB_CHARS = set("*?[")
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class InputItem:
    """One input of a job. kind: "video" or "photos"; files: the photos (name order) of a photo item."""

    spec: str
    path: Path
    kind: str
    name: str = ""
    files: tuple[Path, ...] = ()

    @property
    def still(self) -> bool:
        return self.kind == "photos"


@dataclass(frozen=True)
class BadInput:
    spec: str
    reason: str


def expand_inputs(specs: Sequence[str]) -> tuple[list[InputItem], list[BadInput]]:
    """Expand INPUTS in order; the same path given twice is kept once."""
    items: list[InputItem] = []
    bad: list[BadInput] = []
    seen: set[Path] = set()
    for spec in specs:
        for entry in _expand(str(spec), set()):
            if isinstance(entry, BadInput):
                bad.append(entry)
            elif entry.path not in seen:
                seen.add(entry.path)
                items.append(entry)
    return _named(items), bad


def _expand(spec: str, lists: set[Path]) -> Iterable[InputItem | BadInput]:
    text = spec.strip()
    if text == "demo" or text.isdigit():
        yield BadInput(spec, "camera and demo sources are live streams: run them without --ray")
        return
    path = Path(text).expanduser()
    if not path.exists() and GLOB_CHARS & set(text):
        matches = sorted(glob.glob(str(path), recursive=True))
        if not matches:
            yield BadInput(spec, f"no file matches the pattern {text}")
        for m in matches:
            yield from _expand(m, lists)
        return
    if not path.exists():
        yield BadInput(spec, f"no such file or folder: {path}")
        return
    path = Path(os.path.abspath(path))  # absolute, links kept: a linked copy is an input of its own
    if path.is_dir():
        images = _images_in(path)
        if images:
            yield InputItem(spec, path, "photos", files=images)
            return
        videos = sorted(p for p in path.iterdir() if p.is_file() and _looks_like_video(p))
        if not videos:
            yield BadInput(spec, f"{path} holds no image or video files")
        for v in videos:
            yield InputItem(str(v), v, "video")
        return
    suffix = path.suffix.lower()
    if suffix in LIST_SUFFIXES:
        if path in lists:
            yield BadInput(spec, f"list file {path} includes itself")
            return
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            yield BadInput(spec, f"cannot read list file {path}: {exc}")
            return
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                entry = line if Path(line).expanduser().is_absolute() else str(path.parent / line)
                yield from _expand(entry, lists | {path})
        return
    if suffix in IMAGE_SUFFIXES:
        yield InputItem(spec, path, "photos", files=(path,))
        return
    yield InputItem(spec, path, "video")


def _images_in(folder: Path) -> tuple[Path, ...]:
    """As ``ImageFolderSource``: image suffixes, sorted by name."""
    return tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))


def _looks_like_video(p: Path) -> bool:
    s = p.suffix.lower()
    return bool(s) and s not in IMAGE_SUFFIXES and s not in LIST_SUFFIXES and not p.name.startswith(".")


def _named(items: list[InputItem]) -> list[InputItem]:
    """Give each item its output folder name; names shared by several inputs get a path hash."""
    base = [(i.path.stem if i.path.is_file() else i.path.name) or "input" for i in items]
    counts = Counter(base)
    out = []
    for item, name in zip(items, base):
        if counts[name] > 1:
            name = f"{name}-{hashlib.sha1(str(item.path).encode()).hexdigest()[:8]}"
        out.append(InputItem(item.spec, item.path, item.kind, name, item.files))
    return out


# ---- content hashes and resume keys ----------------------------------------------------------------
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def content_hash(item: InputItem) -> str:
    """sha256 of a video's bytes; of a photo set: of its files' names and contents, in order."""
    if item.kind == "video":
        return file_sha256(item.path)
    h = hashlib.sha256()
    for f in item.files:
        h.update(f.name.encode() + b"\0")
        h.update(bytes.fromhex(file_sha256(f)) if f.is_file() else b"missing")
    return h.hexdigest()


def content_hashes(items: Sequence[InputItem], threads: int = 4) -> list[str | None]:
    """Hashes in parallel (hashlib releases the GIL); None for an input that cannot be read."""

    def one(item: InputItem) -> str | None:
        try:
            return content_hash(item)
        except OSError:
            return None

    with ThreadPoolExecutor(max(1, threads)) as pool:
        return list(pool.map(one, items))


def job_key(content: str, options: dict) -> str:
    """What decides whether an input's outputs are current: its content and the output options."""
    from face3d_live import __version__

    blob = json.dumps({"content": content, "options": options, "version": __version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()
