"""A service replica's JPEG decoding and face detection on its GPU, batched over its request threads.

Why: on the H200 the service is bound by the replicas' CPU, and a py-spy profile of one (stop 24) put
detection at 29 % of its busy thread time (TFLite invoke 17.5 %, the resize before it 6 %) and JPEG decoding
at 8 %. Here the request threads hand their bodies to a batch thread, which decodes every JPEG of the batch
with nvJPEG in one call (``torchvision.io.decode_jpeg(device="cuda")``), finds the faces in all of them with
one BlazeFace pass (``detect.blazeface_torch``: the bundled tflite graph in torch, letterbox and area resize
on the GPU), and copies the images back for the crops. PNGs (and JPEGs nvJPEG refuses: CMYK, progressive
oddities) decode on the CPU with OpenCV and join the batch for detection. Stills try the full-range detector
first and the short-range one where it finds nothing, as ``Reconstructor`` does on the CPU. In the service the
batch thread then reconstructs the whole batch (``finish``: ``Reconstructor.reconstruct_batch``, one model pass
per stage for all its faces), so the per-request Python of the crops, the model calls, the crop-to-image mapping
and the blendshape network is paid once per batch; two such threads keep the GPU busy while one waits.

In the GPU's model host (``--model-host all``) a ``GpuFrontEnd(raw=True)`` does the decoding and runs the
detectors' networks for every replica there, answering with each image and the networks' raw outputs; the
replicas' ``HostFrontEnd`` decodes the detections and runs ``finish`` (scale/model_host.py).

nvJPEG and libjpeg-turbo (OpenCV) round the IDCT and the chroma upsampling differently, so pixels differ by a
few grey levels and the mesh by a fraction of a pixel (tests/test_gpu_front.py, on a GPU).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from face3d_live.detect.blazeface import FULL_RANGE, SHORT_RANGE, BlazeFaceDecoder, Detection
from face3d_live.scale.http_api import JPEG_MAGIC, HttpError, check_image_header, decode_rgb

log = logging.getLogger(__name__)


@dataclass
class FrontResult:
    """One request's image (H, W, 3 uint8 RGB, on the CPU), its detections and the batch's timings; with a
    ``finish`` step, that step's answer for the image too."""

    image: np.ndarray
    detections: list[Detection]
    decode_ms: float  # the batch's decoding (all its images)
    detect_ms: float  # the batch's detection
    finished: Any = None  # finish(images, detections)[k]
    # from submit to its batch's start: waiting for a batch thread and the batch window
    queue_ms: float = 0.0


# one detector's raw outputs for one image: regressors (A, 16), logits (A,), letterbox (ox, oy, side)
RawDetector = tuple[np.ndarray, np.ndarray, tuple[int, int, int]]


@dataclass
class RawFront:
    """One image decoded on the host side and its detectors' raw outputs, before the per-image decoding
    (``GpuFrontEnd(raw=True)``'s answer: the model host sends these to its clients)."""

    image: np.ndarray
    full: RawDetector
    short: RawDetector | None  # the short-range detector's, where the full-range one found nothing
    decode_ms: float
    detect_ms: float


def gpu_front_available() -> str | None:
    """None when nvJPEG decoding and torch detection can run here, else why not (one line)."""
    try:
        import torch
        import torchvision.io  # noqa: F401
    except ImportError as exc:
        return f"torch/torchvision missing ({exc.name})"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


class _Detectors:
    """One batch thread's detectors and stream (the detectors' CUDA graphs have fixed input buffers: two
    threads must not replay the same ones at once)."""

    def __init__(self, device, min_score: float, cuda: bool) -> None:
        import torch

        from face3d_live.detect.blazeface_torch import TorchBlazeFaceDetector

        self.full_range = TorchBlazeFaceDetector(True, device, min_score)
        self.short_range = TorchBlazeFaceDetector(False, device, min_score)
        # its own stream: never serialised with the model's or the other batch threads'
        self.stream = torch.cuda.Stream(device) if cuda else None


class GpuFrontEnd:
    """``decode_and_detect(body, max_pixels) -> FrontResult`` from any thread (``submit``: its Future);
    ``workers`` batch threads do the GPU work for up to ``max_batch`` bodies at a time, the first of a batch
    waiting at most ``wait_s`` for more. With ``finish(images, detections) -> answers``, the batch thread also runs that step on the batch
    (the service: the whole reconstruction, Reconstructor.reconstruct_batch) and each caller gets its answer;
    with two threads one prepares a batch while the other's waits for the model. Bad input raises HttpError in
    the caller's thread (the header is checked there, before queueing)."""

    def __init__(
        self,
        device: str = "cuda",
        max_batch: int = 16,
        wait_s: float = 0.001,
        min_score: float = 0.5,
        workers: int = 1,
        finish: Callable[[list[np.ndarray], list[list[Detection]]], list] | None = None,
        raw: bool = False,
    ) -> None:
        self.max_batch, self.wait_s, self.finish, self.raw = max_batch, wait_s, finish, raw
        self.min_score = min_score
        # numpy decoders of the detectors' raw outputs (the same anchors and NMS as the torch port's)
        self.decoders = (BlazeFaceDecoder(FULL_RANGE, min_score), BlazeFaceDecoder(SHORT_RANGE, min_score))
        self._set_device(device)
        self.batches = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._threads = []
        for k in range(max(1, workers)):
            state = self._worker_state()
            # the first batch builds nvJPEG's handles and the detectors' kernels: not in a request's time
            self._warm_up(state)
            thread = threading.Thread(target=self._loop, args=(state,), name=f"gpu-front-{k}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _set_device(self, device: str) -> None:
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"  # "cpu": the same batching, OpenCV decoding (tests)
        self.poll_s = front_poll_s() if self.cuda else 0.0
        self.poll_max_s = max(self.poll_s, front_poll_max_s())

    def _wait(self, stream) -> None:
        """Until the work enqueued on ``stream`` is done: polled with sleeps that start at ``poll_s`` and
        double up to ``poll_max_s``, or a spinning wait (CUDA's default in torch) where ``poll_s`` is 0. Why
        poll: in an MPS client (one replica per core) a spinning wait takes the core another replica needs,
        and a blocking-sync wait wakes late on those busy cores (inference.cuda.set_blocking_sync). Why
        back off: a batch waits 5-20 ms under load, and polling every 0.1 ms took 10 % of a replica's CPU
        samples (H200, stop 32); the doubling adds at most ``poll_max_s`` to a long wait."""
        import torch

        if stream is None:
            return
        if not self.poll_s:
            stream.synchronize()
            return
        done = torch.cuda.Event()
        done.record(stream)
        delay = self.poll_s
        while not done.query():
            time.sleep(delay)
            delay = min(2 * delay, self.poll_max_s)

    def _worker_state(self):
        """What one batch thread works with: its detectors and stream."""
        return _Detectors(self.device, self.min_score, self.cuda)

    def _warm_up(self, detectors: _Detectors) -> None:
        import cv2

        ok, jpeg = cv2.imencode(".jpg", np.full((480, 640, 3), 128, np.uint8))
        if ok:
            self._run_batch(detectors, [jpeg.tobytes()], [False], finish=False)

    def decode_and_detect(self, body: bytes, max_pixels: int) -> FrontResult:
        return self.submit(body, max_pixels).result()

    def submit(self, body: bytes, max_pixels: int) -> Future:
        """A Future of the body's FrontResult (``asyncio.wrap_future`` awaits it on an event loop)."""
        _, _, oriented = check_image_header(body, max_pixels)
        return self.submit_checked(body, oriented)

    def submit_checked(self, body: bytes, oriented: bool) -> Future:
        """``submit`` for a body whose header was checked already (``oriented``: it has an EXIF rotation)."""
        if self._closed:
            raise RuntimeError("the GPU front end is closed")
        fut: Future = Future()
        self._queue.put((body, oriented, fut, time.perf_counter()))
        return fut

    # ---- the batch threads --------------------------------------------------------------------------
    def _loop(self, state) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._queue.put(None)  # the other batch threads stop too
                return
            # a caller that went away (an HTTP client that hung up: its asyncio task cancels the Future) is
            # dropped here; once running, a Future can no longer be cancelled, so setting it below is safe
            items = [first] if first[2].set_running_or_notify_cancel() else []
            deadline = time.monotonic() + self.wait_s
            while len(items) < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                if item[2].set_running_or_notify_cancel():
                    items.append(item)
            if not items:
                continue
            started = time.perf_counter()
            try:
                results = self._run_batch(state, [b for b, *_ in items], [o for _, o, *_ in items])
            except BaseException as exc:  # a CUDA failure or a bug: every caller gets it (a 500, the reason)
                log.exception("GPU front end: batch failed")
                results = [exc] * len(items)
            for (_, _, fut, submitted), res in zip(items, results):
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    if isinstance(res, FrontResult):
                        res.queue_ms = (started - submitted) * 1000
                    fut.set_result(res)

    def _run_batch(
        self, state, bodies: list[bytes], oriented: list[bool], finish: bool = True
    ) -> list[FrontResult | RawFront | BaseException]:
        self.batches += 1
        raws = self._raw_batch(state, bodies, oriented)
        if self.raw:
            return raws
        out: list[FrontResult | BaseException | None] = [None] * len(bodies)
        live = []
        for k, r in enumerate(raws):
            if isinstance(r, BaseException):
                out[k] = r
            else:
                live.append(k)
                out[k] = FrontResult(r.image, self._detections(r), r.decode_ms, r.detect_ms)
        if finish and self.finish is not None and live:
            answers = self.finish([out[k].image for k in live], [out[k].detections for k in live])
            for k, answer in zip(live, answers):
                out[k].finished = answer
        return out  # type: ignore[return-value]

    def _detections(self, raw: RawFront) -> list[Detection]:
        """As Reconstructor._detect for stills: the full-range model's faces, else the short-range one's."""
        full, short = self.decoders
        found = full.decode(raw.full[0], raw.full[1], *raw.full[2])
        if found or raw.short is None:
            return found
        return short.decode(raw.short[0], raw.short[1], *raw.short[2])

    def _raw_batch(self, detectors: _Detectors, bodies: list[bytes], oriented: list[bool]) -> list:
        """Each body decoded and both detectors' raw outputs (the short-range one only where the full-range
        one finds nothing), or its error."""
        import torch

        out: list = [None] * len(bodies)
        stream = torch.cuda.stream(detectors.stream) if self.cuda else contextlib.nullcontext()
        with stream, torch.inference_mode():
            t0 = time.perf_counter()
            images = self._decode(bodies, oriented, out)
            t1 = time.perf_counter()  # nvJPEG's GPU work may still run: detect_ms counts what is left of it
            live = [k for k, im in enumerate(images) if im is not None]
            full: dict[int, RawDetector] = {}
            short: dict[int, RawDetector] = {}
            host: dict[int, np.ndarray] = {}
            if live:
                # the images and the full-range outputs come back in one wait (three waits before: each
                # a core spun or a late wake-up, 13-17 % of a replica's CPU samples on the H200)
                reg_d, logits_d, geometry = detectors.full_range.raw_batch_on_device(
                    [images[k] for k in live]
                )
                reg, logits = _host_copy(reg_d), _host_copy(logits_d)
                host = _to_host(images, live)
                self._wait(detectors.stream)
                reg_np, logits_np = reg.numpy(), logits.numpy()
                for i, k in enumerate(live):
                    full[k] = (reg_np[i], logits_np[i, :, 0], geometry[i])
                empty = [k for k in live if not self.decoders[0].finds_any(full[k][1])]
                if empty:  # rare in a service (a photo with no face near the camera): its own wait
                    reg_np, logits_np, geometry = detectors.short_range.raw_batch([images[k] for k in empty])
                    for i, k in enumerate(empty):
                        short[k] = (reg_np[i], logits_np[i, :, 0], geometry[i])
            t2 = time.perf_counter()
        decode_ms, detect_ms = (t1 - t0) * 1000, (t2 - t1) * 1000
        for k in live:
            out[k] = RawFront(host[k], full[k], short.get(k), decode_ms, detect_ms)
        return out

    def _decode(self, bodies: list[bytes], oriented: list[bool], out: list) -> list:
        """(3, H, W) uint8 CUDA tensors (None where ``out`` got the error instead). nvJPEG ignores EXIF
        orientation: such JPEGs go to OpenCV, which applies it (as the CPU path does)."""
        import torch

        images: list = [None] * len(bodies)
        jpegs = [
            k for k, b in enumerate(bodies) if self.cuda and b.startswith(JPEG_MAGIC) and not oriented[k]
        ]
        if jpegs:
            from torchvision.io import ImageReadMode, decode_jpeg

            with warnings.catch_warnings():  # bytes are read-only; decode_jpeg only reads them
                warnings.simplefilter("ignore", UserWarning)
                data = [torch.frombuffer(bodies[k], dtype=torch.uint8) for k in jpegs]
            try:
                decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
            except RuntimeError:  # one bad file fails nvJPEG's batch: then each on its own
                decoded = []
                for d in data:
                    try:
                        decoded.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=self.device))
                    except RuntimeError:
                        decoded.append(None)
            for k, img in zip(jpegs, decoded):
                images[k] = img
        for k, body in enumerate(bodies):
            if images[k] is not None:
                continue
            try:  # PNG, or a JPEG nvJPEG could not decode: OpenCV (its error is the request's 400)
                rgb = decode_rgb(body)
            except HttpError as exc:
                out[k] = exc
                continue
            images[k] = torch.from_numpy(rgb).to(self.device, non_blocking=False).permute(2, 0, 1)
        return images

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            for thread in self._threads:
                thread.join(timeout=5)


class HostFrontEnd(GpuFrontEnd):
    """GpuFrontEnd whose decoding and detectors' networks run in the GPU's model host (``client``: a
    ModelHostClient whose host has a front end), batched there with every other replica's; this process
    decodes the detections and runs ``finish``, and needs no GPU context (nor torch)."""

    def __init__(self, client, **kwargs) -> None:
        self.client = client
        super().__init__(device="cpu", **kwargs)

    def _set_device(self, device: str) -> None:
        self.device, self.cuda = None, False

    def _worker_state(self):
        return None

    def _warm_up(self, state) -> None:
        """The host warmed its own up."""

    def _raw_batch(self, state, bodies: list[bytes], oriented: list[bool]) -> list:
        return self.client.front(bodies, oriented)


def front_poll_s() -> float:
    """Seconds between the GPU front end's checks for its batch's outputs: ``FACE3D_FRONT_WAIT=poll`` 0.1 ms,
    ``=spin`` 0 (a spinning wait); unset, it polls where CUDA waits should not spin (an MPS client or
    ``FACE3D_CUDA_WAIT=block``: inference.cuda.blocking_sync_requested) and spins elsewhere."""
    from face3d_live.inference.cuda import blocking_sync_requested

    wait = os.environ.get("FACE3D_FRONT_WAIT", "").strip().lower()
    if wait not in ("poll", "spin", ""):
        raise ValueError(f"FACE3D_FRONT_WAIT={wait!r}: use poll or spin")
    poll = wait == "poll" if wait else blocking_sync_requested()
    return 1e-4 if poll else 0.0


def front_poll_max_s() -> float:
    """The longest sleep between the front end's polls: ``FACE3D_FRONT_POLL_MAX_MS`` (default 0.8 ms; 0.1
    polls at a fixed 0.1 ms, as before stop 32)."""
    raw = os.environ.get("FACE3D_FRONT_POLL_MAX_MS", "").strip()
    try:
        ms = float(raw) if raw else 0.8
    except ValueError:
        ms = -1.0
    if not 0.0 <= ms <= 100.0:
        raise ValueError(f"FACE3D_FRONT_POLL_MAX_MS={raw!r}: use milliseconds between 0 and 100")
    return ms / 1000


def _to_host(images: list, live: list[int]) -> dict[int, np.ndarray]:
    """The (3, H, W) device images ``images[k]``, k in ``live``, as (H, W, 3) host arrays: one layout kernel
    and one copy per image size rather than per image. On CUDA the copies are only enqueued (into page-locked
    memory): the arrays are valid after the caller's wait on the current stream."""
    import torch

    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k in live:
        by_shape.setdefault(tuple(images[k].shape), []).append(k)
    host: dict[int, np.ndarray] = {}
    for members in by_shape.values():
        batch = _host_copy(torch.stack([images[k] for k in members]).permute(0, 2, 3, 1).contiguous())
        host.update(zip(members, batch.numpy()))
    return host


def _host_copy(tensor):
    """A host copy of ``tensor``; from CUDA an asynchronous one into page-locked memory (torch's caching host
    allocator keeps it until the copy is done), valid once the current stream is waited for."""
    import torch

    if tensor.device.type != "cuda":
        return tensor
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    return host
