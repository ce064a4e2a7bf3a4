"""Streaming to avatar apps, checked with receivers the project did not write: python-osc's UDP server,
vmcp (osc4py3), pylivelinkface, and a Live Link decoder written here from the published packet layout."""

from __future__ import annotations

import dataclasses
import math
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import ThreadingOSCUDPServer

from face3d_live.errors import ConfigError
from face3d_live.expression.arkit import ARKIT_BLENDSHAPES, ARKIT_INDEX
from face3d_live.stream import LIVELINK_CURVES, FaceStreamer, LiveLinkCsvWriter, livelink_values
from face3d_live.stream.livelink import timecode
from face3d_live.stream.vmc import VmcEncoder

CLIP_FRAMES = 40


# ---------------------------------------------------------------- shared reconstructions (one model)


@pytest.fixture(scope="module")
def rec():
    from face3d_live import Reconstructor
    from face3d_live.models.registry import default_model

    with Reconstructor(default_model(), "auto") as r:
        yield r


def _track(rec, path: Path, limit: int | None) -> list[tuple[float, list]]:
    from face3d_live.capture import open_source

    rec.reset()
    out = []
    with open_source(path) as src:
        for frame in src:
            if limit is not None and len(out) >= limit:
                break
            out.append((frame.timestamp_s, rec.track(frame.image, frame.timestamp_s)))
    return out


@pytest.fixture(scope="module")
def clip(rec, video_path) -> list[tuple[float, list]]:
    """(timestamp, faces) of the first frames of single_face.mp4 (mouth opens and closes)."""
    frames = _track(rec, video_path("single_face.mp4"), CLIP_FRAMES)
    assert sum(bool(f) for _, f in frames) == len(frames)
    return frames


@pytest.fixture(scope="module")
def turning(rec, video_path) -> list[tuple[float, list]]:
    """obama.mp4: the head turns about ±30° left and right."""
    return [(t, f) for t, f in _track(rec, video_path("obama.mp4"), None) if f]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- VMC through python-osc's server


class OscFrames:
    """A python-osc ThreadingOSCUDPServer collecting messages; /VMC/Ext/T closes a frame."""

    def __init__(self) -> None:
        self.frames: list[list[tuple]] = []
        self._current: list[tuple] = []
        self._cond = threading.Condition()
        d = Dispatcher()
        d.set_default_handler(self._on)
        self.server = ThreadingOSCUDPServer(("127.0.0.1", 0), d)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _on(self, address: str, *args) -> None:
        with self._cond:
            self._current.append((address, *args))
            if address == "/VMC/Ext/T":
                self.frames.append(self._current)
                self._current = []
                self._cond.notify_all()

    def wait(self, n: int, timeout: float = 5.0) -> list[list[tuple]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.frames) >= n, timeout), (len(self.frames), n)
            return list(self.frames)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def osc_server():
    s = OscFrames()
    yield s
    s.close()


def test_vmc_stream_of_a_real_clip_through_python_osc(clip, osc_server) -> None:
    with FaceStreamer(vmc=osc_server.address) as streamer:
        for i, (t, faces) in enumerate(clip):
            streamer.send(faces, t)
            osc_server.wait(i + 1)  # frame by frame: the threading server may interleave bundles otherwise
        assert streamer.stats["errors"] == 0 and streamer.stats["dropped"] == 0
        assert streamer.stats["packets_sent"] == len(clip)  # one bundle per frame
    frames = osc_server.wait(len(clip))
    for (t, faces), msgs in zip(clip, frames):
        addresses = [m[0] for m in msgs]
        vals = {m[1]: m[2] for m in msgs if m[0] == "/VMC/Ext/Blend/Val"}
        assert addresses.count("/VMC/Ext/Blend/Val") == 52 and set(vals) == set(ARKIT_BLENDSHAPES)
        last_val = max(i for i, a in enumerate(addresses) if a == "/VMC/Ext/Blend/Val")
        assert addresses.index("/VMC/Ext/Blend/Apply") > last_val
        bones = {m[1]: m[2:] for m in msgs if m[0] == "/VMC/Ext/Bone/Pos"}
        assert set(bones) == {"Head", "LeftEye", "RightEye"}
        for args in bones.values():
            assert len(args) == 7 and abs(np.linalg.norm(args[3:]) - 1.0) < 1e-5
        root = next(m for m in msgs if m[0] == "/VMC/Ext/Root/Pos")
        assert root[1:] == ("root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
        assert next(m for m in msgs if m[0] == "/VMC/Ext/OK")[1:] == (1, 3, 0, 1)
        assert msgs[-1][0] == "/VMC/Ext/T" and msgs[-1][1] == pytest.approx(t, abs=1e-4)
        # mirrored like VSeeFace: the avatar's right shapes carry the subject's left ones
        bs = faces[0].blendshapes
        for name in ARKIT_BLENDSHAPES:
            mirrored = name.replace("Left", "_").replace("Right", "Left").replace("_", "Right")
            assert vals[name] == pytest.approx(bs[ARKIT_INDEX[mirrored]], abs=1e-6)
        assert vals["eyeBlinkRight"] == pytest.approx(bs[ARKIT_INDEX["eyeBlinkLeft"]], abs=1e-6)


def test_vmc_lost_face_sends_tracking_status_only(osc_server) -> None:
    with FaceStreamer(vmc=osc_server.address) as streamer:
        streamer.send([], 1.5)
    (msgs,) = osc_server.wait(1)
    assert msgs == [("/VMC/Ext/OK", 1, 3, 0, 0), ("/VMC/Ext/T", 1.5)]


def test_vmc_bundles_split_below_the_datagram_limit(clip) -> None:
    from pythonosc.osc_bundle import OscBundle

    t, faces = clip[0]
    whole = VmcEncoder().encode(faces, t)
    assert len(whole) == 1 and len(whole[0]) < 4096
    parts = VmcEncoder(max_datagram=512).encode(faces, t)
    assert len(parts) > 1 and all(len(p) <= 512 for p in parts)
    flat = lambda ds: [(m.address, *m.params) for d in ds for m in OscBundle(d)]  # noqa: E731
    assert flat(parts) == flat(whole)  # same messages, same order: Apply still after every Val


def test_vmc_head_turn_is_mirrored(turning) -> None:
    """Subject turns to their own left (nose towards image right) → the avatar turns to its right (+x)."""
    enc = VmcEncoder()
    nose, forward_x = [], []
    for _, faces in turning:
        v = faces[0].vertices
        nose.append((v[1, 0] - (v[33, 0] + v[263, 0]) / 2) / np.linalg.norm(v[33, :2] - v[263, :2]))
        x, y, z, w = enc.head_quaternion(faces[0])
        forward_x.append(2 * (x * z + w * y))  # x of the rotated forward axis (0, 0, 1)
    assert np.ptp(nose) > 0.3  # the clip really turns
    assert np.corrcoef(nose, forward_x)[0, 1] > 0.9


def test_eye_rotation_signs(clip) -> None:
    """Both eyes looking 20° to the subject's left and 10° up: mirrored VMC eyes turn to the avatar's right
    (+x) and up (+y); Live Link eye yaw > 0 and pitch < 0 (ARKit: positive pitch looks down)."""
    face = dataclasses.replace(clip[0][1][0], gaze=np.array([[20.0, 10.0], [20.0, 10.0]], np.float32))
    for bone, (x, y, z, w) in VmcEncoder().eye_quaternions(face).items():
        fwd = (2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y))  # rotated (0, 0, 1)
        assert fwd[0] == pytest.approx(math.sin(math.radians(20)) * math.cos(math.radians(10)), abs=1e-6), (
            bone
        )
        assert fwd[1] == pytest.approx(math.sin(math.radians(10)), abs=1e-6), bone
    v = livelink_values(face)
    for eye in ("LeftEye", "RightEye"):
        assert v[LIVELINK_CURVES.index(eye + "Yaw")] == pytest.approx(math.radians(20), abs=1e-6)
        assert v[LIVELINK_CURVES.index(eye + "Pitch")] == pytest.approx(-math.radians(10), abs=1e-6)


# ---------------------------------------------------------------- VMC through vmcp (osc4py3)


def test_vmc_stream_parsed_by_vmcp(clip) -> None:
    pytest.importorskip("vmcp", reason="vmcp not installed (dev extra)")
    pytest.importorskip("osc4py3", reason="vmcp's osc4py3 backend not installed (dev extra)")
    from vmcp.events import (
        BlendShapeApplyEvent,
        BlendShapeEvent,
        BoneTransformEvent,
        RelativeTimeEvent,
        StateEvent,
    )
    from vmcp.facades import on_receive
    from vmcp.osc import OSC
    from vmcp.osc.backend.osc4py3 import as_eventloop

    port = _free_port()
    events: list = []
    n = 5
    with OSC(as_eventloop) as osc:
        receiver = osc.create_receiver("127.0.0.1", port, "face3d-test").open()
        for kind in (
            BlendShapeEvent,
            BlendShapeApplyEvent,
            BoneTransformEvent,
            StateEvent,
            RelativeTimeEvent,
        ):
            on_receive(receiver, kind, events.append)
        with FaceStreamer(vmc=f"127.0.0.1:{port}") as streamer:
            for t, faces in clip[:n]:
                streamer.send(faces, t)
        deadline = time.monotonic() + 5.0
        while sum(isinstance(e, RelativeTimeEvent) for e in events) < n and time.monotonic() < deadline:
            osc.run()  # osc4py3's event loop: process what arrived
    assert sum(isinstance(e, RelativeTimeEvent) for e in events) == n
    assert sum(isinstance(e, BlendShapeApplyEvent) for e in events) == n
    keys = {e.key for e in events if isinstance(e, BlendShapeEvent)}
    assert keys == set(ARKIT_BLENDSHAPES)
    heads = [e for e in events if isinstance(e, BoneTransformEvent) and e.joint.value == "Head"]
    assert len(heads) == n
    for e in heads:
        q = e.rotation
        assert abs(math.sqrt(q.x**2 + q.y**2 + q.z**2 + q.w**2) - 1.0) < 1e-5
    states = [e for e in events if isinstance(e, StateEvent)]
    assert all(s.model_state.value == 1 and s.tracking_state.value == 1 for s in states)


# ---------------------------------------------------------------- Live Link Face


def decode_livelink(data: bytes) -> dict:
    """Live Link Face packet (Unreal's AppleARKitLiveLinkSource, network byte order): version byte,
    length-prefixed device id and subject, frame number, sub-frame, fps, denominator, count, floats."""
    version = data[0]
    off = 1
    (n,) = struct.unpack_from(">i", data, off)
    device = data[off + 4 : off + 4 + n].decode()
    off += 4 + n
    (n,) = struct.unpack_from(">i", data, off)
    subject = data[off + 4 : off + 4 + n].decode()
    off += 4 + n
    frame, sub, fps, den = struct.unpack_from(">ifii", data, off)
    off += 16
    count = data[off]
    values = struct.unpack_from(f">{count}f", data, off + 1)
    assert off + 1 + 4 * count == len(data)
    return dict(
        version=version, device=device, subject=subject, frame=frame, subframe=sub, fps=fps, den=den,
        values=np.array(values, np.float32),
    )  # fmt: skip


def _hand_built_packet() -> bytes:
    device, subject = b"0123456789abcdef0123456789abcdef0123", b"iPhoneFace"
    values = [i / 100 for i in range(61)]
    return (
        bytes([6])
        + struct.pack(">i", len(device)) + device
        + struct.pack(">i", len(subject)) + subject
        + struct.pack(">ifii", 1234, 0.5, 60, 1)
        + bytes([61])
        + struct.pack(">61f", *values)
    )  # fmt: skip


def test_livelink_decoders_agree_on_a_hand_built_packet() -> None:
    d = decode_livelink(_hand_built_packet())
    assert (d["version"], d["subject"], d["frame"], d["subframe"], d["fps"], d["den"]) == (
        6, "iPhoneFace", 1234, 0.5, 60, 1,
    )  # fmt: skip
    assert d["device"] == "0123456789abcdef0123456789abcdef0123"
    np.testing.assert_allclose(d["values"], np.arange(61) / 100, atol=1e-6)
    pll = pytest.importorskip("pylivelinkface", reason="pylivelinkface not installed (dev extra)")
    ok, face = pll.PyLiveLinkFace.decode(_hand_built_packet())
    assert ok and face.name == "iPhoneFace"
    np.testing.assert_allclose(face._blend_shapes, np.arange(61) / 100, atol=1e-6)


def _udp_collector() -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    return sock, f"127.0.0.1:{sock.getsockname()[1]}"


def test_livelink_packets_of_a_real_clip(clip) -> None:
    sock, address = _udp_collector()
    got = []
    with sock, FaceStreamer(vmc=None, livelink=address) as streamer:
        for t, faces in clip:
            streamer.send(faces, t)
            got.append(decode_livelink(sock.recv(2048)))
    for (t, faces), d in zip(clip, got):
        assert (d["version"], d["subject"], d["fps"], d["den"], len(d["values"])) == (6, "face3d", 60, 1, 61)
        assert len(d["device"]) == 36
        assert d["frame"] + d["subframe"] == pytest.approx(t * 60, abs=1e-3)
        np.testing.assert_allclose(d["values"][:52], faces[0].blendshapes, atol=1e-6)  # not mirrored
        np.testing.assert_allclose(d["values"], livelink_values(faces[0]), atol=1e-6)
        assert np.all(np.abs(d["values"][52:]) < math.pi)  # radians


def test_livelink_packets_decoded_by_pylivelinkface(clip) -> None:
    pll = pytest.importorskip("pylivelinkface", reason="pylivelinkface not installed (dev extra)")
    sock, address = _udp_collector()
    with sock, FaceStreamer(vmc=None, livelink=address) as streamer:
        for t, faces in clip[:5]:
            streamer.send(faces, t)
            ok, face = pll.PyLiveLinkFace.decode(sock.recv(2048))
            assert ok and face.name == "face3d" and face.fps == 60
            np.testing.assert_allclose(face._blend_shapes, livelink_values(faces[0]), atol=1e-6)


def test_livelink_one_subject_per_face(clip) -> None:
    t, faces = clip[0]
    second = dataclasses.replace(faces[0], track_id=7)
    sock, address = _udp_collector()
    with sock, FaceStreamer(vmc=None, livelink=address, subject="actor") as streamer:
        streamer.send([faces[0], second], t)
        names = {decode_livelink(sock.recv(2048))["subject"] for _ in range(2)}
    assert names == {"actor", "actor_7"}


def test_jaw_open_follows_the_mouth(clip) -> None:
    """JawOpen as received rises where the lips part (mesh vertices 13/14 over the eye-corner width)."""
    sock, address = _udp_collector()
    received, gap = [], []
    with sock, FaceStreamer(vmc=None, livelink=address) as streamer:
        for t, faces in clip:
            streamer.send(faces, t)
            received.append(decode_livelink(sock.recv(2048))["values"][LIVELINK_CURVES.index("JawOpen")])
            v = faces[0].vertices
            gap.append(np.linalg.norm(v[13, :2] - v[14, :2]) / np.linalg.norm(v[33, :2] - v[263, :2]))
    assert np.ptp(gap) > 0.05  # the mouth really opens in these frames
    assert np.corrcoef(gap, received)[0, 1] > 0.5


def test_livelink_head_yaw_sign(turning) -> None:
    """HeadYaw > 0 when the subject turns to their own left (ARKit's right-handed y-up frame)."""
    yaw, nose = [], []
    for _, faces in turning:
        v = faces[0].vertices
        nose.append((v[1, 0] - (v[33, 0] + v[263, 0]) / 2) / np.linalg.norm(v[33, :2] - v[263, :2]))
        yaw.append(livelink_values(faces[0])[LIVELINK_CURVES.index("HeadYaw")])
    assert np.corrcoef(nose, yaw)[0, 1] > 0.9 and max(np.abs(yaw)) > math.radians(15)


def test_livelink_csv_take(tmp_path: Path) -> None:
    path = tmp_path / "take.csv"
    w = LiveLinkCsvWriter(path)
    w.write(3725.5, np.arange(61, dtype=np.float32) / 61)
    lines = path.read_text().splitlines()  # flushed while the writer is still open
    assert lines[0].split(",")[:4] == ["Timecode", "BlendShapeCount", "EyeBlinkLeft", "EyeLookDownLeft"]
    assert lines[0].split(",")[-1] == "RightEyeRoll" and len(lines[0].split(",")) == 63
    row = lines[1].split(",")
    assert (
        row[0] == "01:02:05:30.000"
        and row[1] == "61"
        and float(row[2 + 60]) == pytest.approx(60 / 61, abs=1e-5)
    )
    w.write(0.0251, np.zeros(61))
    w.close()
    w.close()
    assert path.read_text().splitlines()[2].startswith("00:00:00:01.506,61,0,")
    with pytest.raises(ValueError):
        LiveLinkCsvWriter(tmp_path / "b.csv").write(0.0, np.zeros(52))
    assert timecode(59.999) == "00:00:59:59.940"


# ---------------------------------------------------------------- errors and the CLI


def test_missing_receiver_is_counted_not_raised(clip) -> None:
    port = _free_port()  # nothing listens here: the kernel answers ICMP port unreachable
    with FaceStreamer(vmc=f"127.0.0.1:{port}", livelink=f"127.0.0.1:{port}") as streamer:
        for t, faces in clip[:10]:
            streamer.send(faces, t)
        s = streamer.stats
        status = streamer.status
    assert s["errors"] >= 1 and s["dropped"] >= 1 and s["frames"] == 10
    assert "no receiver" in s["last_error"] and "\n" not in status and "errors" in status


@pytest.mark.parametrize("address", ["nohost:99999", "1.2.3.4", "x:abc", ":39539", "::1:39539"])
def test_bad_addresses_are_config_errors(address: str) -> None:
    with pytest.raises(ConfigError) as err:
        FaceStreamer(vmc=address)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError):
        FaceStreamer(vmc=None, livelink=address)


def test_nothing_to_stream_to_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        FaceStreamer(vmc=None, livelink=None)


def _truncated_clip(video: Path, out: Path, frames: int = 40) -> Path:
    """The first frames of a clip as MJPEG AVI, cut in half: it opens but ends mid-stream."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    ok, img = cap.read()
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 30, (img.shape[1], img.shape[0]))
    for _ in range(frames):
        writer.write(img)
        ok, img = cap.read()
    writer.release()
    cap.release()
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


def test_cli_streams_a_truncated_video_to_python_osc(video_path, tmp_path, osc_server, capsys) -> None:
    from face3d_live.capture import open_source
    from face3d_live.cli import main

    cut = _truncated_clip(video_path("single_face.mp4"), tmp_path / "cut.avi")
    with open_source(cut) as src:
        announced, readable = src.frame_count, len(list(src))
    assert 0 < readable < announced  # really ends mid-stream
    rc = main(["stream", str(cut), "--vmc", osc_server.address, "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"stream done: {readable} frames ({readable} with a face" in out
    assert f"VMC → {osc_server.address}: {readable} packets, 0 dropped" in out
    frames = osc_server.wait(readable)  # bundles may interleave in the threading server: count in total
    messages = [m[0] for f in frames for m in f]
    assert messages.count("/VMC/Ext/Blend/Val") == 52 * readable
    assert messages.count("/VMC/Ext/Blend/Apply") == readable


def test_cli_unreadable_input_is_one_line(tmp_path, capsys) -> None:
    from face3d_live.cli import main

    bad = tmp_path / "not_a_video.mp4"
    bad.write_bytes(b"nope" * 100)
    assert main(["stream", str(bad), "--no-progress"]) == 2
    assert main(["stream", str(tmp_path / "missing.mp4")]) == 2
    assert main(["stream", "demo", "--vmc", "x:abc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("face3d-live: error: ") for line in err)
