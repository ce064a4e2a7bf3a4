"""Crash-safe frame journal: a recording streams here first, the exporters read it back.

A journal is a directory:

    header.json   written once at open (atomically: temp file + rename)
    frames.bin    append-only fixed-size records, one per face and frame (one empty record for a frame
                  without faces), each ending in a CRC-32
    texture.npy   the followed face's texture so far, replaced atomically every few seconds (optional)
    texture-track<K>.npy  the texture of track K (``--rig arkit`` records every face)

A frame's records are handed to the kernel with one ``write`` as soon as the frame arrives, so a process
killed with SIGKILL loses at most the frame in flight: a torn last record fails its length or CRC
check, and a frame missing some of its records is dropped on reading. (Power loss is another matter:
``fsync`` happens at close only.) Each record says how many faces its frame has and which one it is,
and flags the face the single-face formats follow (``FLAG_PRIMARY``). Version-1 journals (one record
per frame, no blendshapes) are still read.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from face3d_live.errors import RecordError
from face3d_live.geometry.mesh import NUM_VERTICES
from face3d_live.types import Face

log = logging.getLogger(__name__)

JOURNAL_FORMAT = "face3d-live-journal"
JOURNAL_VERSION = 2
HEADER = "header.json"
FRAMES = "frames.bin"
TEXTURE = "texture.npy"
MAGIC = 0x52443346  # b"F3DR" little endian
FLAG_FACE = 1
FLAG_PRIMARY = 2  # the face the single-face formats follow
FLAG_BLENDSHAPES, FLAG_IRIS, FLAG_GAZE = 4, 8, 16  # the Face had these (else they are zeros)
N_BLENDSHAPES = 52

_COMMON = [
    ("rotation", "<f8", (3, 3)),
    ("translation", "<f8", (3,)),
    ("scale", "<f8"),
    ("score", "<f4"),
    ("track_id", "<i4"),
    ("vertices", "<f4", (NUM_VERTICES, 3)),
    ("landmarks68", "<f4", (68, 3)),
]
RECORD_V1 = np.dtype(
    [
        ("magic", "<u4"),
        ("flags", "<u4"),
        ("frame_index", "<i8"),
        ("timestamp", "<f8"),
        *_COMMON,
        ("crc", "<u4"),
    ]
)
RECORD = np.dtype(
    [
        ("magic", "<u4"),
        ("flags", "<u4"),
        ("frame_index", "<i8"),
        ("timestamp", "<f8"),
        ("faces", "<u2"),  # records in this frame (1 for a frame without faces)
        ("slot", "<u2"),  # this record's place among them
        ("pad", "<u4"),
        *_COMMON,
        ("blendshapes", "<f4", (N_BLENDSHAPES,)),
        ("iris", "<f4", (10, 3)),
        ("gaze", "<f4", (2, 2)),
        ("crc", "<u4"),
    ]
)
RECORDS = {1: RECORD_V1, 2: RECORD}


def texture_name(track: int | None = None) -> str:
    """The journal's texture file: the followed face's (None) or one track's."""
    return TEXTURE if track is None else f"texture-track{int(track)}.npy"


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
    return zlib.crc32(record.tobytes()[:-4])  # everything but the CRC field itself (the last 4 bytes)


class FrameJournal:
    """Append-only writer of one recording's frames (``open`` / ``append`` / ``close``)."""

    def __init__(self, directory: Path | str, meta: dict | None = None) -> None:
        self.directory = Path(directory)
        self.meta = dict(meta or {})
        self.frames = 0
        self._fd: int | None = None
        self._last_t = -np.inf

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
        faces: Sequence[Face] = (),
        keys: Sequence[int] | None = None,
        primary: int | None = 0,
    ) -> None:
        """One frame: a record per face (``keys``: each face's track key, default ``track_id``; ``primary``:
        the index of the face the single-face formats follow, or None), one empty record without faces."""
        if self._fd is None:
            raise RecordError("the recording is not open (call open() first or use it in a with block)")
        t = float(timestamp_s)
        if not np.isfinite(t) or t <= self._last_t:
            raise RecordError(f"frame {frame_index}: timestamp {t} s must be finite and increase")
        n = max(len(faces), 1)
        r = np.zeros(n, RECORD)
        r["magic"], r["frame_index"], r["timestamp"] = MAGIC, frame_index, t
        r["faces"], r["slot"] = n, np.arange(n)
        for k, face in enumerate(faces):
            flags = FLAG_FACE | (FLAG_PRIMARY if k == primary else 0)
            p = face.pose
            r["vertices"][k], r["landmarks68"][k] = face.vertices, face.landmarks68
            r["rotation"][k], r["translation"][k], r["scale"][k] = p.rotation, p.translation, p.scale
            r["score"][k] = face.score
            r["track_id"][k] = face.track_id if keys is None else keys[k]
            for flag, name, value in (
                (FLAG_BLENDSHAPES, "blendshapes", face.blendshapes),
                (FLAG_IRIS, "iris", face.iris),
                (FLAG_GAZE, "gaze", face.gaze),
            ):
                if value is not None:
                    r[name][k] = value
                    flags |= flag
            r["flags"][k] = flags
        rows = r.view(np.uint8).reshape(n, RECORD.itemsize)
        for k in range(n):
            r["crc"][k] = zlib.crc32(rows[k, :-4])  # as ``_crc``, without copying the record
        try:
            write_all(self._fd, r.tobytes())
        except OSError as exc:
            raise os_error(exc, self.directory / FRAMES, "write", self.directory) from None
        self._last_t = t
        self.frames += 1

    def save_texture(self, texture: np.ndarray, track: int | None = None) -> None:
        """Replace the texture snapshot (HxWx3 uint8) atomically: the followed face's, or ``track``'s."""
        import io

        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(texture, np.uint8))
        atomic_write(self.directory / texture_name(track), buf.getbuffer(), self.directory)

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
    """Frames read back from a journal; arrays are indexed by recorded frame (F of them) and hold one face
    per frame: the followed one (``FLAG_PRIMARY``), or one track's (``track(key)``).

    frame_index (F,) int64; timestamps (F,) float64 seconds, increasing; has_face (F,) bool;
    vertices (F, 468, 3) float32 image px (+z away); landmarks68 (F, 68, 3) float32;
    rotation (F, 3, 3), translation (F, 3) float64, scale (F,) float64 (Face.pose);
    score (F,) float32; track_id (F,) int32; blendshapes (F, 52) float32 ARKit order, iris (F, 10, 3),
    gaze (F, 2, 2) float32 (zeros where the face had none: ``flags``). Frames without a face hold zeros.
    header: the journal's header.json; texture: HxWx3 uint8 snapshot or None; track_textures: track → texture.
    records: every face record of the journal (``RECORD``), record_frame: the frame each belongs to.
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
    blendshapes: np.ndarray
    iris: np.ndarray
    gaze: np.ndarray
    flags: np.ndarray
    records: np.ndarray
    record_frame: np.ndarray
    header: dict
    texture: np.ndarray | None = None
    track_textures: dict[int, np.ndarray] = field(default_factory=dict)

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

    def track_keys(self, min_frames: int = 1) -> list[int]:
        """Tracks with a face in at least ``min_frames`` frames, in order of first appearance."""
        recs = self.records[(self.records["flags"] & FLAG_FACE) > 0]
        keys, first, counts = np.unique(recs["track_id"], return_index=True, return_counts=True)
        order = np.argsort(first, kind="stable")
        return [int(keys[i]) for i in order if counts[i] >= min_frames]

    def track(self, key: int) -> Recording:
        """The same frames showing track ``key``'s face (``has_face`` where the track was seen)."""
        sel = ((self.records["flags"] & FLAG_FACE) > 0) & (self.records["track_id"] == key)
        columns = _face_columns(self.records[sel], self.record_frame[sel], len(self))
        return replace(self, texture=self.track_textures.get(key), **columns)


def _face_columns(recs: np.ndarray, frame_of: np.ndarray, n_frames: int) -> dict[str, np.ndarray]:
    """Per-frame arrays (Recording's face fields) holding ``recs`` (at most one per frame) at ``frame_of``."""
    out = {}
    for name, dtype in (
        ("vertices", np.float32), ("landmarks68", np.float32), ("rotation", np.float64),
        ("translation", np.float64), ("scale", np.float64), ("score", np.float32), ("track_id", np.int32),
        ("blendshapes", np.float32), ("iris", np.float32), ("gaze", np.float32), ("flags", np.uint32),
    ):  # fmt: skip
        column = np.zeros((n_frames, *recs.dtype[name].shape), dtype)
        column[frame_of] = recs[name]
        out[name] = column
    out["has_face"] = (out["flags"] & FLAG_FACE) > 0
    return out


def _intact(recs: np.ndarray, version: int) -> int:
    """How many leading records are intact and form whole frames (a torn or corrupt tail is dropped)."""
    good = 0
    for rec in recs:  # stop at the first bad record: everything after it is suspect
        if rec["magic"] != MAGIC or _crc(rec) != rec["crc"]:
            break
        good += 1
    if version == 1 or not good:
        return good
    # whole frames only: each frame's records carry slots 0 .. faces-1 in order
    start = 0
    while start < good:
        n = int(recs["faces"][start])
        stop = start + n
        if n < 1 or stop > good or not np.array_equal(recs["slot"][start:stop], np.arange(n)):
            break
        if not (recs["frame_index"][start:stop] == recs["frame_index"][start]).all():
            break
        start = stop
    return start


def read_journal(directory: Path | str) -> Recording:
    """Read every complete, intact frame of a journal (a torn or corrupt tail is dropped)."""
    d = Path(directory)
    try:
        header = json.loads((d / HEADER).read_text())
    except FileNotFoundError:
        raise RecordError(f"{d} is not a recording journal (no {HEADER})") from None
    except (OSError, ValueError) as exc:
        raise RecordError(f"cannot read {d / HEADER}: {exc}") from None
    version = header.get("version")
    dtype = RECORDS.get(version)
    if header.get("format") != JOURNAL_FORMAT or dtype is None or header.get("record_size") != dtype.itemsize:
        raise RecordError(f"{d / HEADER} is not a version-{JOURNAL_VERSION} {JOURNAL_FORMAT} header")
    try:
        data = (d / FRAMES).read_bytes()
    except FileNotFoundError:
        data = b""
    except OSError as exc:
        raise os_error(exc, d / FRAMES, "read") from None
    n = len(data) // dtype.itemsize
    recs = np.frombuffer(data, dtype, count=n)
    good = _intact(recs, version)
    if good < n or len(data) % dtype.itemsize:
        log.warning("journal %s: kept %d records, dropped a torn/corrupt tail", d, good)
    recs = recs[:good].copy()
    first = np.ones(good, bool) if version == 1 else recs["slot"] == 0
    record_frame = np.cumsum(first) - 1
    stamps = recs["timestamp"][first]
    if len(stamps) > 1 and np.any(np.diff(stamps) <= 0):
        raise RecordError(f"{d / FRAMES}: timestamps do not increase; the journal is damaged")
    textures = {}
    for path in sorted(d.glob("texture*.npy")):
        try:
            textures[path.name] = np.load(path)
        except (OSError, ValueError) as exc:
            log.warning("journal %s: texture %s unreadable (%s); recording without it", d, path.name, exc)
    if version == 1:  # one face per frame: the one recorded is the one followed
        recs = _v1_as_v2(recs)
    primary = (recs["flags"] & FLAG_PRIMARY) > 0
    return Recording(
        frame_index=recs["frame_index"][first].copy(),
        timestamps=stamps.copy(),
        header=header,
        texture=textures.pop(TEXTURE, None),
        records=recs,
        record_frame=record_frame,
        track_textures={
            int(name[len("texture-track") : -len(".npy")]): tex
            for name, tex in textures.items()
            if name.startswith("texture-track")
        },
        **_face_columns(recs[primary], record_frame[primary], len(stamps)),
    )


def _v1_as_v2(recs: np.ndarray) -> np.ndarray:
    out = np.zeros(len(recs), RECORD)
    for name in RECORD_V1.names:
        out[name] = recs[name]
    out["faces"] = 1
    out["flags"] |= np.where((recs["flags"] & FLAG_FACE) > 0, FLAG_PRIMARY, 0).astype(np.uint32)
    return out
