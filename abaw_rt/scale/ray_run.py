"""Scale-out layer: ``infer`` / ``extract`` over a Ray cluster with Ray Core actors.

One ``VideoWorker`` actor per worker builds the job's ``JobRunner`` once (models loaded once per actor) and takes
one source per call; it writes that source's outputs itself, through the same code as a single-process run
(``JobRunner.run`` -> ``write_outputs`` / ``FeatureStore.write``: staged, then renamed whole), so each output is
byte-for-byte what one process writes. The driver hands a source to each idle worker, polls a small
``ProgressBoard`` actor the workers report to, and when a worker dies (its process killed, out of memory, a lost
node) starts a new one and gives the source another try, up to ``max_retries``. What a killed worker had staged is
removed (``clean_stale``, ``FeatureStore.discard_unindexed``): nothing is left half-written.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from abaw_rt.errors import AbawRtError, require_module
from abaw_rt.pipeline.jobs import JobRunner, VideoJob
from abaw_rt.pipeline.run import Source
from abaw_rt.scale.config import LOCAL, ScaleConfig, check_reachable

PROGRESS_EVERY_S = 0.25  # how often a worker reports frames done
POLL_S = 0.1  # how often the driver looks for finished videos and progress


@dataclass
class Failure:
    """A source that produced no output, and why."""

    name: str
    reason: str
    tries: int


@dataclass
class ScaleResult:
    """What a Ray run did: reports in input order (done sources only), failures, and the cluster's timings."""

    reports: list[dict]
    failures: list[Failure]
    startup_s: float  # connecting to (or starting) the cluster
    workers_ready_s: float  # creating the actors, each loading the models
    load_s: float | None  # the slowest worker's model loading, as the pipeline measured it
    retries: int = 0
    worker_pids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "startup_s": self.startup_s, "workers_ready_s": self.workers_ready_s, "model_load_s": self.load_s,
            "retries": self.retries, "failures": [f.__dict__ for f in self.failures],
        }


class ProgressBoard:
    """Frames done per source, reported by the workers, read by the driver."""

    def __init__(self):
        self.state: dict[str, tuple[int, int | None]] = {}

    def update(self, name: str, done: int, total: int | None) -> None:
        self.state[name] = (done, total)

    def snapshot(self) -> dict[str, tuple[int, int | None]]:
        return dict(self.state)


class VideoWorker:
    """One worker: the job's models loaded once, one source per ``run`` call."""

    def __init__(self, job: VideoJob, board, hook: Callable[[str, int], None] | None = None):
        self.runner = JobRunner(job).__enter__()
        self.board = board
        self.hook = hook

    def ready(self) -> tuple[int, float | None]:
        return os.getpid(), self.runner.load_seconds

    def run(self, source: Source, expected: int | None) -> dict:
        """{"report": ...} when the source's outputs are written; {"error": ...} for a problem with the input."""
        last = [0.0]

        def progress(name: str, done: int, total: int | None) -> None:
            if self.hook is not None:
                self.hook(name, done)
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY_S:
                last[0] = now
                self.board.update.remote(source.name, done, total)

        try:
            report = self.runner.run(source, progress, expected)
        except AbawRtError as exc:  # the input's fault: another try would fail the same way
            return {"error": str(exc)}
        self.board.update.remote(source.name, report.get("frames", 0), report.get("frames", 0))
        return {"report": report}


def connect(cfg: ScaleConfig):
    """Join or start the cluster; returns (ray, started_here). AbawRtError when it cannot be reached."""
    ray = require_module("ray", "ray")
    check_reachable(cfg)
    if ray.is_initialized():  # this process already joined or started one (tests, notebooks): use it
        return ray, False
    kw = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=True)
    try:
        if cfg.address == LOCAL:
            num_cpus = cfg.num_cpus or max(int(cfg.workers * cfg.cpus_per_worker + 0.999), 1) + 1
            ray.init(num_cpus=num_cpus, **kw)
        else:
            ray.init(address=cfg.address, **kw)
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AbawRtError(f"--ray '{cfg.address}': cannot connect ({first})") from None
    return ray, True


def check_resources(available: dict, cfg: ScaleConfig, workers: int) -> None:
    """The cluster must hold every worker at once (else Ray would queue the missing actors for ever)."""
    for key, each, option in (("CPU", cfg.cpus_per_worker, "--workers"), ("GPU", cfg.gpus_per_worker, "--gpus-per-worker")):
        need, have = each * workers, float(available.get(key, 0.0))
        if need > have + 1e-9:
            raise AbawRtError(
                f"{option}: {workers} worker(s) x {each:g} {key} need {need:g} {key}s, the Ray cluster at "
                f"'{cfg.address}' has {have:g}"
            )


def _cause(exc: BaseException) -> BaseException:
    return getattr(exc, "cause", None) or exc


class _Pool:
    """The worker actors: started, replaced when one dies, and which source each is working on."""

    def __init__(self, ray, job: VideoJob, cfg: ScaleConfig):
        self.ray, self.job, self.cfg = ray, job, cfg
        self.board = ray.remote(num_cpus=0)(ProgressBoard).remote()
        self.actor_class = ray.remote(num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker,
                                      max_restarts=0, max_task_retries=0)(VideoWorker)
        self.idle: list = []
        self.pids: list[int] = []
        self.load_s: float | None = None

    def start(self, n: int) -> None:
        actors = [self.actor_class.remote(self.job, self.board, self.cfg.fault_hook) for _ in range(n)]
        try:
            ready = self.ray.get([a.ready.remote() for a in actors])
        except Exception as exc:  # a model that does not load: the same on every worker
            cause = _cause(exc)
            if isinstance(cause, AbawRtError):
                raise AbawRtError(str(cause)) from None
            raise AbawRtError(f"Ray workers failed to start: {str(cause).splitlines()[0]}") from None
        self.pids += [pid for pid, _ in ready]
        loads = [s for _, s in ready if s is not None]
        self.load_s = max([*loads, self.load_s or 0.0]) if loads else self.load_s
        self.idle += actors


def run_videos(
    job: VideoJob,
    sources: list[Source],
    expected: dict[str, int | None],
    cfg: ScaleConfig,
    on_progress: Callable[[dict[str, tuple[int, int | None]]], None] | None = None,
    on_done: Callable[[str, dict | None, str | None], None] | None = None,
) -> ScaleResult:
    """Process ``sources`` on ``cfg.workers`` Ray actors; each source's outputs are written by its worker.

    Args:
        job: what to run (checked by the caller: ``JobRunner(job).check(sources)``).
        sources: the inputs, in the order reports come back.
        expected: frames expected per source name (for progress), None when unknown.
        cfg: the cluster, workers and retries.
        on_progress: called with {source: (frames done, expected)} as workers report.
        on_done: called with (source, report or None, error or None) as each source finishes or fails for good.
    """
    workers = min(cfg.workers, max(len(sources), 1))
    with cluster(cfg, workers) as (ray, startup_s):
        try:
            t1 = time.perf_counter()
            pool = _Pool(ray, job, cfg)
            pool.start(workers)
            ready_s = time.perf_counter() - t1
            result = _schedule(ray, pool, sources, expected, cfg, on_progress, on_done)
            result.startup_s, result.workers_ready_s, result.load_s = startup_s, ready_s, pool.load_s
            return result
        finally:
            _clean_leftovers(job, sources)


@contextlib.contextmanager
def cluster(cfg: ScaleConfig, workers: int):
    """Join or start the cluster and check it can hold ``workers``; yields (ray, seconds it took). A cluster
    started here is shut down at the end; one this process had already joined is left as it was."""
    t0 = time.perf_counter()
    ray, started = connect(cfg)
    try:
        check_resources(ray.cluster_resources(), cfg, workers)
        yield ray, time.perf_counter() - t0
    finally:
        if started:
            ray.shutdown()


def _schedule(ray, pool: _Pool, sources, expected, cfg: ScaleConfig, on_progress, on_done) -> ScaleResult:
    """Hand sources to idle workers until each is done or out of tries."""
    pending = list(sources)
    tries = {s.name: 0 for s in sources}
    running: dict = {}  # ObjectRef -> (actor, source)
    reports: dict[str, dict] = {}
    failures: list[Failure] = []
    retries = 0

    def finish(name: str, report: dict | None, error: str | None) -> None:
        if report is not None:
            reports[name] = report
        else:
            failures.append(Failure(name, error or "failed", tries[name]))
        if on_done is not None:
            on_done(name, report, error)

    while pending or running:
        while pending and pool.idle:
            source = pending.pop(0)
            actor = pool.idle.pop()
            tries[source.name] += 1
            running[actor.run.remote(source, expected.get(source.name))] = (actor, source)
        done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
        if on_progress is not None:
            on_progress(ray.get(pool.board.snapshot.remote()))
        for ref in done:
            actor, source = running.pop(ref)
            try:
                out = ray.get(ref)
            except Exception as exc:  # the worker died, or failed on something that may not happen again
                died = isinstance(exc, ray.exceptions.RayActorError)
                reason = "its worker died" if died else f"{type(_cause(exc)).__name__}: {_cause(exc)}".splitlines()[0]
                if tries[source.name] <= cfg.max_retries:
                    retries += 1
                    pending.insert(0, source)
                else:
                    finish(source.name, None, f"{reason} ({tries[source.name]} tries)")
                if not died:
                    pool.idle.append(actor)
                elif pending:  # a new worker (loading the models again) for what is left
                    ray.kill(actor, no_restart=True)
                    pool.start(1)
                continue
            pool.idle.append(actor)
            finish(source.name, out.get("report"), out.get("error"))
    ordered = [reports[s.name] for s in sources if s.name in reports]
    return ScaleResult(ordered, failures, 0.0, 0.0, None, retries, list(pool.pids))


def _clean_leftovers(job: VideoJob, sources: list[Source]) -> None:
    """Remove what killed workers had staged: infer's hidden staging folders, a store's unindexed files."""
    from pathlib import Path

    if job.fusion is not None:
        from abaw_rt.pipeline.outputs import clean_stale

        clean_stale(Path(job.out_dir))
        return
    from abaw_rt.store import FeatureStore

    store = FeatureStore(Path(job.out_dir))
    for s in sources:
        store.discard_unindexed(s.name)
