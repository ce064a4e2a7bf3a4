"""Crash-safe frame journal: a recording streams here first, the exporters read it back.

A journal is a directory:

    header.json   written once at open (atomically: temp file + rename)
    frames.bin    append-only fixed-size records, one per frame, each ending in a CRC-32
    texture.npy   the texture so far, replaced atomically every few seconds (optional)

Every record is handed to the kernel with one ``write`` as soon as the frame arrives, so a process
killed with SIGKILL loses at most the frame in flight: a torn last record fails its length or CRC
check and is dropped on reading. (Power loss is another matter: ``fsync`` happens at close only.)
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from face3d_live.errors import RecordError
from face3d_live.geometry.mesh import NUM_VERTICES

log = logging.getLogger(__name__)

JOURNAL_FORMAT = "face3d-live-journal"
JOURNAL_VERSION = 1
HEADER = "header.json"
FRAMES = "frames.bin"
TEXTURE = "texture.npy"
MAGIC = 0x52443346  # b"F3DR" little endian
FLAG_FACE = 1

RECORD = np.dtype(
    [
        ("magic", "<u4"),
        ("flags", "<u4"),
        ("frame_index", "<i8"),
        ("timestamp", "<f8"),
        ("rotation", "<f8", (3, 3)),
        ("translation", "<f8", (3,)),
        ("scale", "<f8"),
        ("score", "<f4"),
        ("track_id", "<i4"),
        ("vertices", "<f4", (NUM_VERTICES, 3)),
        ("landmarks68", "<f4", (68, 3)),
        ("crc", "<u4"),
    ]
)


def os_error(exc: OSError, path: Path | str, action: str, journal: Path | None = None) -> RecordError:
    """One-line RecordError for an OSError, saying what to do about it."""
    keep = f"; the frames recorded so far are kept in {journal} (recover: face3d-live record --recover {journal})"
    keep = keep if journal is not None and journal.exists() else ""
    if exc.errno == errno.ENOSPC:
        return RecordError(f"disk full while {action} {path}: free some space or write elsewhere{keep}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return RecordError(f"cannot {action} {path}: permission denied; choose a writable location{keep}")
    if exc.errno == errno.EROFS:
        return RecordError(f"cannot {action} {path}: read-only file system; choose a writable location{keep}")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return RecordError(f"cannot {action} {path}: its folder does not exist{keep}")
    return RecordError(f"cannot {action} {path}: {exc.strerror or exc}{keep}")


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def atomic_write(path: Path, data: bytes | memoryview, journal: Path | None = None) -> None:
    """Write ``path`` so that it is either the old or the complete new file, never a torn one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise os_error(exc, path, "write", journal) from None


def _crc(record: np.ndarray) -> int:
    return zlib.crc32(record.tobytes()[: RECORD.itemsize - 4])


class FrameJournal:
    """Append-only writer of one recording's frames (``open`` / ``append`` / ``close``)."""

    def __init__(self, directory: Path | str, meta: dict | None = None) -> None:
        self.directory = Path(directory)
        self.meta = dict(meta or {})
        self.frames = 0
        self._fd: int | None = None
        self._last_t = -np.inf
        self._record = np.zeros(1, RECORD)

    def open(self) -> FrameJournal:
        if self._fd is not None:
            return self
        d = self.directory
        frames = d / FRAMES
        if frames.is_file() and frames.stat().st_size > 0:
            raise RecordError(
                f"{d} already holds a recording; recover it (face3d-live record --recover {d}) or remove it"
            )
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, d, "create the journal folder") from None
        header = {
            "format": JOURNAL_FORMAT,
            "version": JOURNAL_VERSION,
            "record_size": RECORD.itemsize,
            "num_vertices": NUM_VERTICES,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **self.meta,
        }
        atomic_write(d / HEADER, json.dumps(header, indent=1).encode())
        try:
            self._fd = os.open(d / FRAMES, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise os_error(exc, d / FRAMES, "create") from None
        log.info("recording journal: %s", d)
        return self

    def append(
        self,
        frame_index: int,
        timestamp_s: float,
        vertices: np.ndarray | None,
        landmarks68: np.ndarray | None = None,
        rotation: np.ndarray | None = None,
        translation: np.ndarray | None = None,
        scale: float = 0.0,
        score: float = 0.0,
        track_id: int = -1,
    ) -> None:
        """One frame; ``vertices=None`` records a frame without a face (it still counts for time)."""
        if self._fd is None:
            raise RecordError("the recording is not open (call open() first or use it in a with block)")
        t = float(timestamp_s)
        if not np.isfinite(t) or t <= self._last_t:
            raise RecordError(f"frame {frame_index}: timestamp {t} s must be finite and increase")
        r = self._record
        r[0] = 0
        r["magic"], r["frame_index"], r["timestamp"] = MAGIC, frame_index, t
        if vertices is not None:
            r["flags"] = FLAG_FACE
            r["vertices"][0] = vertices
            r["landmarks68"][0] = landmarks68
            r["rotation"][0] = rotation
            r["translation"][0] = translation
            r["scale"], r["score"], r["track_id"] = scale, score, track_id
        r["crc"] = _crc(r)
        try:
            write_all(self._fd, r.tobytes())
        except OSError as exc:
            raise os_error(exc, self.directory / FRAMES, "write", self.directory) from None
        self._last_t = t
        self.frames += 1

    def save_texture(self, texture: np.ndarray) -> None:
        """Replace the texture snapshot (HxWx3 uint8) atomically."""
        import io

        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(texture, np.uint8))
        atomic_write(self.directory / TEXTURE, buf.getbuffer(), self.directory)

    def close(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: a file that cannot be synced (a device, a pipe)
                raise os_error(exc, self.directory / FRAMES, "write", self.directory) from None
        finally:
            os.close(fd)

    def __enter__(self) -> FrameJournal:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Recording:
    """Frames read back from a journal; arrays are indexed by recorded frame (F of them).

    frame_index (F,) int64; timestamps (F,) float64 seconds, increasing; has_face (F,) bool;
    vertices (F, 468, 3) float32 image px (+z away); landmarks68 (F, 68, 3) float32;
    rotation (F, 3, 3), translation (F, 3) float64, scale (F,) float64 (Face.pose);
    score (F,) float32; track_id (F,) int32. Frames without a face hold zeros.
    header: the journal's header.json; texture: HxWx3 uint8 snapshot or None.
    """

    frame_index: np.ndarray
    timestamps: np.ndarray
    has_face: np.ndarray
    vertices: np.ndarray
    landmarks68: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    scale: np.ndarray
    score: np.ndarray
    track_id: np.ndarray
    header: dict
    texture: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def frame_duration(self) -> float:
        """Seconds one frame lasts: from the header's fps, else the median timestamp step."""
        fps = self.header.get("fps")
        if fps:
            return 1.0 / float(fps)
        if len(self.timestamps) > 1:
            return float(np.median(np.diff(self.timestamps)))
        return 1.0 / 30.0

    @property
    def duration(self) -> float:
        """Seconds from the first frame's timestamp to the end of the last frame."""
        if not len(self):
            return 0.0
        return float(self.timestamps[-1] - self.timestamps[0] + self.frame_duration)


def read_journal(directory: Path | str) -> Recording:
    """Read every complete, intact record of a journal (a torn or corrupt tail is dropped)."""
    d = Path(directory)
    try:
        header = json.loads((d / HEADER).read_text())
    except FileNotFoundError:
        raise RecordError(f"{d} is not a recording journal (no {HEADER})") from None
    except (OSError, ValueError) as exc:
        raise RecordError(f"cannot read {d / HEADER}: {exc}") from None
    if header.get("format") != JOURNAL_FORMAT or header.get("record_size") != RECORD.itemsize:
        raise RecordError(f"{d / HEADER} is not a version-{JOURNAL_VERSION} {JOURNAL_FORMAT} header")
    try:
        data = (d / FRAMES).read_bytes()
    except FileNotFoundError:
        data = b""
    except OSError as exc:
        raise os_error(exc, d / FRAMES, "read") from None
    n = len(data) // RECORD.itemsize
    recs = np.frombuffer(data, RECORD, count=n)
    good = 0
    for rec in recs:  # stop at the first bad record: everything after it is suspect
        if rec["magic"] != MAGIC or _crc(rec) != rec["crc"]:
            break
        good += 1
    if good < n or len(data) % RECORD.itemsize:
        log.warning("journal %s: kept %d frames, dropped a torn/corrupt tail", d, good)
    recs = recs[:good]
    if good > 1 and np.any(np.diff(recs["timestamp"]) <= 0):
        raise RecordError(f"{d / FRAMES}: timestamps do not increase; the journal is damaged")
    texture = None
    if (d / TEXTURE).exists():
        try:
            texture = np.load(d / TEXTURE)
        except (OSError, ValueError) as exc:
            log.warning("journal %s: texture snapshot unreadable (%s); recording without it", d, exc)
    return Recording(
        frame_index=recs["frame_index"].copy(),
        timestamps=recs["timestamp"].copy(),
        has_face=(recs["flags"] & FLAG_FACE).astype(bool),
        vertices=recs["vertices"].copy(),
        landmarks68=recs["landmarks68"].copy(),
        rotation=recs["rotation"].copy(),
        translation=recs["translation"].copy(),
        scale=recs["scale"].copy(),
        score=recs["score"].copy(),
        track_id=recs["track_id"].copy(),
        header=header,
        texture=texture,
    )
