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

nvJPEG and libjpeg-turbo (OpenCV) round the IDCT and the chroma upsampling differently, so pixels differ by a
few grey levels and the mesh by a fraction of a pixel (tests/test_gpu_front.py, on a GPU).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from face3d_live.detect.blazeface import Detection
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
    ) -> None:
        import torch

        self.device = torch.device(device)
        self.max_batch, self.wait_s, self.finish = max_batch, wait_s, finish
        self.cuda = self.device.type == "cuda"  # "cpu": the same batching, OpenCV decoding (tests)
        self.batches = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._threads = []
        for k in range(max(1, workers)):
            detectors = _Detectors(self.device, min_score, self.cuda)
            # the first batch builds nvJPEG's handles and the detectors' kernels: not in a request's time
            self._warm_up(detectors)
            thread = threading.Thread(
                target=self._loop, args=(detectors,), name=f"gpu-front-{k}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

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
        if self._closed:
            raise RuntimeError("the GPU front end is closed")
        fut: Future = Future()
        self._queue.put((body, oriented, fut))
        return fut

    # ---- the batch threads --------------------------------------------------------------------------
    def _loop(self, detectors: _Detectors) -> None:
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
            try:
                results = self._run_batch(detectors, [b for b, _, _ in items], [o for _, o, _ in items])
            except BaseException as exc:  # a CUDA failure or a bug: every caller gets it (a 500, the reason)
                log.exception("GPU front end: batch failed")
                results = [exc] * len(items)
            for (_, _, fut), res in zip(items, results):
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    def _run_batch(
        self, detectors: _Detectors, bodies: list[bytes], oriented: list[bool], finish: bool = True
    ) -> list[FrontResult | BaseException]:
        import torch

        self.batches += 1
        out: list[FrontResult | BaseException | None] = [None] * len(bodies)
        stream = torch.cuda.stream(detectors.stream) if self.cuda else contextlib.nullcontext()
        with stream, torch.inference_mode():
            t0 = time.perf_counter()
            images = self._decode(bodies, oriented, out)
            if self.cuda:
                detectors.stream.synchronize()
            t1 = time.perf_counter()
            live = [k for k, im in enumerate(images) if im is not None]
            dets: dict[int, list[Detection]] = {}
            if live:
                for k, d in zip(live, detectors.full_range.detect_batch([images[k] for k in live])):
                    dets[k] = d
                # as Reconstructor._detect for stills: the short-range model where nothing was found
                empty = [k for k in live if not dets[k]]
                if empty:
                    for k, d in zip(empty, detectors.short_range.detect_batch([images[k] for k in empty])):
                        dets[k] = d
            host = _to_host(images, live)
            t2 = time.perf_counter()
        decode_ms, detect_ms = (t1 - t0) * 1000, (t2 - t1) * 1000
        answers = [None] * len(live)
        if finish and self.finish is not None and live:
            answers = self.finish([host[k] for k in live], [dets[k] for k in live])
        for k, answer in zip(live, answers):
            out[k] = FrontResult(host[k], dets[k], decode_ms, detect_ms, answer)
        return out  # type: ignore[return-value]

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


def _to_host(images: list, live: list[int]) -> dict[int, np.ndarray]:
    """The (3, H, W) device images ``images[k]``, k in ``live``, as (H, W, 3) host arrays: one layout kernel
    and one copy per image size rather than per image (each copy is a wait for the GPU)."""
    import torch

    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k in live:
        by_shape.setdefault(tuple(images[k].shape), []).append(k)
    host: dict[int, np.ndarray] = {}
    for members in by_shape.values():
        batch = torch.stack([images[k] for k in members]).permute(0, 2, 3, 1).contiguous().cpu().numpy()
        host.update(zip(members, batch))
    return host
