"""Sequence writers: ``open`` / ``write(frame_index, timestamp_s, faces)`` / ``close``.

Every format streams frames into a crash-safe journal (journal.py) as they arrive and builds the
final file from it at ``close``; ``recover(dir)`` builds it from a journal left by a killed process.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from face3d_live.errors import Face3DError, RecordError
from face3d_live.record.config import RecordConfig
from face3d_live.record.exporters import export
from face3d_live.record.journal import FrameJournal, read_journal
from face3d_live.types import Face, Frame

log = logging.getLogger(__name__)

MAX_BAKE_SIZE = 1024  # a face spans a few hundred pixels of video: finer bakes only cost time
POSE_BIN_DEG = 10.0  # head-pose bins (yaw, pitch) for choosing which frames to bake


def default_journal_dir(out: Path) -> Path:
    return out.with_name(out.name + ".journal")


def make_texture_accumulator(size: int, baker: str = "auto"):
    """An accumulator with ``update(image, face)`` / ``texture()`` (RGB uint8) / ``updates`` / ``close()``.

    gl: the render package's TextureAccumulator on its own headless EGL context; cpu: CpuTextureBaker;
    auto: gl when an EGL context can be made, else cpu. Baked at ≤ 1024² (``MAX_BAKE_SIZE``) and scaled
    to the output size on export: finer bakes of a video face only cost time.
    """
    from face3d_live.record.texture import CpuTextureBaker

    size = min(size, MAX_BAKE_SIZE)
    if baker in ("auto", "gl"):
        try:
            return GlTextureAccumulator(size)
        except (Face3DError, ImportError) as exc:
            if baker == "gl":
                raise
            log.info("texture: GL accumulator unavailable (%s); baking on the CPU", exc)
    return CpuTextureBaker(size)


class GlTextureAccumulator:
    """The render package's TextureAccumulator with a private headless context (RGB out)."""

    def __init__(self, size: int) -> None:
        from face3d_live.render import TextureAccumulator, create_context

        self._ctx = create_context()
        try:
            self._acc = TextureAccumulator(self._ctx, size)
        except BaseException:
            self._ctx.release()
            raise
        self.size = size
        self.updates = 0

    def update(self, image_rgb: np.ndarray, face: Face) -> None:
        self._acc.update(image_rgb, face)
        self.updates += 1

    def texture(self) -> np.ndarray:
        return np.ascontiguousarray(self._acc.texture()[..., :3])

    def coverage(self) -> float:
        return self._acc.coverage()

    def close(self) -> None:
        if self._ctx is not None:
            self._acc.close()
            self._ctx.release()
            self._ctx = None


class SequenceWriter:
    """Records a performance to ``out`` in ``config.format`` (glb, obj, npz, livelink-csv).

    ``write`` takes the frame's faces (largest first, as ``Reconstructor.track`` returns them) and journals
    all of them. The single-face formats follow one track: the first face's, switching to the largest face
    when that track is lost; ``rig="arkit"`` and livelink-csv write every track (faces without a track id,
    as from still images, are told apart by their place in the frame). Pass the RGB ``image`` to bake a
    texture (one per track with the rig), or hand a finished texture to ``set_texture``.
    Used as a context manager, an exception inside the block leaves the journal for ``--recover``.
    """

    def __init__(
        self,
        out: Path | str,
        config: RecordConfig = RecordConfig(),
        *,
        journal_dir: Path | str | None = None,
        fps: float | None = None,
        keep_journal: bool = False,
        source: str = "",
    ) -> None:
        self.out = Path(out)
        self.config = config
        self.journal_dir = Path(journal_dir) if journal_dir else default_journal_dir(self.out)
        self.fps = fps
        self.keep_journal = keep_journal
        self.summary: dict | None = None
        self._journal = FrameJournal(
            self.journal_dir,
            {"out": str(self.out.resolve()), "config": config.to_dict(), "fps": fps, "source": source},
        )
        self._track = -2  # no track chosen yet
        self._texture: np.ndarray | None = None
        self._bakers: dict[int | None, object] = {}  # None: the followed face; else one per track (rig)
        self._pose_views: dict[tuple[int | None, int, int], int] = {}
        self._dirty: set[int | None] = set()
        self._last_snapshot = 0.0
        self._state = "new"

    @property
    def frames(self) -> int:
        return self._journal.frames

    def open(self) -> SequenceWriter:
        if self._state == "new":
            parent = self.out.resolve().parent
            if not parent.is_dir():
                raise RecordError(f"cannot write {self.out}: folder {parent} does not exist")
            if self.config.rig == "arkit":  # a missing or damaged rig asset fails now, not after the take
                from face3d_live.avatar.rig import ArkitRig

                ArkitRig.load()
            self._journal.open()
            self._last_snapshot = time.monotonic()
            self._state = "open"
        return self

    def write(
        self, frame_index: int, timestamp_s: float, faces: Sequence[Face], image: np.ndarray | None = None
    ) -> None:
        """Stream one frame to disk now; a frame without faces still counts for the timing."""
        if self._state != "open":
            raise RecordError("the recording is not open (call open() first or use it in a with block)")
        keys = [f.track_id if f.track_id >= 0 else -1 - i for i, f in enumerate(faces)]
        primary = self._pick(faces, keys)
        self._journal.append(frame_index, timestamp_s, faces, keys, primary)
        if (
            image is None
            or not self.config.texture_size
            or primary is None
            or self.config.format == "livelink-csv"
        ):
            return
        if self.config.rig != "none":
            for face, key in zip(faces, keys):
                self._bake(image, face, key)
        elif self._texture is None:
            self._bake(image, faces[primary], None)
        self._snapshot()

    def process(self, frame: Frame) -> Frame:
        """Pipeline stage form of ``write``: records ``frame.faces`` (and bakes from ``frame.image``)."""
        t0 = time.perf_counter_ns()
        self.write(frame.frame_id, frame.timestamp_s, frame.faces, image=frame.image)
        frame.timings_ns["record"] = time.perf_counter_ns() - t0
        return frame

    def set_texture(self, texture: np.ndarray) -> None:
        """Use this texture (HxWx3 RGB or HxWx4 RGBA uint8, e.g. the live app's TextureAccumulator
        output) instead of baking one; it is saved beside the journal at once."""
        tex = np.asarray(texture)
        if (
            tex.ndim != 3
            or tex.shape[2] not in (3, 4)
            or tex.dtype != np.uint8
            or tex.shape[0] != tex.shape[1]
        ):
            raise ValueError(f"expected a square HxWx3 or HxWx4 uint8 texture, got {tex.shape} {tex.dtype}")
        tex = np.ascontiguousarray(tex[..., :3])
        self._texture = tex
        if self._state == "open":
            self._journal.save_texture(tex)

    def close(self) -> dict | None:
        """Finish: build the output from the journal, then remove the journal. Idempotent."""
        if self._state != "open":
            return self.summary
        self._state = "closed"
        try:
            texture = self._current_texture()
            try:  # so that a failed export below can still be recovered with the final textures
                for key, baker in self._bakers.items():
                    if baker.updates and (key is not None or self._texture is None):
                        self._journal.save_texture(baker.texture(), key)
            except RecordError as exc:
                log.warning("%s", exc)
        finally:
            self._close_baker()
            self._journal.close()
        rec = read_journal(self.journal_dir)  # exactly what --recover would see
        if not rec.has_face.any():
            if not self.keep_journal:
                shutil.rmtree(self.journal_dir, ignore_errors=True)
            raise RecordError(f"no face found in any of the {len(rec)} frames; nothing written to {self.out}")
        try:
            self.summary = export(rec, texture, self.out, self.config)
        except Face3DError as exc:  # the frames are safe in the journal: say how to get them back
            raise RecordError(
                f"{exc}; the {len(rec)} recorded frames are kept in {self.journal_dir} "
                f"(face3d-live record --recover {self.journal_dir} --out FILE)"
            ) from None
        if not self.keep_journal:
            shutil.rmtree(self.journal_dir, ignore_errors=True)
        return self.summary

    def abort(self) -> None:
        """Stop without building the output; the journal stays for ``--recover``."""
        if self._state == "open":
            self._state = "closed"
            try:
                self._journal.close()
            except RecordError as exc:  # already failing: say so, keep the first error
                log.warning("%s", exc)
            self._close_baker()
            log.warning("recording stopped; %d frames kept in %s", self.frames, self.journal_dir)

    def __enter__(self) -> SequenceWriter:
        return self.open()

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # ---- internals --------------------------------------------------------------------------------
    def _pick(self, faces: Sequence[Face], keys: Sequence[int]) -> int | None:
        """Index of the face the single-face formats follow (None without faces)."""
        if not faces:
            return None
        if self._track in keys:
            return keys.index(self._track)
        self._track = keys[0]
        return 0

    def _bake(self, image: np.ndarray, face: Face, key: int | None) -> None:
        """Bake this frame into ``key``'s texture (None: the followed face's) when it adds a view."""
        cfg = self.config
        if (self._journal.frames - 1) % cfg.texture_every or not self._new_view(face, key):
            return
        baker = self._bakers.get(key)
        if baker is None:
            baker = self._bakers[key] = make_texture_accumulator(cfg.texture_size, cfg.texture_baker)
        baker.update(image, face)
        self._dirty.add(key)

    def _snapshot(self) -> None:
        now = time.monotonic()
        if self._dirty and now - self._last_snapshot >= self.config.snapshot_every_s:
            for key in self._dirty:
                self._journal.save_texture(self._bakers[key].texture(), key)
            self._last_snapshot = now
            self._dirty.clear()

    def _new_view(self, face: Face, key: int | None) -> bool:
        """Bake at most ``texture_views_per_pose`` frames per head-pose bin: more views of one pose
        only cost time (and blur the average), new poses fill in what earlier ones could not see."""
        limit = self.config.texture_views_per_pose
        if not limit:
            return True
        yaw, pitch, _ = face.pose.euler_degrees()
        bin_key = (key, round(yaw / POSE_BIN_DEG), round(pitch / POSE_BIN_DEG))
        seen = self._pose_views.get(bin_key, 0)
        if seen >= limit:
            return False
        self._pose_views[bin_key] = seen + 1
        return True

    def _close_baker(self) -> None:
        for baker in self._bakers.values():
            baker.close()

    def _current_texture(self) -> np.ndarray | None:
        """The followed face's texture: given, or baked (with the rig: the first track's)."""
        if self._texture is not None:
            return self._texture
        baked = [b for b in self._bakers.values() if b.updates]
        return baked[0].texture() if baked else None


def open_writer(out: Path | str, config: RecordConfig = RecordConfig(), **kwargs) -> SequenceWriter:
    """A writer for ``config.format`` (not yet opened)."""
    return SequenceWriter(out, config, **kwargs)


def recover(directory: Path | str, out: Path | str | None = None, config: RecordConfig | None = None) -> dict:
    """Build the output from a journal left behind (killed process, full disk). The journal is kept."""
    directory = Path(directory)
    rec = read_journal(directory)
    if config is None:
        config = RecordConfig.from_dict(rec.header.get("config", {}))
    if out is None:
        out = rec.header.get("out") or directory.with_suffix("." + config.format)
    if not len(rec):
        raise RecordError(f"{directory} holds no complete frame; nothing to recover")
    log.info("recovering %d frames from %s", len(rec), directory)
    return export(rec, rec.texture, Path(out), config)
