"""One face model per GPU for every service replica on its node, fed through shared memory.

Why: under MPS, 16 replicas each running their own small model batches left the H200 99 % busy at
~1,500 requests/s. Measured there (r50, torch, CUDA graphs, MPS, 2026-12-04): 16 processes × 2 threads
calling batches of 4 crops got 9,372 crops/s in all (13.4 ms a call), batches of 2 crops 6,928, while one or
two processes calling batches of 32-64 got 15,800-18,600 crops/s. A request takes four crops (two passes,
each with its mirror), so the replicas' own small batches cap the GPU near 2,300 requests/s with nothing else
on it. Here one process holds the model and gathers the crops of all its clients into one batch.

Protocol (a Unix socket per client thread, Linux): the host sends its info (JSON, length-prefixed); the
client creates a memfd large enough for ``max_batch`` crops and their output rows and passes its descriptor
(``socket.send_fds``); the host maps it. A call: the client writes n crops into the shared input, sends n
(int32), and waits for the host's int32 reply: n when the n output rows are in the shared output, -1 and a
length-prefixed reason when the model failed. The memory goes when both sides close it: nothing to clean up
after a crash. Output rows: ``pack_output`` (468 × 3 vertices, 10 × 3 iris, 68 × 3 points or NaN, score).
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import queue
import socket
import struct
import threading
import time
from dataclasses import dataclass

import numpy as np

from face3d_live.errors import ModelError
from face3d_live.models.layout import NUM_IRIS, NUM_LM68, NUM_VERTICES
from face3d_live.models.output import ModelOutput
from face3d_live.scale.model_runner import BatchObserver, concat_outputs, slice_output

log = logging.getLogger(__name__)

_V, _I, _L = NUM_VERTICES * 3, NUM_IRIS * 3, NUM_LM68 * 3
ROW = _V + _I + _L + 1  # float32 per crop in the shared output
_INT = struct.Struct("<i")


def model_host_available() -> str | None:
    """None where the host can run (Unix sockets that pass descriptors, memfd), else why not."""
    if not hasattr(os, "memfd_create") or not hasattr(socket, "send_fds"):
        return "needs Linux (memfd_create and descriptor passing)"
    return None


def pack_output(out: ModelOutput, rows: np.ndarray) -> None:
    """Write ``out`` (n crops) into ``rows`` (n, ROW) float32."""
    n = len(out)
    rows[:, :_V] = out.vertices.reshape(n, _V)
    rows[:, _V : _V + _I] = out.iris.reshape(n, _I)
    if out.landmarks68 is None:
        rows[:, _V + _I : -1] = np.nan
    else:
        rows[:, _V + _I : -1] = out.landmarks68.reshape(n, _L)
    rows[:, -1] = out.scores


def unpack_output(rows: np.ndarray) -> ModelOutput:
    """``pack_output``'s rows (a copy the caller owns) as a ModelOutput."""
    n = len(rows)
    lm = rows[:, _V + _I : -1]
    return ModelOutput(
        vertices=rows[:, :_V].reshape(n, NUM_VERTICES, 3),
        iris=rows[:, _V : _V + _I].reshape(n, NUM_IRIS, 3),
        landmarks68=None if n and np.isnan(lm[0, 0]) else lm.reshape(n, NUM_LM68, 3),
        scores=rows[:, -1].copy(),
    )


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the other side closed the connection")
        buf += chunk
    return bytes(buf)


def _send_blob(sock: socket.socket, data: bytes) -> None:
    sock.sendall(_INT.pack(len(data)) + data)


def _recv_blob(sock: socket.socket) -> bytes:
    return _recv_exact(sock, _INT.unpack(_recv_exact(sock, 4))[0])


def _views(buf, cap: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(cap, size, size, 3) uint8 crops and (cap, ROW) float32 rows over one shared buffer."""
    n_in = cap * size * size * 3
    crops = np.frombuffer(buf, np.uint8, n_in).reshape(cap, size, size, 3)
    rows = np.frombuffer(buf, np.float32, cap * ROW, offset=n_in).reshape(cap, ROW)
    return crops, rows


def _buffer_bytes(cap: int, size: int) -> int:
    return cap * size * size * 3 + cap * ROW * 4


@dataclass
class _Client:
    sock: socket.socket
    crops: np.ndarray
    rows: np.ndarray


class ModelHostServer:
    """Serves ``runner`` (a ModelRunner) on the Unix socket ``path``. One reader thread per client queues its
    calls; the gather thread takes everything queued (up to ``runner.max_batch`` crops) as one model batch
    whenever fewer than ``in_flight`` batches are running, so the busier the GPU, the larger the batches, and
    a lone call goes at once."""

    def __init__(self, runner, path: str, in_flight: int = 2, on_batch: BatchObserver | None = None) -> None:
        why = model_host_available()
        if why:
            raise ModelError(f"the shared model host cannot run here: {why}")
        self.runner, self.path, self.on_batch = runner, path, on_batch
        self.max_batch = runner.max_batch
        self.info = {"name": runner.name, "input_size": runner.input_size, "max_batch": self.max_batch}
        self.batches = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(in_flight)
        self._closed = False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        os.chmod(path, 0o600)  # only this user's processes: the replicas
        self._listener.listen(256)
        for target, name in (
            (self._accept_loop, "model-host-accept"),
            (self._gather_loop, "model-host-gather"),
        ):
            threading.Thread(target=target, name=name, daemon=True).start()

    # ---- connections ------------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                sock, _ = self._listener.accept()
            except OSError:  # closed
                return
            threading.Thread(
                target=self._serve_client, args=(sock,), name="model-host-client", daemon=True
            ).start()

    def _serve_client(self, sock: socket.socket) -> None:
        try:
            _send_blob(sock, json.dumps(self.info).encode())
            _, fds, _, _ = socket.recv_fds(sock, 1, 1)
            if not fds:
                raise ConnectionError("the client sent no shared memory")
            size = self.runner.input_size
            need = _buffer_bytes(self.max_batch, size)
            try:
                if os.fstat(fds[0]).st_size < need:  # reading past its end would kill the host (SIGBUS)
                    raise ConnectionError("the client's shared memory is too small")
                buf = mmap.mmap(fds[0], need)
            finally:
                os.close(fds[0])
            client = _Client(sock, *_views(buf, self.max_batch, size))
            sock.sendall(b"K")
            while True:
                n = _INT.unpack(_recv_exact(sock, 4))[0]
                if not 1 <= n <= self.max_batch:
                    raise ConnectionError(f"a call of {n} crops (the host takes 1…{self.max_batch})")
                self._queue.put((client, n))
        except ConnectionError:  # the client went away (its replica stopped) or broke the protocol
            pass
        except OSError as exc:
            if not self._closed:
                log.warning("model host: a client connection failed: %s", exc)
        finally:
            sock.close()

    # ---- batches ----------------------------------------------------------------------------------------
    def _gather_loop(self) -> None:
        held = None
        while True:
            self._slots.acquire()
            first = held if held is not None else self._queue.get()
            held = None
            if first is None:  # close()
                return
            items, n = [first], first[1]
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                if n + item[1] > self.max_batch:
                    held = item
                    break
                items.append(item)
                n += item[1]
            self.batches += 1
            t0 = time.perf_counter()
            try:
                fut = self.runner.submit_parts([c.crops[:k] for c, k in items])
            except BaseException as exc:  # the runner is broken or closed: every caller hears why
                self._reply(items, None, exc, t0)
                continue
            fut.add_done_callback(lambda f, items=items, t0=t0: self._reply(items, f, None, t0))

    def _reply(self, items, fut, error: BaseException | None, t0: float) -> None:
        """Collector thread: outputs into each client's rows, then its reply."""
        self._slots.release()
        if error is None:
            error = fut.exception()
        if error is None:
            out, a = fut.result(), 0
            for client, k in items:
                pack_output(slice_output(out, a, a + k), client.rows[:k])
                a += k
            if self.on_batch is not None:
                self.on_batch(len(items), a, time.perf_counter() - t0)
        reason = f"{type(error).__name__}: {error}".encode()[:4000] if error is not None else b""
        for client, k in items:
            msg = _INT.pack(k) if error is None else _INT.pack(-1) + _INT.pack(len(reason)) + reason
            with contextlib.suppress(OSError):  # a client that went away: nothing to tell
                client.sock.sendall(msg)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        with contextlib.suppress(OSError):
            self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class _Connection:
    def __init__(self, path: str, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.info = json.loads(_recv_blob(self.sock))
        cap, size = int(self.info["max_batch"]), int(self.info["input_size"])
        fd = os.memfd_create("face3d-model-host")
        try:
            os.ftruncate(fd, _buffer_bytes(cap, size))
            buf = mmap.mmap(fd, _buffer_bytes(cap, size))
            socket.send_fds(self.sock, [b"F"], [fd])
        finally:
            os.close(fd)  # the mapping (and the host's) keep the memory
        if _recv_exact(self.sock, 1) != b"K":
            raise ConnectionError("the model host did not take the shared memory")
        self.sock.settimeout(None)  # a call waits as long as the model takes
        self.crops, self.rows = _views(buf, cap, size)

    def call(self, crops: np.ndarray) -> ModelOutput:
        k = len(crops)
        np.copyto(self.crops[:k], crops)
        self.sock.sendall(_INT.pack(k))
        status = _INT.unpack(_recv_exact(self.sock, 4))[0]
        if status < 0:
            raise ModelError(f"the shared model failed: {_recv_blob(self.sock).decode(errors='replace')}")
        return unpack_output(self.rows[:k].copy())

    def close(self) -> None:
        self.sock.close()


class ModelHostClient:
    """The FaceModel protocol (``predict``, ``name``, ``input_size``, ``close``) over a ``ModelHostServer``'s
    socket; any number of threads (each gets its own connection and shared memory)."""

    def __init__(self, path: str, connect_timeout: float = 10.0) -> None:
        self.path, self.timeout = path, connect_timeout
        self._local = threading.local()
        self._all: list[_Connection] = []
        self._lock = threading.Lock()
        try:
            first = self._connection()
        except OSError as exc:
            raise ModelError(f"cannot reach the shared model at {path}: {exc}") from None
        self.name, self.input_size = first.info["name"], int(first.info["input_size"])
        self.max_batch = int(first.info["max_batch"])

    def _connection(self) -> _Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _Connection(self.path, self.timeout)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def predict(self, crops: np.ndarray) -> ModelOutput:
        s = self.input_size
        if crops.ndim != 4 or crops.shape[1:] != (s, s, 3) or crops.dtype != np.uint8:
            raise ValueError(f"expected (N, {s}, {s}, 3) uint8 RGB crops, got {crops.shape} {crops.dtype}")
        conn = self._connection()
        step = self.max_batch
        parts = [conn.call(crops[i : i + step]) for i in range(0, len(crops), step)]
        return concat_outputs(parts) if parts else unpack_output(np.zeros((0, ROW), np.float32))

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


def host_socket_path(token: str, gpu: int | str | None) -> str:
    """Where a service's (``token``) model host for GPU ``gpu`` listens (short: Unix socket paths end at 107)."""
    import tempfile

    return os.path.join(
        tempfile.gettempdir(), f"face3d-host-{token}-gpu{gpu if gpu is not None else 'none'}.sock"
    )
