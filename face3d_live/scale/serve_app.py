"""The Ray Serve service: ``face3d-live serve``.

Deployments (sizes: ``placement.plan_replicas``):

- ``Api`` (the HTTP ingress, FastAPI): checks the request, decodes the image, runs the facade (detect, crop,
  decode, expression) on a thread pool. By default (``model_replicas`` None or 0) every replica loads its
  own model (on its share of the GPUs) and batches its own concurrent requests (``AsyncBatcher``): no
  deployment call per model pass (a still makes two) and no crops serialised between processes. Autoscaled
  from one replica on CPUs; a fixed set on GPUs.
- ``FaceModelServer`` (only with ``model_replicas`` ≥ 1): ``@serve.batch`` gathers the crops of every HTTP
  replica's concurrent requests (batched by crop count) into the multi-stream executor (``ModelRunner``);
  the HTTP replicas' facade then holds a proxy that sends it the crops.
- ``ModelHost`` (only with ``model_host`` "model" or "all"; "auto", the default, is "model" where the
  replicas are MPS clients decoding on a GPU): ``hosts_per_gpu`` per GPU (one without GPUs) hold the model
  for the HTTP replicas beside them, which send them their crops through shared memory (``scale.model_host``);
  with "all" it also decodes their JPEGs and runs the detectors' networks.
- ``MetricsHub``: the Prometheus registry every replica reports to; ``GET /metrics`` renders it.

Overload: each HTTP replica takes ``max_ongoing`` requests and every caller queues at most ``max_queued``;
beyond that Serve answers 503 with ``Retry-After``. Nothing queues without bound.
"""

import asyncio
import contextlib
import logging
import queue
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve
from ray.serve.exceptions import BackPressureError

from face3d_live import __version__
from face3d_live.errors import ConfigError, ModelError
from face3d_live.scale.cluster import cluster_info, gpu_node_cpus, root_cause
from face3d_live.scale.config import FIRST_PASS_HERE, ServeConfig
from face3d_live.scale.http_api import (
    HttpError,
    check_api_key,
    check_content_type,
    check_length,
    decode_image,
    encode_json,
    error_body,
    face_payload,
    too_large,
)
from face3d_live.scale.metrics import FLUSH_S, MetricsBuffer
from face3d_live.scale.model_host import ModelHostClient
from face3d_live.scale.placement import ReplicaPlan, local_gpu_memory_gib, plan_replicas, resolve_model_host

log = logging.getLogger(__name__)

_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "the image itself (not a form): JPEG or PNG, as the Content-Type says",
        "content": {
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_ERRORS = {
    400: {"description": "empty body, not a JPEG/PNG, or one that does not decode"},
    401: {"description": "API key missing or wrong (when the service has one)"},
    413: {"description": "body or image over the configured limit"},
    415: {"description": "content type not image/jpeg or image/png"},
    503: {"description": "overloaded: retry after the Retry-After header's seconds"},
}
_FACES_EXAMPLE = {
    "faces": [
        {
            "bbox": [210.5, 80.2, 330.1, 230.7],
            "score": 0.998,
            "vertices": [[251.2, 120.4, -12.3], "… 468 [x, y, z] in image pixels"],
            "landmarks68": [[215.0, 140.2, 3.1], "… 68 iBUG-68 points (3D convention)"],
            "pose": {
                "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                "translation": [270.3, 155.0, 0.0],
                "scale": 13.2,
                "yaw_pitch_roll_deg": [4.1, -2.0, 0.5],
            },
            "blendshapes": {"eyeBlinkLeft": 0.02, "…": "52 ARKit names"},
        }
    ],
    "model": "r50",
    "image": {"width": 640, "height": 480},
    "timing_ms": {"read": 1.2, "detect": 3.1, "crop": 0.3, "infer": 2.5, "total": 9.8},
}

api = FastAPI(
    title="face3d-live",
    version=__version__,
    description="3D face reconstruction from photos: POST a JPEG or PNG, get every face's 468-vertex mesh, "
    "68 landmarks, head pose and ARKit blendshapes (/v1/reconstruct), or a textured GLB of the largest face "
    "(/v1/avatar). Send the image as the request body with its Content-Type. With an API key configured, "
    "add 'Authorization: Bearer KEY' or 'X-API-Key: KEY'.",
)


def observe_batch(buffer: MetricsBuffer, requests: int, crops: int, seconds: float) -> None:
    """One model batch into the metrics: requests and crops in it, seconds from submit to result."""
    buffer.observe("face3d_batch_requests", ("model",), requests)
    buffer.observe("face3d_batch_crops", ("model",), crops)
    buffer.observe("face3d_batch_latency_seconds", ("model",), seconds)


class _HandleModel:
    """The FaceModel protocol for the facade inside an HTTP replica: ``predict`` (called on a pool thread)
    runs the model deployment call on the replica's event loop and waits for it."""

    def __init__(self, handle, loop: asyncio.AbstractEventLoop, info: dict) -> None:
        self.handle, self.loop = handle, loop
        self.name = info["name"]
        self.input_size = int(info["input_size"])

    def predict(self, crops: np.ndarray):
        return asyncio.run_coroutine_threadsafe(self._call(crops), self.loop).result()

    async def _call(self, crops: np.ndarray):
        return await self.handle.predict.remote(crops)

    def close(self) -> None:
        """The model deployment outlives the proxy."""


class _LocalModel:
    """The FaceModel protocol inside an HTTP replica that owns its model (``model_replicas=0``): ``predict``
    (a pool thread) joins the replica's batcher on its event loop, so concurrent requests share batches."""

    def __init__(self, config: ServeConfig, model: str, loop: asyncio.AbstractEventLoop, buffer) -> None:
        from face3d_live.models.registry import create_model
        from face3d_live.scale.model_runner import AsyncBatcher, ModelRunner

        self.loop, self.buffer = loop, buffer
        self.runner = ModelRunner(
            create_model(model, config.model.backend), streams=config.streams, max_batch=config.max_batch
        )
        self.name, self.input_size = self.runner.name, self.runner.input_size
        self.batcher = AsyncBatcher(
            self.runner,
            max_batch=config.max_batch,
            wait_s=config.batch_wait_ms / 1000.0,
            max_in_flight=config.max_concurrent_batches,
            on_batch=self._observe,
        )

    def _observe(self, requests: int, crops: int, seconds: float) -> None:
        observe_batch(self.buffer, requests, crops, seconds)

    def predict(self, crops: np.ndarray):
        return asyncio.run_coroutine_threadsafe(self.batcher.predict(crops), self.loop).result()

    def close(self) -> None:
        """The replica's pooled Reconstructors borrow it; the replica closes it (``Api.__del__``)."""


class _DirectModel:
    """The FaceModel protocol for the GPU front end's batch threads (``gpu_decode``): their batches, already
    gathered from the replica's concurrent requests, go straight to the model runner (or the GPU's model
    host) and the thread waits, without the event loop's batcher (its gathering window, up to
    ``batch_wait_ms``, and two more thread hand-overs, twice a request: both passes). ``buffer``: where the
    model batches are observed (None: the model host observes its own)."""

    def __init__(self, model, buffer) -> None:
        self.model, self.buffer = model, buffer
        self.name, self.input_size = model.name, model.input_size

    def predict(self, crops: np.ndarray):
        t0 = time.perf_counter()
        out = self.model.predict(crops)
        if self.buffer is not None:
            observe_batch(self.buffer, 1, len(crops), time.perf_counter() - t0)
        return out

    def close(self) -> None:
        """The replica closes the runner (``Api.__del__``)."""


class _Reporter:
    """Flushes a replica's MetricsBuffer to the hub every FLUSH_S seconds (a timer, started on first use)."""

    def __init__(self, hub, before_flush=None) -> None:
        self.hub = hub
        self.buffer = MetricsBuffer()
        self.before_flush = before_flush
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            await self.flush()

    async def flush(self) -> None:
        if self.before_flush is not None:
            self.before_flush(self.buffer)
        delta = self.buffer.take()
        if delta is not None:
            try:
                await self.hub.add.remote(delta)
            except Exception as exc:  # the hub restarting: these numbers are lost, the service is not
                log.warning("metrics not delivered: %s", exc)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
class MetricsHub:
    def __init__(self) -> None:
        from face3d_live.scale.metrics import MetricsStore

        self.store = MetricsStore()

    async def add(self, delta: dict) -> None:
        self.store.apply(delta)

    async def render(self) -> bytes:
        return self.store.render()


@serve.deployment
class FaceModelServer:
    """One face model; ``predict(crops)`` calls from all HTTP replicas are batched into the executor."""

    def __init__(self, config: ServeConfig, model: str, hub) -> None:
        import ray

        from face3d_live.models.registry import create_model
        from face3d_live.scale.metrics import GpuSampler
        from face3d_live.scale.model_runner import ModelRunner

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        from face3d_live.threads import limit_worker_threads

        limit_worker_threads()  # short GIL hand-offs between the loop, submit and collect threads
        self.runner = ModelRunner(
            create_model(model, config.model.backend), streams=config.streams, max_batch=config.max_batch
        )
        self.gpus = GpuSampler(ray.get_gpu_ids())
        self.reporter = _Reporter(hub, before_flush=self.gpus.sample)
        # the batch handler is made here so that the configuration sets its size, wait and concurrency
        self._batched = serve.batch(
            max_batch_size=min(config.max_batch, self.runner.max_batch * config.streams),
            batch_wait_timeout_s=config.batch_wait_ms / 1000.0,
            max_concurrent_batches=config.max_concurrent_batches,
            batch_size_fn=lambda items: sum(len(c) for c in items),
        )(self._predict_batch)

    async def info(self) -> dict:
        return {"name": self.runner.name, "input_size": self.runner.input_size, "label": self.runner.label}

    async def predict(self, crops: np.ndarray):
        self.reporter.start()
        return await self._batched(crops)

    async def _predict_batch(self, crops_list: list[np.ndarray]) -> list:
        from face3d_live.scale.model_runner import join_crops, split_output

        sizes = [len(c) for c in crops_list]
        t0 = time.perf_counter()
        batch = join_crops(crops_list)
        out = await asyncio.wrap_future(self.runner.submit(batch))
        observe_batch(self.reporter.buffer, len(crops_list), sum(sizes), time.perf_counter() - t0)
        return split_output(out, sizes)

    def __del__(self) -> None:
        runner = getattr(self, "runner", None)
        if runner is not None:
            runner.close()
            self.gpus.close()


@serve.deployment
class ModelHost:
    """One GPU's model for every HTTP replica there (``scale.model_host``): they reach it through a Unix
    socket named by ``token``, the GPU and a slot (``hosts_per_gpu`` hosts per GPU take one each), and its
    batches hold the crops of all of them."""

    def __init__(self, config: ServeConfig, model: str, hub, token: str) -> None:
        import ray

        from face3d_live.models.registry import create_model
        from face3d_live.scale.gpu_front import GpuFrontEnd, gpu_front_available
        from face3d_live.scale.model_host import ModelHostServer, gpu_host_paths
        from face3d_live.scale.model_runner import ModelRunner
        from face3d_live.threads import limit_worker_threads

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        limit_worker_threads()
        gpus = ray.get_gpu_ids()
        self.runner = ModelRunner(
            create_model(model, config.model.backend), streams=config.streams, max_batch=config.max_batch
        )
        self.reporter = _Reporter(hub)
        self.front = None
        if config.model_host == "all" and config.gpu_decode != "off" and gpu_front_available() is None:
            # every replica's JPEGs decoded and detectors run here, in batches across all of them
            self.front = GpuFrontEnd(max_batch=16, workers=config.gpu_batch_threads, raw=True)
        # the GPU's slots first; the spare ones only where Ray put more hosts on this GPU than asked
        spare = 8
        slots = gpu_host_paths(token, gpus, config.hosts_per_gpu, spare=spare)
        self.server = ModelHostServer(
            self.runner,
            slots,
            in_flight=config.streams,
            on_batch=lambda r, c, s: observe_batch(self.reporter.buffer, r, c, s),
            front=self.front,
            # one request's largest body and image, and the detectors' outputs (sparse: only what is used)
            front_bytes=config.max_body_bytes + 3 * config.max_pixels + (1 << 20),
        )
        if self.server.path in slots[-spare:]:
            log.warning("model host: more hosts on this GPU than --hosts-per-gpu: this one takes no calls")
        log.info(
            "model host: %s on %s%s",
            self.runner.label,
            self.server.path,
            ", with JPEG decoding and detection" if self.front else "",
        )

    async def ready(self) -> str:
        """This host's node (a replica on another node looks only briefly for a host of its own)."""
        import ray

        self.reporter.start()
        return ray.get_runtime_context().get_node_id()

    def __del__(self) -> None:
        if getattr(self, "server", None) is not None:
            self.server.close()
            if self.front is not None:
                self.front.close()
            self.runner.close()


@serve.deployment
@serve.ingress(api)
class Api:
    async def __init__(
        self, config: ServeConfig, model_handle, hub, model: str, host=None, host_token: str = ""
    ) -> None:
        """``model_handle``: the model deployment, or None to load ``model`` in this replica (here, before
        the replica reports ready: Serve routes nothing to it while it loads and captures its graphs) or, with
        ``host`` (the ModelHost deployment), to use the model host on this replica's GPU."""
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        from face3d_live.threads import limit_worker_threads

        limit_worker_threads()  # OpenCV sized to this replica's CPU share: many replicas share the cores
        self.config = config
        self.model = model_handle
        self.model_name = model
        self.hub = hub
        self.host, self.host_token = host, host_token
        self.gpus = None
        if model_handle is None:  # its own model: it also reports its GPUs' state
            import ray

            from face3d_live.scale.metrics import GpuSampler

            self.gpus = GpuSampler(ray.get_gpu_ids())
        self.reporter = _Reporter(hub, before_flush=self.gpus.sample if self.gpus else None)
        self.pool = ThreadPoolExecutor(config.threads_per_replica, thread_name_prefix="reconstruct")
        # Reconstructors not in use (one per thread at most)
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._proxy: _HandleModel | _LocalModel | ModelHostClient | None = None
        self._first: _LocalModel | None = None  # --first-pass: the model that places the final crops
        self._front = None  # GpuFrontEnd: decoding and detection on this replica's GPU (gpu_decode)
        self._setup_lock = asyncio.Lock()
        if model_handle is None:
            await self._setup()

    # ---- endpoints ----------------------------------------------------------------------------------
    @api.post(
        "/v1/reconstruct",
        summary="Reconstruct every face in a photo",
        openapi_extra=_IMAGE_BODY,
        responses={200: {"content": {"application/json": {"example": _FACES_EXAMPLE}}}, **_ERRORS},
        response_class=Response,
    )
    async def reconstruct(self, request: Request, blendshapes: bool = True) -> Response:
        """Faces, largest first: box, presence score, 468 mesh vertices and 68 landmarks in image pixels,
        head pose, ARKit-52 blendshapes (``blendshapes=false`` leaves them out). No face: ``faces`` is []."""
        return await self._handle("reconstruct", request, self._reconstruct_json, blendshapes, inline=True)

    @api.post(
        "/v1/avatar",
        summary="A textured GLB head of the largest face",
        openapi_extra=_IMAGE_BODY,
        responses={
            200: {"content": {"model/gltf-binary": {}}, "description": "binary glTF"},
            422: {"description": "no face in the image"},
            **_ERRORS,
        },
        response_class=Response,
    )
    async def avatar(self, request: Request) -> Response:
        """The largest face's mesh with the photo baked into its UV texture, as binary glTF (GLB)."""
        return await self._handle("avatar", request, self._avatar_glb, None)

    @api.get("/healthz", summary="Liveness and readiness")
    async def healthz(self) -> Response:
        try:
            await self._setup()
        except Exception as exc:  # the model deployment is not up (yet)
            return Response(error_body(f"model not ready: {exc}"), 503, media_type="application/json")
        body = {
            "status": "ok",
            "model": self._proxy.name,
            "api_key": self.config.api_key is not None,
            "model_host": isinstance(self._proxy, ModelHostClient),  # its model calls go to a model host
            "first_pass": self._first.name if self._first is not None else None,  # --first-pass
            "passes": self.config.model.passes,  # --passes: model calls a photo
        }
        return Response(encode_json(body), media_type="application/json")

    @api.get("/metrics", summary="Prometheus metrics of all replicas")
    async def metrics(self) -> Response:
        self.reporter.start()
        await self.reporter.flush()
        text = await self.hub.render.remote()
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    # ---- request flow -----------------------------------------------------------------------------
    async def _handle(self, endpoint: str, request: Request, work, arg, inline: bool = False) -> Response:
        """``work(image, faces, arg, timings, t0) -> (Response, faces)`` answers from the faces; ``inline``: it
        is cheap enough for the event loop (the JSON answer) where the GPU front end did the rest."""
        self.reporter.start()
        t0 = time.perf_counter()
        m = self.reporter.buffer
        try:
            h = request.headers
            check_api_key(self.config.api_key, h.get("authorization"), h.get("x-api-key"))
            check_content_type(h.get("content-type"))
            check_length(h.get("content-length"), self.config.max_body_bytes)
            body = await self._read_body(request)
            await self._setup()
            if self._front is not None:
                response, faces = await self._run_on_front(work, body, arg, t0, inline)
            else:
                loop = asyncio.get_running_loop()
                response, faces = await loop.run_in_executor(self.pool, self._run, work, body, arg, t0)
            m.inc("face3d_faces", (endpoint,), faces)
        except HttpError as exc:
            response = Response(
                error_body(exc.reason), exc.status, exc.headers, media_type="application/json"
            )
            m.inc("face3d_request_errors", (endpoint, exc.kind))
        except BackPressureError:
            retry = {"Retry-After": str(max(1, round(self.config.retry_after_s)))}
            response = Response(
                error_body("overloaded: retry later"), 503, retry, media_type="application/json"
            )
            m.inc("face3d_request_errors", (endpoint, "overloaded"))
        except Exception as exc:  # a bug or a dead model replica: a 500 with the reason, never a crash
            log.exception("%s failed", endpoint)
            reason = f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            response = Response(error_body(reason), 500, media_type="application/json")
            m.inc("face3d_request_errors", (endpoint, "internal"))
        m.inc("face3d_requests", (endpoint, str(response.status_code)))
        m.observe("face3d_request_latency_seconds", (endpoint,), time.perf_counter() - t0)
        return response

    async def _read_body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        chunks, n = [], 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > limit:
                raise too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _setup(self) -> None:
        if self._proxy is not None:
            return
        async with self._setup_lock:
            if self._proxy is None and self.model is None:
                loop = asyncio.get_running_loop()
                if self.host is not None:
                    import ray

                    # a host is up (this GPU's, or another's: then one for this GPU may still be starting)
                    node = await self.host.ready.remote()
                    here = node == ray.get_runtime_context().get_node_id()
                    self._proxy = await loop.run_in_executor(
                        self.pool, self._host_client, 60.0 if here else 5.0
                    )
                if self._proxy is None:
                    # loading takes a while: off the event loop (Serve health checks go on meanwhile)
                    self._proxy = await loop.run_in_executor(
                        self.pool, _LocalModel, self.config, self.model_name, loop, self.reporter.buffer
                    )
                if self.config.model.first_pass:
                    try:
                        self._first = await loop.run_in_executor(self.pool, self._first_pass_model, loop)
                    except BaseException:  # no replica without the pass it was asked for: set up again
                        if isinstance(self._proxy, _LocalModel):
                            self._proxy.runner.close()
                        self._proxy = None
                        raise
                self._front = await loop.run_in_executor(self.pool, self._gpu_front)
            elif self._proxy is None:
                info = await self.model.info.remote()
                self._proxy = _HandleModel(self.model, asyncio.get_running_loop(), info)

    def _first_pass_model(self, loop: asyncio.AbstractEventLoop) -> _LocalModel:
        """The replica's first-pass model (``--first-pass``), beside its own model, batched the same way."""
        if not isinstance(self._proxy, _LocalModel):
            raise ConfigError(FIRST_PASS_HERE)
        from face3d_live.reconstructor import pair_first_pass

        first = _LocalModel(self.config, self.config.model.first_pass, loop, self.reporter.buffer)
        try:
            pair_first_pass(self._proxy.runner.model, first.runner.model)
        except ConfigError:
            first.runner.close()
            raise
        return first

    def _host_client(self, wait_s: float = 60.0) -> ModelHostClient | None:
        """A client of the model host on this replica's GPU, or None (the replica loads its own model) where
        none comes up within ``wait_s`` (on a machine of several GPUs the hosts may share one)."""
        import ray

        from face3d_live.scale.model_host import gpu_host_paths

        paths = gpu_host_paths(self.host_token, ray.get_gpu_ids(), self.config.hosts_per_gpu)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                client = ModelHostClient(paths)
                log.info("model calls go to the GPU's model host(s) (%s)", ", ".join(paths))
                return client
            except ModelError as exc:
                if time.monotonic() > deadline:
                    log.warning("no model host on this replica's GPU (%s): loading its own model", exc)
                    return None
            time.sleep(0.5)

    def _gpu_front(self):
        """The replica's GpuFrontEnd when ``gpu_decode`` wants one and it can run here (else None)."""
        mode = self.config.gpu_decode
        if mode == "off":
            return None
        if isinstance(self._proxy, ModelHostClient) and self._proxy.front_bytes:
            from face3d_live.scale.gpu_front import HostFrontEnd

            log.info("JPEG decoding and detection in the GPU's model host, batched reconstruction here")
            return HostFrontEnd(
                self._proxy,
                max_batch=self.config.threads_per_replica,
                workers=self.config.gpu_batch_threads,
                finish=self._reconstruct_batch,
            )
        import ray

        from face3d_live.scale.gpu_front import GpuFrontEnd, gpu_front_available
        from face3d_live.scale.mps import mps_client

        why = "this replica has no GPU" if not ray.get_gpu_ids() else gpu_front_available()
        if why is None and mode == "auto" and not mps_client():
            # measured: ten replicas' contexts time-slicing one H200 served less with it than without
            why = "not an MPS client (--mps): the replicas' GPU contexts would time-slice"
        if why is None:
            front = GpuFrontEnd(
                max_batch=self.config.threads_per_replica,
                workers=self.config.gpu_batch_threads,
                finish=self._reconstruct_batch,
            )
            log.info(
                "JPEG decoding and detection on the GPU (nvJPEG, BlazeFace in torch), batched reconstruction"
            )
            return front
        if mode == "on":
            raise ConfigError(f"--gpu-decode on: {why}")
        log.info("JPEG decoding and detection on the CPU: %s", why)
        return None

    async def _run_on_front(self, work, body: bytes, arg, t0: float, inline: bool) -> tuple[Response, int]:
        """The whole reconstruction on a GPU batch thread with the replica's concurrent requests, handed over
        from the event loop and back without a pool thread in between (each hop is a wake-up and a GIL
        hand-over; the pool takes only slow answers, the GLB)."""
        submitted = time.perf_counter()
        front = await asyncio.wrap_future(self._front.submit(body, self.config.max_pixels))
        faces, timings = front.finished
        timings = {
            # where a request's time goes under load (bench serve --stage-probe): before the batch thread
            # took it, and until its answer was back on this event loop
            "front_queue": round(front.queue_ms, 3),
            "front_wait": round((time.perf_counter() - submitted) * 1000, 3),
            "gpu_decode_batch": round(front.decode_ms, 3),
            "gpu_detect_batch": round(front.detect_ms, 3),
            **timings,
        }
        if inline:
            return work(front.image, faces, arg, timings, t0)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, work, front.image, faces, arg, timings, t0)

    def _run(self, work, body: bytes, arg, t0: float) -> tuple[Response, int]:
        """Pool thread (no GPU front end): decode, reconstruct (the model call goes to the model deployment
        where there is one), answer."""
        t_read = time.perf_counter()
        pool_queue_ms = (t_read - t0) * 1000  # reading the body, then waiting for a pool thread
        image = decode_image(body, self.config.max_pixels)
        read_ms = (time.perf_counter() - t_read) * 1000
        rec = self._borrow()
        try:
            faces = rec.reconstruct(image)
            timings = {k: round(v / 1e6, 3) for k, v in rec.timings_ns.items() if v}
        finally:
            self._idle.put(rec)
        return work(
            image,
            faces,
            arg,
            {"pool_queue": round(pool_queue_ms, 3), "read": round(read_ms, 3), **timings},
            t0,
        )

    def _reconstruct_batch(self, images: list[np.ndarray], detections: list) -> list[tuple[list, dict]]:
        """The GPU front end's finish step: every image's faces, and the batch's stage times (``_batch`` ms)."""
        rec = self._borrow()
        try:
            per_image = rec.reconstruct_batch(images, detections)
            timings = {f"{k}_batch": round(v / 1e6, 3) for k, v in rec.timings_ns.items() if v}
        finally:
            self._idle.put(rec)
        return [(faces, timings) for faces in per_image]

    def _borrow(self):
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            # the front end's batch threads are the only callers where there is one (_run_on_front); the
            # model is the replica's own (_LocalModel) or the model host's (it observes its own batches)
            model, first = self._proxy, self._first
            if self._front is not None:
                local = isinstance(model, _LocalModel)
                model = _DirectModel(model.runner, model.buffer) if local else _DirectModel(model, None)
                first = _DirectModel(first.runner, first.buffer) if first is not None else None
            return self.config.model.reconstructor(model, still=True, first=first)

    def __del__(self) -> None:
        if getattr(self, "_front", None) is not None:
            self._front.close()
        proxy = getattr(self, "_proxy", None)
        if isinstance(proxy, _LocalModel):
            proxy.runner.close()
        elif isinstance(proxy, ModelHostClient):
            proxy.close()
        if getattr(self, "_first", None) is not None:
            self._first.runner.close()
        if getattr(self, "gpus", None) is not None:
            self.gpus.close()

    def _reconstruct_json(self, image, faces, blendshapes: bool, timing: dict, t0: float):
        payload = {
            "faces": [face_payload(f, blendshapes) for f in faces],
            "model": self._proxy.name,
            "image": {"width": int(image.shape[1]), "height": int(image.shape[0])},
            "timing_ms": {**timing, "total": round((time.perf_counter() - t0) * 1000, 3)},
        }
        return Response(encode_json(payload), media_type="application/json"), len(faces)

    def _avatar_glb(self, image, faces, _, timing: dict, t0: float):
        from face3d_live.scale.avatar import avatar_glb

        if not faces:
            raise HttpError(422, "no face found in the image: nothing to build an avatar from")
        glb = avatar_glb(image, faces[0], self.config.avatar_texture_size)
        headers = {"X-Timing-Ms": f"{(time.perf_counter() - t0) * 1000:.1f}"}
        return Response(glb, headers=headers, media_type="model/gltf-binary"), 1


# ---- building and running -------------------------------------------------------------------------------
# a stopping replica finishes its requests for up to 10 s (Serve's default waits 20 s, polling every 2 s);
# no access log line per request and per model call (our own metrics count them; the log cost CPU per call)
_SHUTDOWN = {
    "graceful_shutdown_wait_loop_s": 0.5,
    "graceful_shutdown_timeout_s": 10.0,
    "logging_config": {"enable_access_log": False},
}


def build_app(config: ServeConfig, model: str, plan: ReplicaPlan):
    """The application graph for a replica plan (``placement.plan_replicas``: the cluster's CPUs and GPUs)."""
    hub = MetricsHub.options(**_SHUTDOWN).bind()
    model_server = host = None
    token = secrets.token_hex(4)  # this service's model host sockets
    if plan.model_hosts:
        host = ModelHost.options(
            **_SHUTDOWN,
            num_replicas=plan.model_hosts,
            ray_actor_options={"num_cpus": config.model_cpus, "num_gpus": plan.gpus_per_model},
        ).bind(config, model, hub, token)
    if not plan.embedded:
        model_server = FaceModelServer.options(
            **_SHUTDOWN,
            ray_actor_options={"num_cpus": config.model_cpus, "num_gpus": plan.gpus_per_model},
            autoscaling_config={
                "min_replicas": 1,
                "max_replicas": plan.model_replicas,
                "target_ongoing_requests": max(config.max_batch, 8),
            },
            # many requests in flight per replica are what make its batches: bound them generously
            max_ongoing_requests=max(64, 4 * config.max_batch * config.max_concurrent_batches),
            max_queued_requests=config.max_queued,
            backpressure_config={"status_code": 503, "retry_after_s": config.retry_after_s},
        ).bind(config, model, hub)
    return Api.options(
        **_SHUTDOWN,
        ray_actor_options={"num_cpus": config.ingress_cpus, "num_gpus": plan.gpus_per_http},
        autoscaling_config={
            "min_replicas": plan.min_http,
            "max_replicas": plan.max_http,
            "target_ongoing_requests": config.target_ongoing,
        },
        max_ongoing_requests=config.max_ongoing,
        max_queued_requests=config.max_queued,
        backpressure_config={"status_code": 503, "retry_after_s": config.retry_after_s},
    ).bind(config, model_server, hub, model, host, token)


def service_plan(config: ServeConfig) -> ReplicaPlan:
    """The replicas ``start_service`` deploys on the connected Ray cluster."""
    info = cluster_info()
    if not info.gpus:  # a host shares one model between the replicas (decoding stays in them)
        mode, hosts = resolve_model_host(config, 0.0, False)
        config = replace(config, model_host=mode, hosts_per_gpu=hosts)
        return plan_replicas(config, info.cpus, 0.0, model_host=mode != "off")
    from face3d_live.scale.model_host import model_host_available
    from face3d_live.scale.mps import mps_client

    # MPS here (serve's private daemon or the node's own) and GPU decoding: replicas no longer time-slice
    shared = mps_client() and config.gpu_decode != "off"
    why = model_host_available() if config.model_host != "off" else None
    explicit = config.model_host
    mode, hosts = resolve_model_host(config, info.gpus, shared, why)
    config = replace(config, model_host=mode, hosts_per_gpu=hosts)
    if mode != "off" and explicit != "auto":  # auto picks a host only where it can run
        if config.model_replicas:
            why = "not with --model-replicas (the model deployment takes the crops)"
        elif mode == "model" and not shared:
            why = "the replicas are not MPS clients decoding on the GPU (or use --model-host all)"
        if why:
            raise ConfigError(f"--model-host {mode}: {why}")
        # "all": the host does all the GPU work, the replicas hold no GPU context: one per CPU
        shared = True
    return plan_replicas(
        config,
        info.cpus,
        info.gpus,
        local_gpu_memory_gib(),
        gpu_node_cpus(),
        shared,
        model_host=mode != "off",
    )


def start_service(config: ServeConfig, plan: ReplicaPlan | None = None) -> str:
    """Deploy on the connected Ray cluster (``plan``: ``service_plan(config)`` if the caller has not made
    it); returns the base URL once the application is ready."""
    info = cluster_info()
    model = config.model.resolved(info.gpus)
    plan = plan or service_plan(config)
    # --model-host auto and --hosts-per-gpu as the plan resolved them, for the replicas and hosts
    config = replace(config, model_host=plan.model_host, hosts_per_gpu=plan.hosts_per_gpu)
    log.info("service replicas: %s", plan.describe())
    serve.start(http_options={"host": config.host, "port": config.port})
    try:
        serve.run(build_app(config, model, plan), name=config.app_name, route_prefix="/")
    except RuntimeError as exc:  # a replica's constructor failed (its model did not load): say why, in a line
        reason = _deploy_failure(config.app_name) or str(exc)
        with contextlib.suppress(Exception):
            serve.delete(config.app_name)
        raise ModelError(f"the service did not start: {reason}") from None
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    return f"http://{host}:{config.port}"


def _deploy_failure(app_name: str) -> str | None:
    """The last exception line in Serve's status message of a failed deployment of ``app_name``."""
    try:
        app = serve.status().applications.get(app_name)
    except Exception:
        return None
    for dep in (app.deployments if app else {}).values():
        cause = root_cause(dep.message or "")
        if cause:
            return cause
    return None


def stop_service() -> None:
    serve.shutdown()
