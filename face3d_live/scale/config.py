"""Typed options of the Ray job and the Ray Serve service (frozen dataclasses; only the CLI maps flags)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from face3d_live.detect.tracker import TrackerConfig
from face3d_live.errors import ConfigError
from face3d_live.geometry.one_euro import OneEuroConfig

# The service's photos take one model pass unless told otherwise: every service photo goes through the
# detector, and there one pass measured the same held-out error as two (README, Python API) for one model
# call a photo instead of two (H200: +25-29 % requests/s; the 2-core CPU: +38-46 %). `process` keeps two.
SERVICE_PASSES = 1


@dataclass(frozen=True)
class ModelOptions:
    """What ``process`` / ``record`` take as model flags (cli/options.py), as one value.

    model: None picks r50 where the cluster has a GPU, else r50-int8 (resolved once, by the driver).
    """

    model: str | None = None
    backend: str = "auto"
    max_faces: int = 4
    redetect_every: int = 30
    smooth: bool = True
    min_cutoff: float = OneEuroConfig.min_cutoff
    beta: float = OneEuroConfig.beta
    flip_stills: bool = True
    first_pass: str | None = None  # photos: the model that places the final crop (None: the model itself)
    passes: int = 2  # photos: 1 = the final pass straight from the detection (Reconstructor(passes=...))

    def __post_init__(self) -> None:
        if self.passes not in (1, 2):
            raise ConfigError(f"--passes must be 1 or 2, got {self.passes}")
        if self.passes == 1 and self.first_pass:
            raise ConfigError("--first-pass places the second pass's crop: it needs --passes 2")
        if self.max_faces < 1:
            raise ConfigError(f"--max-faces must be ≥ 1, got {self.max_faces}")
        if self.redetect_every < 0:
            raise ConfigError(f"--redetect-every must be ≥ 0, got {self.redetect_every}")

    def resolved(self, gpus: float) -> str:
        """The model name: ``model``, else r50 on a cluster with a GPU and r50-int8 without."""
        from face3d_live.models.registry import CPU_MODEL, DEFAULT_MODEL

        return self.model or (DEFAULT_MODEL if gpus >= 1 else CPU_MODEL)

    def tracker(self) -> TrackerConfig:
        return TrackerConfig(max_faces=self.max_faces, redetect_every=self.redetect_every)

    def smoothing(self, still: bool) -> OneEuroConfig | None:
        """None for stills or with --no-smooth."""
        if still or not self.smooth:
            return None
        return OneEuroConfig(min_cutoff=self.min_cutoff, beta=self.beta)

    def reconstructor(self, model, still: bool, first=None):
        """The Reconstructor these options configure (``process``, ``record``, ``stream``, the Ray workers)
        around ``model``: a name (loaded here, closed with the Reconstructor) or a loaded FaceModel (borrowed:
        its owner closes it; each task gets a fresh tracker, filters and detectors around it). ``first``: a
        loaded first-pass model to borrow (the service's replicas share one), else ``first_pass`` by name."""
        from face3d_live.reconstructor import Reconstructor

        return Reconstructor(
            model,
            self.backend,
            tracker=self.tracker(),
            smoothing=self.smoothing(still),
            flip_stills=self.flip_stills,
            first_pass=(first or self.first_pass) if still else None,  # video has no first pass
            passes=self.passes,
        )

    def photo_summary(self, still: bool) -> dict:
        """What a photo input's summary says of its passes beyond the defaults (``process`` and library jobs
        alike): the first-pass model, or one pass."""
        if not still:
            return {}
        return (
            {"first_pass": self.first_pass} if self.first_pass else {"passes": 1} if self.passes == 1 else {}
        )

    @classmethod
    def from_args(cls, args) -> ModelOptions:
        return cls(
            model=args.model,
            backend=args.backend,
            max_faces=args.max_faces,
            redetect_every=args.redetect_every,
            smooth=not args.no_smooth,
            min_cutoff=args.min_cutoff,
            beta=args.beta,
            flip_stills=not getattr(args, "no_flip", False),
            first_pass=getattr(args, "first_pass", None),
            passes=_passes(args),
        )


def _passes(args) -> int:
    """``--passes`` as given; unset (the service's default), one pass, two with ``--first-pass``."""
    passes = getattr(args, "passes", 2)
    if passes is None:
        return 2 if getattr(args, "first_pass", None) else SERVICE_PASSES
    return passes


@dataclass(frozen=True)
class BatchConfig:
    """A library job on Ray.

    max_frames:     per video (as ``process --max-frames``); photo sets: the first N files.
    obj / glb:      also write one OBJ per face and frame / a textured GLB (video: animated, as ``record``;
                    photo: one per image, its largest face). A video with ``glb`` is kept whole.
    chunk_frames:   split videos longer than 1.5 × this into chunks of this many frames, each started
                    ``chunk_overlap`` frames early so that tracking and smoothing have settled at its first
                    written frame (0 = keep every video whole: its tracking is exactly ``process``'s; None =
                    auto: whole while the job has a task for every worker, else chunks sized to give each worker
                    about two, never under ``AUTO_MIN_CHUNK`` frames: ``work.auto_chunk_frames``).
    photo_batch:    photos per task, gathered across all photo inputs.
    workers:        input workers (None: one per CPU of the cluster; owning GPU models: one per CPU of the GPU
                    nodes, within the GPU memory).
    model_actors:   None or 0 (default): every worker owns its model, on a share of the GPUs where there are
                    GPUs (one worker per CPU of the GPU nodes, within the GPU memory: batch.workers_owning_gpu),
                    else on its CPU; N: N model actors (on GPUs when there are, else on CPUs) take every
                    worker's crops, and the workers run on every node's CPUs.
    tasks_per_worker: tasks a worker runs at once, on threads (None: 4 with a GPU model, an actor's or the
                    worker's own, whose round trips they hide and whose batches they share; 1 when the worker
                    owns a CPU model).
    max_batch / batch_wait_ms / streams: the model actors' batching (crops per executor batch, how long
                    the first request of a batch waits for others, executor streams).
    ray_address:    "auto" (RAY_ADDRESS if set, else a local Ray instance) or a cluster address.
    num_cpus:       CPUs of a local Ray instance (None: all).
    """

    model: ModelOptions = field(default_factory=ModelOptions)
    max_frames: int | None = None
    obj: bool = False
    glb: bool = False
    chunk_frames: int | None = None
    chunk_overlap: int = 30
    photo_batch: int = 32
    workers: int | None = None
    model_actors: int | None = None
    tasks_per_worker: int | None = None
    max_batch: int = 64
    batch_wait_ms: float = 2.0
    streams: int = 2
    ray_address: str = "auto"
    num_cpus: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        checks = {
            "--max-frames": (self.max_frames, 1),
            "--chunk-frames": (self.chunk_frames, 0),
            "--chunk-overlap": (self.chunk_overlap, 0),
            "--photo-batch": (self.photo_batch, 1),
            "--workers": (self.workers, 1),
            "--model-actors": (self.model_actors, 0),
            "--tasks-per-worker": (self.tasks_per_worker, 1),
            "--max-batch": (self.max_batch, 1),
            "--streams": (self.streams, 1),
            "--num-cpus": (self.num_cpus, 1),
        }
        for flag, (value, low) in checks.items():
            if value is not None and value < low:
                raise ConfigError(f"{flag} must be ≥ {low}, got {value}")
        if self.batch_wait_ms < 0:
            raise ConfigError(f"--batch-wait-ms must be ≥ 0, got {self.batch_wait_ms}")

    def output_options(self, model_name: str) -> dict:
        """Everything that changes what is written for an input (part of the resume key)."""
        m = asdict(self.model)
        m["model"] = model_name
        if m["passes"] == 2:  # the default, as before the option existed: earlier jobs' keys still match
            del m["passes"]
        return {
            "model": m,
            "max_frames": self.max_frames,
            "obj": self.obj,
            "glb": self.glb,
            # auto: the chunks follow the cluster's size; any chunking gives a valid output, so one key for all
            "chunk_frames": "auto" if self.chunk_frames is None else self.chunk_frames,
            "chunk_overlap": self.chunk_overlap if self.chunk_frames != 0 else 0,
        }


FIRST_PASS_HERE = (
    "--first-pass runs where each HTTP replica holds its model "
    "(not with --model-host model|all or --model-replicas)"
)


@dataclass(frozen=True)
class ServeConfig:
    """The HTTP service.

    max_body_bytes / max_pixels: larger uploads get 413. api_key: required in ``Authorization: Bearer`` or
    ``X-API-Key`` when set (healthz, metrics and the docs stay open).
    max_batch / batch_wait_ms / streams / max_concurrent_batches: the model batches (in crops) and executor.
    ingress_*: the HTTP deployment (decode, detect, crop, model, decode outputs), autoscaled between min and
    max replicas at ``target_ongoing`` requests per replica; None: ``placement.plan_replicas`` (CPUs: one to
    one per CPU; GPUs: a fixed 5 per 8 CPUs within the GPU memory). model_replicas: None or 0 (default):
    every HTTP replica loads its own model (a share of the GPUs each) and batches its own requests; N ≥ 1:
    a model deployment of at most N replicas takes every HTTP replica's crops.
    max_ongoing / max_queued: per ingress replica, and at each caller (the HTTP proxy); beyond them requests
    get 503 with ``Retry-After: retry_after_s``: the queue is bounded. Waiting is cheapest inside a replica
    (a request parked on the thread pool costs nothing); Serve's router retries and probes the requests it
    holds, which on 2 CPUs cut throughput 2-3x at 96 concurrent requests with 32 per replica (measured).
    gpu_decode: where a replica that holds its model on a GPU decodes JPEGs and detects faces: "off"
    (OpenCV and LiteRT on its CPU), "on" (nvJPEG and BlazeFace in torch on its GPU, batched over its
    threads: scale.gpu_front), "auto" (default: on where the replica has a GPU and torchvision and is an
    MPS client, scale.mps; without MPS ten replicas time-slicing one H200 measured slower with it, README).
    gpu_batch_threads: the GPU front end's batch threads per replica (each takes whatever requests are queued,
    up to threads_per_replica, and carries them through the whole reconstruction).
    model_host: one process per GPU holds the model and batches the crops of every replica there
    (scale.model_host): "model" (the replicas decode and detect on the GPU themselves, under MPS) or "all"
    (the host decodes the JPEGs and runs the detectors' networks too, batched over all the replicas; they
    need no GPU context); "off": each replica holds its own model; "auto" (default): "model" where the
    replicas share a GPU context and decode on it (MPS, a GPU, no model deployment or first-pass model),
    else "off" (``placement.resolve_model_host``).
    hosts_per_gpu: model hosts on each GPU (with a model host; a CPU machine keeps one): each call goes to
    the least busy, so that one host process is not the limit. None (default): ``AUTO_HOSTS_PER_GPU``.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    model: ModelOptions = field(default_factory=lambda: ModelOptions(passes=SERVICE_PASSES))
    api_key: str | None = None
    max_body_bytes: int = 10 * 2**20
    max_pixels: int = 40_000_000
    max_batch: int = 32
    batch_wait_ms: float = 2.0
    streams: int = 2
    max_concurrent_batches: int = 2
    ingress_min_replicas: int | None = None
    ingress_max_replicas: int | None = None
    ingress_cpus: float = 1.0
    threads_per_replica: int = 8
    target_ongoing: int = 8
    max_ongoing: int = 128
    max_queued: int = 256
    model_replicas: int | None = None
    model_cpus: float = 1.0
    retry_after_s: float = 1.0
    avatar_texture_size: int = 1024
    gpu_decode: str = "auto"
    gpu_batch_threads: int = 2
    model_host: str = "auto"
    hosts_per_gpu: int | None = None
    app_name: str = "face3d"

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port must be 1…65535, got {self.port}")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"--max-body-mb is too small ({self.max_body_bytes} bytes)")
        for name in ("max_batch", "streams", "max_concurrent_batches", "ingress_min_replicas"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {value}")
        if min(self.max_ongoing, self.max_queued, self.threads_per_replica, self.gpu_batch_threads) < 1:
            raise ConfigError(
                "max_ongoing, max_queued, threads_per_replica and gpu_batch_threads must be ≥ 1"
            )
        if self.model_replicas is not None and self.model_replicas < 0:
            raise ConfigError(f"--model-replicas must be ≥ 0, got {self.model_replicas}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("the API key is empty")
        if self.gpu_decode not in ("auto", "on", "off"):
            raise ConfigError(f"--gpu-decode must be auto, on or off, got {self.gpu_decode!r}")
        if self.model_host not in ("auto", "off", "model", "all"):
            raise ConfigError(f"--model-host must be auto, off, model or all, got {self.model_host!r}")
        if self.hosts_per_gpu is not None and self.hosts_per_gpu < 1:
            raise ConfigError(f"--hosts-per-gpu must be ≥ 1, got {self.hosts_per_gpu}")
        if (self.hosts_per_gpu or 1) > 1 and self.model_host == "off":
            raise ConfigError("--hosts-per-gpu needs a model host (--model-host auto, model or all)")
        if self.model.first_pass and (self.model_host in ("model", "all") or (self.model_replicas or 0) > 0):
            raise ConfigError(FIRST_PASS_HERE)

    @classmethod
    def from_args(cls, args, **kwargs) -> ServeConfig:
        """The options ``cli.serve.add_service_options`` adds, plus ``kwargs`` (port, key, limits, ...)."""
        return cls(
            model=ModelOptions.from_args(args),
            max_batch=args.max_batch,
            batch_wait_ms=args.batch_wait_ms,
            streams=args.streams,
            ingress_min_replicas=args.min_replicas,
            ingress_max_replicas=args.max_replicas,
            threads_per_replica=args.threads_per_replica,
            max_queued=args.max_queued,
            model_replicas=args.model_replicas,
            gpu_decode=args.gpu_decode,
            gpu_batch_threads=args.gpu_batch_threads,
            model_host=args.model_host,
            hosts_per_gpu=args.hosts_per_gpu,
            **kwargs,
        )
