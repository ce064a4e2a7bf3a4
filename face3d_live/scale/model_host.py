"""One face model per GPU (one on a machine without GPUs) for every service replica beside it, fed through
shared memory (``--model-host model|all``).

Why: under MPS, 16 replicas each running their own small model batches left the H200 99 % busy at
~1,500 requests/s. Measured there (r50, torch, CUDA graphs, MPS, 2026-12-04): 16 processes × 2 threads
calling batches of 4 crops got 9,372 crops/s in all (13.4 ms a call), batches of 2 crops 6,928, while one or
two processes calling batches of 32-64 got 15,800-18,600 crops/s. A request takes four crops (two passes,
each with its mirror), so the replicas' own small batches cap the GPU near 2,300 requests/s with nothing else
on it. Here one process holds the model and gathers the crops of all its clients into one batch.

Several hosts may share a GPU (``--hosts-per-gpu``): each takes the first free socket of the GPU's slots
(``host_socket_path``), and a client sends each call to the one with the fewest of its calls in flight, so
that one host process's GIL is not the service's limit.

With a front end (``front``: a ``GpuFrontEnd(raw=True)``), the host also decodes its clients' JPEGs with
nvJPEG and runs the detectors' networks, batched over all of them; it returns each image and the networks' raw
outputs, and the client decodes the detections (``HostFrontEnd``): the per-image Python stays in the many
client processes, the GPU work goes to the one that batches it, and the clients need no GPU context at all.

Protocol (a Unix socket per client thread, Linux): the host sends its info (JSON, length-prefixed); the
client creates a memfd large enough for ``max_batch`` crops, their output rows and (with a front end) the
front region, and passes its descriptor (``socket.send_fds``); the host maps it. A call is a header (op, n):
- model (op 0): the client has written n crops into the shared input; the host answers int32 n when the n
  output rows (``pack_output``: 468 × 3 vertices, 10 × 3 iris, 68 × 3 points or NaN, score) are in place, or
  -1 and a length-prefixed reason when the model failed;
- front (op 1): n bodies written one after another at the front region's start, then n (length, oriented)
  records on the socket; the host answers int32 n and one ``_FRONT`` record per body (its status, the
  image's and the raw outputs' places in the front region, the letterboxes, the batch's timings) and any
  reasons. Status 0: done; 1: no room left in this call's region (send it again in another call); else the
  HTTP status of a bad image.
The memory goes when both sides close it: nothing to clean up after a crash.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import mmap
import os
import queue
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from face3d_live.errors import ModelError
from face3d_live.inference.cuda import unix_socket_listening
from face3d_live.models.layout import NUM_IRIS, NUM_LM68, NUM_VERTICES
from face3d_live.models.output import ModelOutput
from face3d_live.models.r50_face import check_crops
from face3d_live.scale.model_runner import BatchObserver, concat_outputs, when_all

log = logging.getLogger(__name__)

_V, _I, _L = NUM_VERTICES * 3, NUM_IRIS * 3, NUM_LM68 * 3
ROW = _V + _I + _L + 1  # float32 per crop in the shared output
_INT = struct.Struct("<i")
_HEADER = struct.Struct("<ii")  # op, n
_BODY = struct.Struct("<ii")  # length, oriented
# status, h, w, image offset, raw offset, full anchors, short anchors, reason length, full and short letterbox
# (ox, oy, side), the batch's decode and detect ms
_FRONT = struct.Struct("<8i6i2f")
OP_MODEL, OP_FRONT = 0, 1
_ANCHOR = 17  # float32 per anchor in the raw outputs: 16 regressors, then (after all of them) 1 logit
FRONT_OK, FRONT_RETRY = 0, 1


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


def _views(buf, cap: int, size: int, front: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cap, size, size, 3) uint8 crops, (cap, ROW) float32 rows and the front region (bytes) over one shared
    buffer."""
    n_in = cap * size * size * 3
    crops = np.frombuffer(buf, np.uint8, n_in).reshape(cap, size, size, 3)
    rows = np.frombuffer(buf, np.float32, cap * ROW, offset=n_in).reshape(cap, ROW)
    region = np.frombuffer(buf, np.uint8, front, offset=n_in + cap * ROW * 4)
    return crops, rows, region


def _buffer_bytes(cap: int, size: int, front: int) -> int:
    return cap * size * size * 3 + cap * ROW * 4 + front


def _align(n: int) -> int:
    return (n + 63) // 64 * 64


@dataclass
class _Client:
    sock: socket.socket
    crops: np.ndarray
    rows: np.ndarray
    region: np.ndarray  # the front region (empty without a front end)


class ModelHostServer:
    """Serves ``runner`` (a ModelRunner) on the Unix socket ``path``. One reader thread per client queues its
    calls; the gather thread takes everything queued (up to ``runner.max_batch`` crops) as one model batch
    whenever fewer than ``in_flight`` batches are running, so the busier the GPU, the larger the batches, and
    a lone call goes at once."""

    def __init__(
        self,
        runner,
        path: str | Sequence[str],
        in_flight: int = 2,
        on_batch: BatchObserver | None = None,
        front=None,
        front_bytes: int = 0,
    ) -> None:
        """``path``: the socket, or slots to take the first free one of (another host's live socket is left
        alone, a stopped one's file replaced); ``self.path`` says which. ``front``: a GpuFrontEnd(raw=True)
        that decodes and detects for the clients; ``front_bytes``: the room each client gives it (sparse
        memory: only what an image uses is ever allocated), at least one request's largest body and image."""
        why = model_host_available()
        if why:
            raise ModelError(f"the shared model host cannot run here: {why}")
        self.runner, self.on_batch = runner, on_batch
        self.front, self.front_bytes = front, front_bytes if front is not None else 0
        self.max_batch = runner.max_batch
        self.info = {
            "name": runner.name,
            "input_size": runner.input_size,
            "max_batch": self.max_batch,
            "front_bytes": self.front_bytes,
        }
        self.batches = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(in_flight)
        self._closed = False
        self._clients: set[socket.socket] = set()  # open connections: close() ends them
        self._clients_lock = threading.Lock()
        self._listener, self.path = _listen_on_free_path([path] if isinstance(path, str) else list(path))
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
        with self._clients_lock:
            self._clients.add(sock)
        try:
            _send_blob(sock, json.dumps(self.info).encode())
            _, fds, _, _ = socket.recv_fds(sock, 1, 1)
            if not fds:
                raise ConnectionError("the client sent no shared memory")
            size = self.runner.input_size
            need = _buffer_bytes(self.max_batch, size, self.front_bytes)
            try:
                if os.fstat(fds[0]).st_size < need:  # reading past its end would kill the host (SIGBUS)
                    raise ConnectionError("the client's shared memory is too small")
                buf = mmap.mmap(fds[0], need)
            finally:
                os.close(fds[0])
            client = _Client(sock, *_views(buf, self.max_batch, size, self.front_bytes))
            sock.sendall(b"K")
            while True:
                op, n = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
                if op == OP_FRONT and self.front is not None and n >= 1:
                    self._front_call(client, [_BODY.unpack(_recv_exact(sock, _BODY.size)) for _ in range(n)])
                elif op == OP_MODEL and 1 <= n <= self.max_batch:
                    self._queue.put((client, n))
                else:
                    raise ConnectionError(f"a call the host does not take: op {op}, n {n}")
        except ConnectionError:  # the client went away (its replica stopped) or broke the protocol
            pass
        except OSError as exc:
            if not self._closed:
                log.warning("model host: a client connection failed: %s", exc)
        finally:
            with self._clients_lock:
                self._clients.discard(sock)
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
                pack_output(out.rows(a, a + k), client.rows[:k])
                a += k
            if self.on_batch is not None:
                self.on_batch(len(items), a, time.perf_counter() - t0)
        reason = f"{type(error).__name__}: {error}".encode()[:4000] if error is not None else b""
        for client, k in items:
            msg = _INT.pack(k) if error is None else _INT.pack(-1) + _INT.pack(len(reason)) + reason
            with contextlib.suppress(OSError):  # a client that went away: nothing to tell
                client.sock.sendall(msg)

    # ---- decoding and detection ----------------------------------------------------------------------------
    def _front_call(self, client: _Client, meta: list[tuple[int, int]]) -> None:
        """Reader thread: each body to the front end's batch threads; the reply when all are done."""
        bodies, a = [], 0
        for length, _ in meta:
            if a + length > len(client.region):
                raise ConnectionError("a front call larger than its region")
            bodies.append(client.region[a : a + length].tobytes())  # the region is rewritten with the answers
            a += length
        futures = [self.front.submit_checked(b, bool(o)) for b, (_, o) in zip(bodies, meta)]
        when_all(futures, lambda: self._reply_front(client, futures))

    def _reply_front(self, client: _Client, futures) -> None:
        """Each image and its raw outputs into the client's front region (from its start: the bodies were
        copied out), one record each, then the reply."""
        records, reasons, at = [], [], 0
        for fut in futures:
            exc = fut.exception()
            if exc is not None:
                status = getattr(exc, "status", 500)
                reason = str(getattr(exc, "reason", f"{type(exc).__name__}: {exc}")).encode()[:2000]
                records.append(_FRONT.pack(status, 0, 0, 0, 0, 0, 0, len(reason), 0, 0, 0, 0, 0, 0, 0.0, 0.0))
                reasons.append(reason)
                continue
            raw = fut.result()
            h, w = raw.image.shape[:2]
            parts = [raw.full[0], raw.full[1]] + ([raw.short[0], raw.short[1]] if raw.short else [])
            raw_bytes = sum(p.size * 4 for p in parts)
            img_off = _align(at)
            raw_off = _align(img_off + h * w * 3)
            end = raw_off + raw_bytes
            if end > len(client.region):  # no room left in this call: the client sends it again
                records.append(_FRONT.pack(FRONT_RETRY, *([0] * 13), 0.0, 0.0))
                reasons.append(b"")
                continue
            client.region[img_off : img_off + h * w * 3] = raw.image.reshape(-1)
            floats = client.region[raw_off:end].view(np.float32)
            k = 0
            for p in parts:
                floats[k : k + p.size] = p.reshape(-1)
                k += p.size
            sg = raw.short[2] if raw.short else (0, 0, 0)
            a_short = len(raw.short[1]) if raw.short else 0
            records.append(
                _FRONT.pack(
                    FRONT_OK,
                    h,
                    w,
                    img_off,
                    raw_off,
                    len(raw.full[1]),
                    a_short,
                    0,
                    *raw.full[2],
                    *sg,
                    raw.decode_ms,
                    raw.detect_ms,
                )
            )
            reasons.append(b"")
            at = end
        msg = _INT.pack(len(futures)) + b"".join(records) + b"".join(reasons)
        with contextlib.suppress(OSError):
            client.sock.sendall(msg)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        with contextlib.suppress(OSError):
            self._listener.close()
        # the clients' calls would otherwise wait for batches that no thread runs: they see the end now
        with self._clients_lock:
            clients = list(self._clients)
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _listen_on_free_path(paths: list[str]) -> tuple[socket.socket, str]:
    """A listening socket on the first of ``paths`` that no live host holds (a file left by a stopped one is
    replaced; binding is atomic, so two hosts starting together take different paths)."""
    for path in paths:
        for attempt in range(2):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(path)
            except OSError as exc:
                sock.close()
                if exc.errno != errno.EADDRINUSE:
                    raise ModelError(f"the model host cannot listen on {path}: {exc}") from None
                if attempt or unix_socket_listening(path, socket.SOCK_STREAM):
                    break  # another host's: the next path
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # a stopped host's leftover
                continue
            os.chmod(path, 0o600)  # only this user's processes: the replicas
            sock.listen(256)
            return sock, path
    raise ModelError(f"no free model host socket among {', '.join(paths)}")


class _Connection:
    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.info = json.loads(_recv_blob(self.sock))
        cap, size = int(self.info["max_batch"]), int(self.info["input_size"])
        front = int(self.info.get("front_bytes", 0))
        total = _buffer_bytes(cap, size, front)
        fd = os.memfd_create("face3d-model-host")
        try:
            os.ftruncate(fd, total)  # sparse: pages exist once written
            buf = mmap.mmap(fd, total)
            socket.send_fds(self.sock, [b"F"], [fd])
        finally:
            os.close(fd)  # the mapping (and the host's) keep the memory
        if _recv_exact(self.sock, 1) != b"K":
            raise ConnectionError("the model host did not take the shared memory")
        self.sock.settimeout(None)  # a call waits as long as the model takes
        self.crops, self.rows, self.region = _views(buf, cap, size, front)

    def call(self, crops: np.ndarray) -> ModelOutput:
        k = len(crops)
        np.copyto(self.crops[:k], crops)
        self.sock.sendall(_HEADER.pack(OP_MODEL, k))
        status = _INT.unpack(_recv_exact(self.sock, 4))[0]
        if status < 0:
            raise ModelError(f"the shared model failed: {_recv_blob(self.sock).decode(errors='replace')}")
        return unpack_output(self.rows[:k].copy())

    def front(self, bodies: list[bytes], oriented: list[bool]) -> list:
        """Each body as a RawFront, an HttpError, or None (no room in this call: send it again)."""
        from face3d_live.scale.gpu_front import RawFront
        from face3d_live.scale.http_api import HttpError

        a = 0
        for body in bodies:
            self.region[a : a + len(body)] = np.frombuffer(body, np.uint8)
            a += len(body)
        meta = b"".join(_BODY.pack(len(b), int(o)) for b, o in zip(bodies, oriented))
        self.sock.sendall(_HEADER.pack(OP_FRONT, len(bodies)) + meta)
        n = _INT.unpack(_recv_exact(self.sock, 4))[0]
        if n < 0:
            raise ModelError(
                f"the model host's front end failed: {_recv_blob(self.sock).decode(errors='replace')}"
            )
        records = [_FRONT.unpack(_recv_exact(self.sock, _FRONT.size)) for _ in range(n)]
        out: list = []
        for rec in records:
            status, h, w, img_off, raw_off, a_full, a_short, reason_len = rec[:8]
            reason = _recv_exact(self.sock, reason_len).decode(errors="replace") if reason_len else ""
            if status == FRONT_RETRY:
                out.append(None)
            elif status != FRONT_OK:
                out.append(HttpError(status, reason))
            else:
                image = self.region[img_off : img_off + h * w * 3].reshape(h, w, 3).copy()
                floats = (
                    self.region[raw_off : raw_off + (a_full + a_short) * _ANCHOR * 4].view(np.float32).copy()
                )
                full = (
                    floats[: a_full * 16].reshape(a_full, 16),
                    floats[a_full * 16 : a_full * _ANCHOR],
                    rec[8:11],
                )
                short = None
                if a_short:
                    b = a_full * _ANCHOR
                    short = (
                        floats[b : b + a_short * 16].reshape(a_short, 16),
                        floats[b + a_short * 16 : b + a_short * _ANCHOR],
                        rec[11:14],
                    )
                out.append(RawFront(image, full, short, rec[14], rec[15]))
        return out

    def close(self) -> None:
        self.sock.close()


class ModelHostClient:
    """The FaceModel protocol (``predict``, ``name``, ``input_size``, ``close``) over ``ModelHostServer``
    sockets (``paths``: one, or the several hosts of one GPU); any number of threads, each with its own
    connection to each host and its shared memory. Each call goes to the host with the fewest of this
    process's calls in flight (ties in turn, from a random host). Why not a host per thread, as before: that
    left the hosts' loads to chance (13 replicas × 2 threads over 3 hosts from random starts: the busiest
    host had a median 1.43× the idlest one's threads, ≥ 1.5× in 47 % of starts, simulated), and the busiest
    host's queue sets the service's p95."""

    def __init__(self, paths: str | Sequence[str], connect_timeout: float = 10.0) -> None:
        self.paths = [paths] if isinstance(paths, str) else list(paths)
        if not self.paths:
            raise ValueError("ModelHostClient needs at least one socket path")
        self.timeout = connect_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._turn = random.randrange(len(self.paths))
        self._busy = dict.fromkeys(self.paths, 0)  # this process's calls in flight, per host
        self._calls = dict.fromkeys(self.paths, 0)  # and all it made
        # one connection to each host now: all of them are there, and the first threads take these
        self._spare: list[_Connection] = []
        try:
            for path in self.paths:
                self._spare.append(self._connect(path))
        except ModelError:
            for conn in self._spare:
                conn.close()
            raise
        self._all = list(self._spare)
        first = self._spare[0]
        self.name, self.input_size = first.info["name"], int(first.info["input_size"])
        self.max_batch = int(first.info["max_batch"])
        self.front_bytes = int(first.info.get("front_bytes", 0))  # 0: the host does not decode or detect

    def _pick(self) -> str:
        """The host for the next call, counted busy until ``_done``."""
        with self._lock:
            n = len(self.paths)
            order = [self.paths[(self._turn + k) % n] for k in range(n)]
            path = min(order, key=self._busy.__getitem__)  # min keeps the first of equals: the turn's
            self._turn += 1
            self._busy[path] += 1
            self._calls[path] += 1
            return path

    def _done(self, path: str) -> None:
        with self._lock:
            self._busy[path] -= 1

    def _connection(self, path: str) -> _Connection:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(path)
        if conn is None:
            with self._lock:
                conn = next((c for c in self._spare if c.path == path), None)
                if conn is not None:
                    self._spare.remove(conn)
            if conn is None:
                conn = self._connect(path)
                with self._lock:
                    self._all.append(conn)
            conns[path] = conn
        return conn

    def _connect(self, path: str) -> _Connection:
        try:
            return _Connection(path, self.timeout)
        except OSError as exc:
            raise ModelError(f"cannot reach the shared model at {path}: {exc}") from None

    @contextlib.contextmanager
    def _call(self) -> Iterator[_Connection]:
        """This thread's connection to the least busy host, for one call. One whose host went away
        (stopped, restarted by Serve) fails the call with one line and is dropped: the thread's next call to
        that host connects again."""
        path = self._pick()
        try:
            conn = self._connection(path)
            try:
                yield conn
            except OSError as exc:  # ConnectionError included
                with self._lock:
                    if conn in self._all:
                        self._all.remove(conn)
                conns = getattr(self._local, "conns", {})
                if conns.get(path) is conn:
                    del conns[path]
                conn.close()
                raise ModelError(f"the connection to the shared model at {conn.path} broke: {exc}") from None
        finally:
            self._done(path)

    def connections(self) -> dict[str, int]:
        """Connections per host socket (the spare ones included)."""
        with self._lock:
            return {path: sum(c.path == path for c in self._all) for path in self.paths}

    def calls(self) -> dict[str, int]:
        """The calls this client sent to each host."""
        with self._lock:
            return dict(self._calls)

    def predict(self, crops: np.ndarray) -> ModelOutput:
        check_crops(crops, self.input_size)
        step = self.max_batch
        with self._call() as conn:
            parts = [conn.call(crops[i : i + step]) for i in range(0, len(crops), step)]
        return concat_outputs(parts) if parts else unpack_output(np.zeros((0, ROW), np.float32))

    def front(self, bodies: list[bytes], oriented: list[bool]) -> list:
        """Each body decoded and detected by the host (``RawFront``) or its HttpError; bodies that do not fit
        one call's region go in the next."""
        if not self.front_bytes:
            raise ModelError("this model host does not decode or detect")
        out: list = [None] * len(bodies)
        todo = list(range(len(bodies)))
        while todo:
            batch, room = [], self.front_bytes
            for k in todo:  # the bodies that fit (always the first: one request fits, by the host's sizing)
                if len(bodies[k]) <= room or not batch:
                    batch.append(k)
                    room -= len(bodies[k])
            with self._call() as conn:
                answers = conn.front([bodies[k] for k in batch], [oriented[k] for k in batch])
            for k, answer in zip(batch, answers):
                out[k] = answer
            todo = [k for k in todo if out[k] is None]
            if todo and all(answer is None for answer in answers):
                raise ModelError("the model host has no room for an image it was sized for")
        return out

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


def gpu_host_paths(token: str, gpu_ids: Sequence, per_gpu: int, spare: int = 0) -> list[str]:
    """The socket slots of the model hosts on a process's GPU (``gpu_ids``: ``ray.get_gpu_ids()``; a machine
    without GPUs has one slot), then ``spare`` more."""
    gpu, slots = (gpu_ids[0], per_gpu) if gpu_ids else (None, 1)
    return [host_socket_path(token, gpu, k) for k in range(slots + spare)]


def host_socket_path(token: str, gpu: int | str | None, slot: int = 0) -> str:
    """Where a service's (``token``) model host in slot ``slot`` of GPU ``gpu`` listens (short: Unix socket
    paths end at 107 bytes)."""
    import tempfile

    where = f"gpu{gpu if gpu is not None else 'none'}"
    return os.path.join(tempfile.gettempdir(), f"face3d-host-{token}-{where}-{slot}.sock")
