"""The library job on Ray: ``face3d-live process INPUTS… --out DIR --ray``.

    summary = run_batch(["footage/", "takes.txt", "photos/*.jpg"], Path("out"), BatchConfig())

1. INPUTS → videos and photo sets (inputs.py); each gets ``OUT/NAME/``.
2. Resume: an input whose ``OUT/NAME/.face3d-job.json`` holds the same key (sha256 of its content and the
   output options) is skipped and counted.
3. Tasks: one per video, photos in batches of ``photo_batch`` gathered across all photo inputs; long videos
   are cut into chunks (``chunk_frames``; by default only when there are fewer tasks than workers, sized to
   give each about two). Longest videos go first.
4. Actors: model actors (one per GPU) and input workers (work.py runs in them); each worker has
   ``tasks_per_worker`` task slots (threads) and gets the next task when a slot frees.
5. When all of an input's tasks are done its ``summary.json`` (``process``'s keys, plus "job") and marker are
   written; an input whose task failed is reported and has no marker. ``OUT/job-summary.json`` covers all.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from face3d_live.errors import ConfigError, Face3DError, ModelError
from face3d_live.scale.config import BatchConfig
from face3d_live.scale.inputs import BadInput, InputItem, content_hashes, expand_inputs, job_key
from face3d_live.scale.work import (
    PARTIAL,
    InputStats,
    Photo,
    PhotoTask,
    TaskResult,
    VideoTask,
    auto_chunk_frames,
    iter_chunks,
)

log = logging.getLogger(__name__)

MARKER = ".face3d-job.json"
_CREATION_FAILED = "error raised in its creation task"  # Ray's words for an actor whose __init__ raised
JOB_SUMMARY = "job-summary.json"
OUTPUTS = ("frames", "obj", "glb", "mesh.npz", "summary.json", MARKER, PARTIAL)
ACTOR_CPUS = 1.0  # a model actor's CPU reservation
WORKER_GPU_GIB = 1.25  # GPU memory a worker that owns its model may take (1.0 measured, as a service replica)


def workers_owning_gpu(gpus: float, gpu_node_cpus: float, gpu_memory_gib: float | None) -> int:
    """Input workers when each owns its model on a GPU share: one per CPU of the nodes with GPUs (a process
    that holds a GPU model can only run there), within the GPU memory (a CUDA context with the model and its
    graphs each). Why owning rather than model actors: on the H200 (16 cores, 2026-12-03) the same library ran
    at 665 frames/s against 532 through one model actor, and each video at 51-67 frames/s against 29 once
    started: no frame waits for a round trip through an actor call."""
    workers = max(1, int(gpu_node_cpus))
    if gpu_memory_gib:
        workers = min(workers, max(1, int(gpus * gpu_memory_gib // WORKER_GPU_GIB)))
    return workers


@dataclass
class InputOutcome:
    """status: done (processed now), skipped (already done: same content and options), failed."""

    input: str
    name: str
    kind: str
    status: str
    reason: str = ""
    frames: int = 0
    frames_with_face: int = 0
    faces: int = 0
    corrupt_frames_skipped: int = 0
    wall_s: float = 0.0
    out_dir: str = ""


@dataclass
class JobSummary:
    model: str = ""
    outcomes: list[InputOutcome] = field(default_factory=list)
    bad_inputs: list[BadInput] = field(default_factory=list)
    wall_s: float = 0.0  # the whole call, Ray start included
    processing_s: float = 0.0  # first task sent → last result in
    # first task sent → first frames reported: the workers' and model actors' start (processes, imports,
    # models, CUDA graphs), which a short job pays in full and a long one spreads thin
    startup_s: float = 0.0
    workers: int = 0
    tasks_per_worker: int = 1
    model_actors: int = 0
    cluster: dict = field(default_factory=dict)
    batching: dict = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> int:
        return self.count("failed") + len(self.bad_inputs)

    @property
    def frames(self) -> int:
        return sum(o.frames for o in self.outcomes if o.status == "done")

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.processing_s if self.processing_s > 0 else 0.0

    @property
    def running_frames_per_s(self) -> float:
        """Frames/s once the workers run (processing time less the start): what a long job approaches."""
        running = self.processing_s - self.startup_s
        return self.frames / running if running > 0 and self.startup_s > 0 else self.frames_per_s

    @property
    def videos_per_hour(self) -> float:
        videos = sum(o.status == "done" and o.kind == "video" for o in self.outcomes)
        return videos / self.processing_s * 3600 if self.processing_s > 0 else 0.0

    def lines(self) -> list[str]:
        n = len(self.outcomes) + len(self.bad_inputs)
        head = (
            f"{n} input(s): {self.count('done')} done, {self.count('skipped')} skipped (already done), "
            f"{self.failed} failed"
        )
        if self.count("done"):
            head += (
                f"; {self.frames} frames in {self.processing_s:.1f} s = {self.frames_per_s:.1f} frames/s "
                f"({self.videos_per_hour:.0f} videos/hour) on {self.workers} worker(s) × {self.tasks_per_worker} task(s), "
                f"{self.model_actors} "
                f"model actor(s), model {self.model}; after {self.startup_s:.1f} s of start: "
                f"{self.running_frames_per_s:.1f} frames/s"
            )
        out = [head]
        for o in self.outcomes:
            if o.status == "failed":
                out.append(f"failed: {o.input}: {o.reason}")
        out += [f"failed: {b.spec}: {b.reason}" for b in self.bad_inputs]
        return out

    def to_dict(self) -> dict:
        return {
            "inputs": len(self.outcomes) + len(self.bad_inputs),
            "done": self.count("done"),
            "skipped": self.count("skipped"),
            "failed": self.failed,
            "frames": self.frames,
            "wall_s": round(self.wall_s, 3),
            "processing_s": round(self.processing_s, 3),
            "frames_per_s": round(self.frames_per_s, 2),
            "startup_s": round(self.startup_s, 3),
            "running_frames_per_s": round(self.running_frames_per_s, 2),
            "videos_per_hour": round(self.videos_per_hour, 1),
            "model": self.model,
            "workers": self.workers,
            "tasks_per_worker": self.tasks_per_worker,
            "model_actors": self.model_actors,
            "cluster": self.cluster,
            "batching": self.batching,
            "items": [asdict(o) for o in self.outcomes],
            "bad_inputs": [asdict(b) for b in self.bad_inputs],
        }


@dataclass
class _Pending:
    """An input being processed: its tasks still out, what they reported."""

    index: int
    item: InputItem
    key: str
    content: str
    tasks_left: int = 0
    stats: InputStats = field(default_factory=InputStats)
    errors: list[str] = field(default_factory=list)
    chunks: int = 0


@dataclass(frozen=True)
class _Capacity:
    actors: int
    free_cpus: float
    per_worker: int
    workers: int


def run_batch(
    inputs: Sequence[str],
    out_dir: Path | str,
    config: BatchConfig = BatchConfig(),
    *,
    on_progress: Callable[[dict], None] | None = None,
) -> JobSummary:
    """Run a library job (see module doc); returns its summary (also written to OUT/job-summary.json).
    ``on_progress`` gets {"frames", "pids" (task → worker pid), "inputs_done"} as the job goes."""
    return _Job(inputs, Path(out_dir), config, on_progress).run()


class _Job:
    def __init__(self, inputs, out_dir: Path, config: BatchConfig, on_progress) -> None:
        if not inputs:
            raise ConfigError("no INPUTS given")
        self.specs = [str(i) for i in inputs]
        self.out = out_dir.expanduser().resolve()
        self.config = config
        self.on_progress = on_progress
        self.summary = JobSummary()
        self.pending: dict[int, _Pending] = {}

    # ---- plan --------------------------------------------------------------------------------------------
    def run(self) -> JobSummary:
        from face3d_live.scale.cluster import ray_session

        t0 = time.perf_counter()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Face3DError(f"cannot create output folder {self.out}: {exc.strerror}") from exc
        items, self.summary.bad_inputs = expand_inputs(self.specs)
        with ray_session(self.config.ray_address, self.config.num_cpus) as cluster:
            self.summary.cluster = cluster.to_dict()
            model = self.config.model.resolved(cluster.gpus)
            self.summary.model = model
            options = self.config.output_options(model)
            hashes = content_hashes(items)
            todo: list[tuple[int, InputItem, str, str]] = []
            for index, (item, content) in enumerate(zip(items, hashes)):
                if content is None:
                    self._outcome(item, "failed", f"cannot read {item.path}")
                    continue
                key = job_key(content, options)
                if self._finished(item, key):
                    self._outcome(item, "skipped")
                    continue
                todo.append((index, item, key, content))
            tasks, total_frames = self._plan(todo, self._capacity(cluster).workers)
            if tasks:
                self._execute(tasks, total_frames, model, cluster)
        order = {item.name: i for i, item in enumerate(items)}
        self.summary.outcomes.sort(key=lambda o: order.get(o.name, 0))
        self.summary.wall_s = time.perf_counter() - t0
        (self.out / JOB_SUMMARY).write_text(json.dumps(self.summary.to_dict(), indent=2))
        return self.summary

    def _dir(self, item: InputItem) -> Path:
        return self.out / item.name

    def _finished(self, item: InputItem, key: str) -> bool:
        try:
            marker = json.loads((self._dir(item) / MARKER).read_text())
        except (OSError, ValueError):
            return False
        return marker.get("key") == key and (self._dir(item) / "summary.json").is_file()

    def _outcome(self, item: InputItem, status: str, reason: str = "", stats: InputStats | None = None):
        o = InputOutcome(item.spec, item.name, item.kind, status, reason, out_dir=str(self._dir(item)))
        if status == "skipped":
            try:
                s = json.loads((self._dir(item) / "summary.json").read_text())
                o.frames, o.frames_with_face, o.faces = s["frames"], s["frames_with_face"], s["faces"]
            except (OSError, ValueError, KeyError):
                pass
        if stats is not None:
            o.frames, o.frames_with_face, o.faces = stats.frames, stats.frames_with_face, stats.faces
            o.corrupt_frames_skipped, o.wall_s = stats.corrupt_frames, round(stats.wall_s, 3)
        self.summary.outcomes.append(o)

    def _plan(self, todo, workers: int) -> tuple[list[VideoTask | PhotoTask], int]:
        """Probe the videos (an unreadable one fails here), clear stale outputs, cut the tasks."""
        from face3d_live.capture.video import VideoFileSource

        cfg = self.config
        probed: list[tuple[_Pending, InputItem, int]] = []  # videos and their frame counts
        photos: list[Photo] = []
        total = 0
        for index, item, key, content in todo:
            pend = _Pending(index, item, key, content)
            if item.kind == "video":
                try:
                    with VideoFileSource(item.path) as probe:
                        count = probe.frame_count or 0
                except Face3DError as exc:
                    self._outcome(item, "failed", str(exc))
                    continue
                frames = min(count, cfg.max_frames) if cfg.max_frames else count
                self._clear(item)
                probed.append((pend, item, frames))
                total += frames
            else:
                self._clear(item)
                files = item.files[: cfg.max_frames] if cfg.max_frames else item.files
                photos += [Photo(index, str(f), k, str(self._dir(item))) for k, f in enumerate(files)]
                total += len(files)
            self.pending[index] = pend
        chunk = 0 if cfg.glb else cfg.chunk_frames  # an animated GLB needs the whole take in one task
        if chunk is None:
            photo_tasks = -(-len(photos) // cfg.photo_batch)
            chunk = auto_chunk_frames([f for *_, f in probed], photo_tasks, workers)
            if chunk:
                log.info("job: videos cut into chunks of %d frames for %d workers", chunk, workers)
        videos: list[tuple[int, VideoTask]] = []
        for pend, item, frames in probed:
            chunks = list(iter_chunks(frames, chunk, cfg.chunk_overlap, end=cfg.max_frames))
            for k, (start, stop, warm) in enumerate(chunks):
                task = VideoTask(
                    task_id=f"{pend.index}:{k}",
                    input_index=pend.index,
                    path=str(item.path),
                    out_dir=str(self._dir(item)),
                    start=start,
                    stop=stop,
                    warmup=warm,
                    max_frames=cfg.max_frames,
                    whole=len(chunks) == 1,
                )
                size = ((stop or frames) - start) if len(chunks) > 1 else frames
                videos.append((size, task))
            pend.tasks_left = pend.chunks = len(chunks)
        tasks: list[VideoTask | PhotoTask] = [t for _, t in sorted(videos, key=lambda v: -v[0])]
        for k in range(0, len(photos), cfg.photo_batch):
            batch = tuple(photos[k : k + cfg.photo_batch])
            tasks.append(PhotoTask(f"photos:{k // cfg.photo_batch}", batch))
            for i in {p.input_index for p in batch}:
                self.pending[i].tasks_left += 1
        for index in [i for i, p in self.pending.items() if p.tasks_left == 0]:  # empty photo sets
            self._finalize(self.pending.pop(index))
        return tasks, total

    def _clear(self, item: InputItem) -> None:
        """Outputs of an earlier, unfinished or different run of this input (never anything else)."""
        d = self._dir(item)
        for name in (*OUTPUTS, f"{item.name}.glb"):
            p = d / name
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()

    def _capacity(self, cluster) -> _Capacity:
        """Model actors, task slots per worker and workers (before the few-tasks cap) on this cluster."""
        cfg = self.config
        # default: every worker owns its model (on a GPU share where there are GPUs), see workers_owning_gpu
        n_actors = cfg.model_actors or 0
        free_cpus = max(1.0, cluster.cpus - n_actors * ACTOR_CPUS)
        # a GPU model (an actor's or the worker's own) is a round trip per frame: several tasks hide it
        per_worker = cfg.tasks_per_worker or (4 if n_actors or cluster.gpus > 0 else 1)
        workers = max(1, int(free_cpus))  # 1 CPU each
        if cluster.gpus > 0 and not n_actors:
            from face3d_live.scale.cluster import gpu_node_cpus
            from face3d_live.scale.placement import local_gpu_memory_gib

            workers = workers_owning_gpu(
                cluster.gpus, gpu_node_cpus() or cluster.cpus, local_gpu_memory_gib()
            )
        return _Capacity(n_actors, free_cpus, per_worker, cfg.workers or workers)

    # ---- execute ---------------------------------------------------------------------------------------
    def _execute(self, tasks, total_frames: int, model: str, cluster) -> None:
        import ray

        from face3d_live.scale.actors import InputWorker, ModelActor, ProgressActor
        from face3d_live.scale.cluster import gpu_share, root_cause

        cfg = self.config
        cap = self._capacity(cluster)
        n_actors, free_cpus, per_worker = cap.actors, cap.free_cpus, cap.per_worker
        on_gpu = cluster.gpus > 0
        n_workers = max(1, min(cap.workers, len(tasks)))  # slots go round the workers: few tasks, one each
        worker_cpus = min(1.0, free_cpus / n_workers)  # asked for more than fit: they share the CPUs
        level = logging.getLogger().getEffectiveLevel()
        job = uuid.uuid4().hex[:8]
        names = [f"face3d-model-{job}-{k}" for k in range(n_actors)]
        gpus_each = gpu_share(cluster.gpus, n_actors)
        actors = [
            ModelActor.options(name=name, num_cpus=ACTOR_CPUS, num_gpus=gpus_each).remote(
                model, cfg.model.backend, cfg.max_batch, cfg.batch_wait_ms / 1000, cfg.streams, level
            )
            for name in names
        ]
        progress = ProgressActor.options(name=f"face3d-progress-{job}").remote()

        # --model-actors 0 on a GPU cluster: every worker owns its model on a share of the GPUs (no per-frame
        # round trip to an actor; Ray hides the GPUs from tasks that ask for none)
        worker_gpus = cluster.gpus / n_workers if on_gpu and not n_actors else 0

        def new_worker(k: int):
            actor = names[k % len(names)] if names else None
            return InputWorker.options(
                num_cpus=worker_cpus, num_gpus=worker_gpus, max_concurrency=per_worker
            ).remote(cfg, model, actor, f"face3d-progress-{job}", level)

        workers = [new_worker(k) for k in range(n_workers)]
        self.summary.workers, self.summary.model_actors = n_workers, n_actors
        self.summary.tasks_per_worker = per_worker
        log.info(
            "job: %d task(s), %d worker(s) × %d task(s) at once, %d model actor(s), model %s",
            len(tasks),
            n_workers,
            per_worker,
            n_actors,
            model,
        )

        bar = tqdm(total=total_frames, unit="frame", desc="job", disable=not cfg.progress, smoothing=0.1)
        queue = deque(tasks)
        idle = deque(k for _ in range(per_worker) for k in range(n_workers))  # free task slots
        running: dict = {}
        t_start = time.perf_counter()

        def dispatch() -> None:
            while idle and queue:
                k = idle.popleft()
                task = queue.popleft()
                running[workers[k].run.remote(task)] = (k, task, workers[k])

        dispatch()
        progress_ref = progress.wait.remote(-1, 1.0)
        try:
            while running:
                ready, _ = ray.wait([*running, progress_ref], num_returns=1)
                ref = ready[0]
                if ref == progress_ref:
                    snap = ray.get(ref)
                    if not self.summary.startup_s and snap["frames"] > 0:
                        self.summary.startup_s = time.perf_counter() - t_start
                    bar.n = min(snap["frames"], total_frames) if total_frames else snap["frames"]
                    bar.set_postfix_str(
                        f"{self.summary.count('done')}/{len(self.pending) + self.summary.count('done')} inputs"
                    )
                    if self.on_progress is not None:
                        self.on_progress({**snap, "inputs_done": self.summary.count("done")})
                    progress_ref = progress.wait.remote(snap["version"], 1.0)
                    continue
                k, task, worker = running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:  # died more often than Ray retries it: a poison input
                    if _CREATION_FAILED in str(exc):  # a worker or model actor could not start: none will
                        cause = root_cause(str(exc)) or str(exc).splitlines()[0]
                        raise ModelError(f"the job's workers could not start: {cause}") from None
                    reason = f"worker failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
                    result = TaskResult(task.task_id, errors=dict.fromkeys(_inputs_of(task), reason))
                    if workers[k] is worker:  # its other tasks fail the same way: replace it once
                        ray.kill(worker, no_restart=True)
                        workers[k] = new_worker(k)
                self._record(task, result)
                idle.append(k)
                dispatch()
        finally:
            bar.n = sum(o.frames for o in self.summary.outcomes if o.status == "done")
            bar.close()
            self.summary.processing_s = time.perf_counter() - t_start
            if actors or worker_gpus:  # the model actors' batches, or the workers' own GPU models'
                try:
                    stats = ray.get([a.batch_stats.remote() for a in actors or workers], timeout=10)
                    stats = [s for s in stats if s is not None]
                    b = sum(s["batches"] for s in stats)
                    self.summary.batching = {
                        "batches": b,
                        "mean_requests": round(sum(s["requests"] for s in stats) / b, 2) if b else 0,
                        "mean_crops": round(sum(s["crops"] for s in stats) / b, 2) if b else 0,
                        "max_requests": max((s["max_requests"] for s in stats), default=0),
                    }
                except ray.exceptions.RayError as exc:
                    log.warning("model actor statistics unavailable: %s", exc)
            for a in [*workers, *actors, progress]:
                ray.kill(a, no_restart=True)

    def _record(self, task, result: TaskResult) -> None:
        for index in _inputs_of(task):
            pend = self.pending.get(index)
            if pend is None:
                continue
            if index in result.stats:
                pend.stats.merge(result.stats[index])
            if index in result.errors:
                pend.errors.append(result.errors[index])
            pend.tasks_left -= 1
            if pend.tasks_left == 0:
                self._finalize(self.pending.pop(index))

    def _finalize(self, pend: _Pending) -> None:
        item, stats, d = pend.item, pend.stats, self._dir(pend.item)
        shutil.rmtree(d / PARTIAL, ignore_errors=True)  # attempts of workers that died
        if pend.errors:
            self._outcome(item, "failed", pend.errors[0], stats)
            return
        summary = {
            **stats.to_dict(item.spec, self.summary.model),
            **self.config.model.photo_summary(item.still),  # as `process` names them
            "job": {
                "key": pend.key,
                "content_sha256": pend.content,
                "tasks": pend.chunks or None,
                "notes": stats.notes,
            },
        }
        d.mkdir(parents=True, exist_ok=True)
        (d / "summary.json").write_text(json.dumps(summary, indent=2))
        marker = {
            "key": pend.key,
            "content_sha256": pend.content,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        tmp = d / (MARKER + ".tmp")
        tmp.write_text(json.dumps(marker))
        os.replace(tmp, d / MARKER)
        self._outcome(item, "done", stats=stats)


def _inputs_of(task) -> list[int]:
    if isinstance(task, VideoTask):
        return [task.input_index]
    return sorted({p.input_index for p in task.photos})
