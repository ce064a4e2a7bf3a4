"""Sources and channels: demo, video (incl. corrupt/truncated), images, folder, camera errors."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from face3d_live.capture import open_source
from face3d_live.errors import CaptureError, SourceError
from face3d_live.pipeline.channels import BoundedQueue, Closed, LatestSlot


def test_demo_source_moves_smoothly_and_is_deterministic() -> None:
    a = [f.image for f in open_source("demo", demo_frames=10)]
    b = [f.image for f in open_source("demo", demo_frames=10)]
    assert len(a) == 10 and a[0].shape == (480, 640, 3) and a[0].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    diffs = [np.abs(x.astype(int) - y.astype(int)).mean() for x, y in zip(a, a[1:])]
    assert 0 < max(diffs) < 40


def test_missing_camera_says_what_to_do() -> None:
    with pytest.raises(CaptureError, match="--source"):
        open_source("7")


def test_missing_path_and_non_media_files(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        open_source(tmp_path / "nope.mp4")
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    with pytest.raises(SourceError, match="cannot read .* as video"):
        open_source(text)
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"\x00" * 100)
    with pytest.raises(SourceError, match="not a readable image"):
        open_source(fake)


def test_folder_skips_unreadable_images(tmp_path: Path, astronaut: np.ndarray) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    (tmp_path / "b.jpg").write_bytes(b"garbage")
    cv2.imwrite(str(tmp_path / "c.jpg"), np.zeros((50, 60, 3), np.uint8))
    src = open_source(tmp_path)
    frames = list(src)
    assert [f.frame_id for f in frames] == [0, 2] and src.stats.corrupt == 1
    np.testing.assert_array_equal(frames[0].image, astronaut)


def test_video_reads_every_frame_with_timestamps(video_path) -> None:
    src = open_source(video_path("single_face.mp4"))
    frames = list(src)
    assert len(frames) == 72 and src.stats.corrupt == 0
    assert frames[0].image.shape == (360, 640, 3)
    np.testing.assert_allclose([f.timestamp_s for f in frames[:3]], [0, 1 / src.fps, 2 / src.fps])


def test_corrupt_frame_mid_video_is_skipped_and_counted(video_path, tmp_path: Path) -> None:
    data = bytearray(video_path("single_face.mp4").read_bytes())
    mid = len(data) // 2
    data[mid : mid + 3000] = bytes(3000)  # wipe part of one frame's H.264 data
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    src = open_source(bad)
    frames = list(src)
    assert src.stats.corrupt >= 1 and len(frames) + src.stats.corrupt == 72
    ids = [f.frame_id for f in frames]
    assert ids == sorted(ids) and ids[-1] == 71  # timeline kept, reading went on after the bad frame


def test_truncated_video_is_a_clear_error(video_path, tmp_path: Path) -> None:
    data = video_path("single_face.mp4").read_bytes()
    cut = tmp_path / "truncated.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="truncated"):
        open_source(cut)


def test_latest_slot_keeps_only_the_newest() -> None:
    slot: LatestSlot[int] = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.get(timeout=0.1) == 4 and slot.dropped == 4
    assert slot.get(timeout=0.01) is None
    slot.close()
    with pytest.raises(Closed):
        slot.get()


def test_bounded_queue_applies_backpressure_and_keeps_order() -> None:
    q: BoundedQueue[int] = BoundedQueue(2)
    assert q.put(0) and q.put(1)
    assert not q.put(2, timeout=0.05)  # full: the producer waits
    got: list[int] = []

    def consume() -> None:
        while True:
            try:
                got.append(q.get())
            except Closed:
                return

    t = threading.Thread(target=consume)
    t.start()
    for i in range(2, 50):
        assert q.put(i, timeout=2.0)
    q.close()
    t.join(2.0)
    assert got == list(range(50))


def test_video_rewind_restarts_at_frame_zero(video_path):
    """Looping seeks back instead of reopening the file (no stall at the loop point)."""
    with open_source(video_path("single_face.mp4")) as src:
        first = src.read()
        n = 1 + sum(1 for _ in iter(src.read, None))
        assert src.read() is None
        assert src.rewind()
        again = src.read()
        assert again.frame_id == 0 and np.array_equal(again.image, first.image)
        assert 1 + sum(1 for _ in iter(src.read, None)) == n
