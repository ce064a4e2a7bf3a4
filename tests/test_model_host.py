"""The per-GPU shared model host (scale/model_host.py): the real r50 (ONNX Runtime on the CPU here) behind the
real Unix socket and shared memory, called from other processes."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from face3d_live.errors import ModelError
from face3d_live.models.output import ModelOutput
from face3d_live.scale.model_host import (
    ModelHostClient,
    ModelHostServer,
    model_host_available,
    pack_output,
    unpack_output,
)

pytestmark = pytest.mark.skipif(model_host_available() is not None, reason=str(model_host_available()))


@pytest.fixture(scope="module")
def crops(astronaut) -> np.ndarray:
    """Six real face crops: the astronaut's detected face, shifted and scaled, and their mirrors."""
    from face3d_live.detect.blazeface import BlazeFaceDetector

    det = BlazeFaceDetector(full_range=True).detect(astronaut)[0]
    x0, y0, x1, y1 = det.box
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * 1.6
    out = []
    for dx, scale in ((0, 1.0), (0.05, 1.1), (-0.05, 0.95)):
        s = side * scale
        a, b = int(cx - s / 2 + dx * s), int(cy - s / 2)
        crop = cv2.resize(astronaut[max(b, 0) : b + int(s), max(a, 0) : a + int(s)], (224, 224))
        out += [crop, crop[:, ::-1]]
    return np.ascontiguousarray(np.stack(out))


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    from face3d_live.models.registry import create_model
    from face3d_live.scale.model_runner import ModelRunner

    runner = ModelRunner(create_model("r50", "onnxruntime"), streams=2, max_batch=8)
    batches: list[tuple[int, int]] = []
    path = str(tmp_path_factory.mktemp("host") / "model.sock")
    server = ModelHostServer(runner, path, on_batch=lambda r, c, s: batches.append((r, c)))
    yield server, runner, batches
    server.close()
    runner.close()


_CLIENT = """
import sys, threading, numpy as np
from face3d_live.scale.model_host import ModelHostClient
path, crops_file, out_file = sys.argv[1:]
crops = np.load(crops_file)
client = ModelHostClient(path)
results, barrier = {}, threading.Barrier(len(crops))
def call(k):
    barrier.wait()
    results[k] = client.predict(crops[k : k + 1]).vertices[0]
threads = [threading.Thread(target=call, args=(k,)) for k in range(len(crops))]
[t.start() for t in threads]
[t.join() for t in threads]
np.save(out_file, np.stack([results[k] for k in range(len(crops))]))
print(client.name, client.input_size)
"""


def test_clients_in_two_processes_get_the_models_outputs_in_shared_batches(
    host, crops, tmp_path: Path
) -> None:
    server, runner, batches = host
    expected = runner.predict(crops).vertices
    np.save(tmp_path / "crops.npy", crops)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _CLIENT,
                server.path,
                str(tmp_path / "crops.npy"),
                str(tmp_path / f"out{k}.npy"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    for k, proc in enumerate(procs):
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
        assert out.split() == ["r50", "224"]
        got = np.load(tmp_path / f"out{k}.npy")
        # the same crops in other batches: fp32 ONNX Runtime agrees to far below a pixel
        np.testing.assert_allclose(got, expected, atol=1e-2)
    assert sum(c for _, c in batches) == 12
    # twelve single-crop calls from two processes, six threads each: queued calls share batches
    assert max(r for r, _ in batches) >= 2 and len(batches) < 12


def test_hosts_of_one_gpu_take_free_slots_and_a_client_spreads_over_them(host, crops, tmp_path: Path) -> None:
    """A second host (its own runner: another process on the GPU) takes the first slot no live host holds,
    replacing a stopped host's leftover file; a client's calls go to the least busy host (in turn when
    equally busy), with the same outputs; with every slot taken a host says so."""
    import socket

    from face3d_live.models.registry import create_model
    from face3d_live.scale.model_host import gpu_host_paths, host_socket_path
    from face3d_live.scale.model_runner import ModelRunner

    server, runner, _ = host
    slots = [str(tmp_path / f"s{k}.sock") for k in range(3)]
    slots[0] = server.path  # the module's host is live in slot 0
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(slots[1])
    stale.close()  # a stopped host's socket file stays
    second_runner = ModelRunner(create_model("r50", "onnxruntime"), streams=2, max_batch=8)
    second_batches: list[int] = []
    second = ModelHostServer(second_runner, slots, on_batch=lambda r, c, s: second_batches.append(c))
    client = None
    try:
        assert second.path == slots[1]
        client = ModelHostClient(slots[:2])
        assert client.connections() == {slots[0]: 1, slots[1]: 1}  # one to each, checked at the start
        expected = runner.predict(crops).vertices
        for k in range(4):  # one thread, one call at a time: every host equally busy, so in turn
            np.testing.assert_allclose(
                client.predict(crops[k : k + 1]).vertices, expected[k : k + 1], atol=1e-2
            )
        assert client.calls() == {slots[0]: 2, slots[1]: 2}
        assert client.connections() == {slots[0]: 1, slots[1]: 1}  # the thread's own, one to each
        results: dict[int, np.ndarray] = {}
        barrier = threading.Barrier(4)

        def call(k: int) -> None:
            barrier.wait()
            for _ in range(2):
                results[k] = client.predict(crops[k : k + 2]).vertices

        threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k in range(4):
            np.testing.assert_allclose(results[k], expected[k : k + 2], atol=1e-2)
        calls = client.calls()
        assert sum(calls.values()) == 4 + 8 and min(calls.values()) >= 2 + 1  # both took concurrent calls
        assert all(1 <= n <= 4 for n in client.connections().values())  # at most one per thread and host
        assert sum(second_batches) >= 2 + 2  # the second host ran crops of both rounds
        with pytest.raises(ModelError, match="no free model host socket"):
            ModelHostServer(second_runner, slots[:2])
    finally:
        if client is not None:
            client.close()
        second.close()
        second_runner.close()
    assert host_socket_path("ab12", 0, 1).endswith("face3d-host-ab12-gpu0-1.sock")
    assert host_socket_path("ab12", None).endswith("face3d-host-ab12-gpunone-0.sock")
    assert [p[-11:] for p in gpu_host_paths("ab12", [3], 2, spare=1)] == [
        "gpu3-0.sock",
        "gpu3-1.sock",
        "gpu3-2.sock",
    ]
    assert gpu_host_paths("ab12", [], 2) == [host_socket_path("ab12", None)]  # no GPU: one host


def test_a_host_that_goes_away_fails_one_call_and_the_next_reconnects(host, crops, tmp_path: Path) -> None:
    """A host stopping (or Serve restarting it) ends its clients' connections: a call then fails at once
    with one line instead of waiting for ever, and the thread's next call connects to the host that took
    the socket again."""
    import time

    _, runner, _ = host
    path = str(tmp_path / "restart.sock")
    first = ModelHostServer(runner, path)
    client = ModelHostClient(path)
    second = None
    try:
        assert client.predict(crops[:1]).vertices.shape == (1, 468, 3)
        first.close()
        t0 = time.monotonic()
        with pytest.raises(ModelError, match="broke|cannot reach"):
            client.predict(crops[:1])
        assert time.monotonic() - t0 < 10
        with pytest.raises(ModelError, match="cannot reach"):  # nobody listens: still one line
            client.predict(crops[:1])
        second = ModelHostServer(runner, path)  # the restarted host
        out = client.predict(crops[:2])
        np.testing.assert_allclose(out.vertices, runner.predict(crops[:2]).vertices, atol=1e-2)
        assert client.connections() == {path: 1}  # the broken ones were dropped
    finally:
        client.close()
        first.close()
        if second is not None:
            second.close()


def test_a_client_that_goes_away_leaves_the_host_serving(host, crops) -> None:
    server, _, _ = host
    gone = ModelHostClient(server.path)
    gone.predict(crops[:2])
    gone.close()
    client = ModelHostClient(server.path)
    try:
        out = client.predict(crops[:3])
        assert out.vertices.shape == (3, 468, 3) and out.landmarks68.shape == (3, 68, 3)
        assert (out.scores > 0.5).all()  # real faces
        with pytest.raises(ValueError, match="uint8 RGB crops"):
            client.predict(crops[:1, :100])
    finally:
        client.close()


def test_a_client_with_too_little_shared_memory_is_dropped(host, crops) -> None:
    """The host maps only memory as large as its batch needs: reading past a shorter memfd's end would kill
    it (SIGBUS), so such a client is hung up on and the host goes on serving."""
    import os
    import socket

    from face3d_live.scale.model_host import _recv_blob

    server, _, _ = host
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(server.path)
        _recv_blob(sock)  # the host's info
        fd = os.memfd_create("too-small")
        os.ftruncate(fd, 1024)
        socket.send_fds(sock, [b"F"], [fd])
        os.close(fd)
        assert sock.recv(1) == b""  # hung up, no "K"
    client = ModelHostClient(server.path)
    try:
        assert len(client.predict(crops[:1])) == 1
    finally:
        client.close()


def test_more_crops_than_the_hosts_batch_go_in_several_calls(host, crops) -> None:
    server, runner, _ = host
    client = ModelHostClient(server.path)
    try:
        many = np.concatenate([crops, crops])  # 12 > max_batch 8
        out = client.predict(many)
        np.testing.assert_allclose(out.vertices[6:], out.vertices[:6], atol=1e-2)
        assert len(out) == 12
    finally:
        client.close()


def test_a_failed_model_is_each_callers_one_line_error(tmp_path: Path, crops) -> None:
    from face3d_live.models.registry import create_model
    from face3d_live.scale.model_runner import ModelRunner

    runner = ModelRunner(create_model("r50", "onnxruntime"), streams=1, max_batch=4)
    server = ModelHostServer(runner, str(tmp_path / "m.sock"))
    client = ModelHostClient(server.path)
    try:
        runner.close()  # e.g. the GPU went away: the runner refuses every batch
        errors = []

        def call() -> None:
            try:
                client.predict(crops[:1])
            except ModelError as exc:
                errors.append(str(exc))

        threads = [threading.Thread(target=call) for _ in range(3)]
        [t.start() for t in threads]
        [t.join(timeout=60) for t in threads]
        assert len(errors) == 3 and all("the shared model failed" in e and "closed" in e for e in errors)
    finally:
        client.close()
        server.close()
    assert not Path(server.path).exists()
    with pytest.raises(ModelError, match="cannot reach the shared model"):
        ModelHostClient(server.path)


def test_packed_rows_round_trip_with_and_without_68_points() -> None:
    rng = np.random.default_rng(0)
    out = ModelOutput(
        vertices=rng.normal(size=(3, 468, 3)).astype(np.float32),
        iris=rng.normal(size=(3, 10, 3)).astype(np.float32),
        landmarks68=rng.normal(size=(3, 68, 3)).astype(np.float32),
        scores=rng.random(3).astype(np.float32),
    )
    from face3d_live.scale.model_host import ROW

    rows = np.empty((3, ROW), np.float32)
    pack_output(out, rows)
    back = unpack_output(rows.copy())
    for name in ("vertices", "iris", "landmarks68", "scores"):
        np.testing.assert_array_equal(getattr(back, name), getattr(out, name))
    out.landmarks68 = None
    pack_output(out, rows)
    assert unpack_output(rows.copy()).landmarks68 is None
