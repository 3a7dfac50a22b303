"""`run_study`: plan the spec's trials, then run K local workers until nothing is left.

K = 1 runs the worker in this process. K > 1 spawns K processes (spawn, not fork: torch and
database connections do not survive a fork) and splits this machine's CPU threads between
them. On a CUDA machine the default is one worker per visible GPU, each process pinned to its
own GPU through CUDA_VISIBLE_DEVICES (`worker_gpus`). Other machines join by running the same
spec against the same storage URL.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from scaling.errors import ConfigError, ScalingError
from scaling.study.plan import ensure_planned, ensure_refined
from scaling.study.spec import StudySpec
from scaling.study.spec_toml import MAX_N_TRIALS
from scaling.study.status import StudyStatus, study_status
from scaling.study.storage import open_storage, safe_url
from scaling.study.training import RunConfig, check_inputs, cuda_device_count
from scaling.study.units import TrialFn, Unit, check_fns
from scaling.study.worker import WorkerResult, run_worker, stop_signals_as_interrupt, stop_signals_ignored



@dataclass(frozen=True)
class RunReport:
    storage: str
    enqueued: int  # trials planned and refinement trials enqueued by this process (not by its workers)
    workers: tuple[WorkerResult | int, ...]  # a result (in-process) or a process exit code
    status: StudyStatus

    @property
    def ok(self) -> bool:
        """The study has nothing waiting or running (completed or finally failed trials)."""
        return self.status.finished

    @property
    def all_failed(self) -> bool:
        """Finished, and not one trial completed."""
        cells = self.status.cells
        return self.ok and sum(c.complete for c in cells) == 0 and sum(c.failed for c in cells) > 0

    def failure_summary(self) -> str:
        """One line: how many trials finally failed and each distinct reason with its count."""
        reasons = Counter(r for c in self.status.cells for r in c.fail_reasons)
        shown = "; ".join(f"{_clip(r)} (x{n})" for r, n in reasons.most_common(5))
        more = f"; and {len(reasons) - 5} other reasons" if len(reasons) > 5 else ""
        return f"{sum(reasons.values())} trials failed, {len(reasons)} distinct reason(s): {shown}{more}"


class StudyFailed(ScalingError):
    """Every trial of a study failed: nothing to export or fit."""


def check_not_all_failed(spec: StudySpec, report: RunReport) -> None:
    """StudyFailed (one line, with the reasons) when no trial of the study completed."""
    if report.all_failed:
        raise StudyFailed(f"study {spec.name}: every trial failed, none completed: {report.failure_summary()} "
                          f"(`scaling study status {spec.path}` lists them; --retry-failed after a fix)")


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def max_workers() -> int:
    """More worker processes than this only thrash (and a typo like 2000 would fork that many)."""
    return 4 * cpu_threads()


def spec_configs(spec: StudySpec) -> list[RunConfig]:
    """One RunConfig per cell: what the preflight checks (they differ only in what it reads once)."""
    return [spec.run_config(cell, spec.decay_bounds(cell)[0], spec.seeds[0]) for cell in spec.cells()]


def default_workers(spec: StudySpec | None = None) -> int:
    """One single-threaded worker per CPU thread on a CPU-only machine (tiny models use several
    threads badly; docs/studies.md has the measurement) or for a spec with device "cpu"; with
    CUDA, one worker per visible GPU, each pinned to its own (`worker_gpus`)."""
    if spec is not None and spec.run.get("device") == "cpu":
        return cpu_threads()
    return cuda_device_count() or cpu_threads()


def visible_gpus(count: int, cuda_visible_devices: str | None) -> list[str]:
    """The IDs of this process's `count` visible GPUs as CUDA_VISIBLE_DEVICES names them: its
    entries (ordinals or UUIDs) where it is set, else 0..count-1."""
    if cuda_visible_devices is not None and cuda_visible_devices.strip():
        return [d.strip() for d in cuda_visible_devices.split(",") if d.strip()][:count]
    return [str(i) for i in range(count)]


def worker_gpus(workers: int, gpus: Sequence[str]) -> list[str | None]:
    """The GPU each worker process is pinned to (its CUDA_VISIBLE_DEVICES): worker i gets
    gpus[i mod G], so more workers than GPUs share them evenly; None for all without GPUs."""
    return [gpus[i % len(gpus)] if gpus else None for i in range(workers)]


def run_study(spec: StudySpec, storage: str | None = None, workers: int | None = None, n_trials: int | None = None,
              trial_fn: TrialFn | None = None, progress: bool = True, threads: int | None = None,
              retry_failed: bool = False, batch_models: int | None = None,
              batch_fn: Unit | None = None, allow_changed_spec: bool = False,
              compile: bool | None = None) -> RunReport:
    """Run (or resume, or join) the study described by `spec`.

    storage: any SQLAlchemy URL; default the spec's (a SQLite file under results/<name>/).
    n_trials: trials per cell for a sampler search (only ever extends the plan).
    trial_fn: RunConfig -> metrics dict; default the real pipeline. With workers > 1 it must be
        importable by name (a module-level function) because workers are spawned processes.
    threads: torch threads per worker; default this machine's threads split between workers
        (left alone for a single in-process worker unless given).
    retry_failed: queue again final failures other than divergence (after fixing a bug).
    batch_models: trials of one cell each worker trains together (overrides the spec's).
    batch_fn: [RunConfig] -> [metrics dict] for batches; default `run_pipeline_batched`.
    allow_changed_spec: run a spec edited under the same name; the old trials become stale
        (kept in the storage, not counted or exported; `scaling.study.plan.ensure_planned`).
    compile: torch.compile the stacked units' training step (overrides the spec's `compile`).
    """
    if workers is None:
        workers = default_workers(spec)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers: expected a positive integer, got {workers!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads: expected a positive integer, got {threads!r}")
    if batch_models is not None:
        if isinstance(batch_models, bool) or not isinstance(batch_models, int) or batch_models < 1:
            raise ConfigError(f"batch_models: expected a positive integer, got {batch_models!r}")
        spec = replace(spec, batch_models=batch_models)
    if compile is not None:
        if not isinstance(compile, bool):
            raise ConfigError(f"compile: expected true or false, got {compile!r}")
        spec = replace(spec, compile=compile)
    if spec.compile and spec.batch_models == 1 and not spec.cooldown_branches:
        raise ConfigError("compile: expected batch_models > 1 or cooldown_branches (compile applies to "
                          "stacked units), got batch_models = 1")
    check_fns(spec, trial_fn, batch_fn)
    if n_trials is not None:
        if spec.decay.is_grid:
            raise ConfigError(f"{spec.path}: n_trials: a grid runs each planned trial once; "
                              "expected no --n-trials for a decay grid")
        if isinstance(n_trials, bool) or not isinstance(n_trials, int) or not 1 <= n_trials <= MAX_N_TRIALS:
            raise ConfigError(f"n_trials: expected a positive integer <= {MAX_N_TRIALS}, got {n_trials!r}")
    with stop_signals_as_interrupt():
        return _run_study(spec, storage, workers, n_trials, trial_fn, progress, threads, retry_failed, batch_fn,
                          allow_changed_spec)


def _run_study(spec: StudySpec, storage: str | None, workers: int, n_trials: int | None, trial_fn: TrialFn | None,
               progress: bool, threads: int | None, retry_failed: bool, batch_fn: Unit | None,
               allow_changed_spec: bool) -> RunReport:
    if workers > max_workers():
        raise ConfigError(f"workers: expected at most {max_workers()} on this machine (4 per CPU thread), got {workers}")
    if trial_fn is None and batch_fn is None:
        check_inputs(spec_configs(spec))  # a missing corpus or broken task file: now, not once per trial
    url = storage or spec.storage_url
    store = open_storage(url, spec.worker)
    enqueued = ensure_planned(spec, store, n_trials=n_trials, retry_failed=retry_failed,
                              log=lambda msg: print(msg, file=sys.stderr), allow_changed_spec=allow_changed_spec)
    store.engine.dispose()  # spawned workers open their own connections
    results = _run_workers(spec, url, workers, trial_fn, progress, threads, batch_fn)
    # Adaptive refinement (scaling.study.refine): the workers decide each cell's rounds as soon as
    # the cell is ready (scaling.study.plan.refine_due), so after them this loop normally finds
    # every round recorded and enqueued. It stays for what they leave: a cell whose last trial
    # failed moments before the workers stopped, a resume, a worker that could not decide.
    for round_ in range(1, spec.refine.rounds + 1 if spec.refine.enabled else 1):
        store = open_storage(url, spec.worker)
        added = ensure_refined(spec, store, round_, log=lambda msg: print(msg, file=sys.stderr))
        store.engine.dispose()
        if added == 0 and not any(c.waiting or c.running for c in study_status(spec, url).cells):
            continue  # nothing new (or decided and run earlier): a resume moves on to the next round
        enqueued += added
        results = _run_workers(spec, url, workers, trial_fn, progress, threads, batch_fn)
    return RunReport(safe_url(url), enqueued, results, study_status(spec, url))


def _run_workers(spec: StudySpec, url: str, workers: int, trial_fn: TrialFn | None, progress: bool,
                 threads: int | None, batch_fn: Unit | None) -> tuple[WorkerResult | int, ...]:
    """Run the workers until nothing is waiting or running; KeyboardInterrupt if one was stopped."""
    if workers == 1:
        results: tuple[WorkerResult | int, ...] = (
            run_worker(spec, url, index=0, trial_fn=trial_fn, progress=progress, threads=threads,
                       batch_fn=batch_fn),)
        interrupted = results[0].interrupted
    else:
        per_worker = threads or max(1, cpu_threads() // workers)
        results, interrupted = _run_processes(spec, url, workers, trial_fn, progress, per_worker, batch_fn)
    if interrupted:
        raise KeyboardInterrupt
    return results


def _worker_main(spec: StudySpec, url: str, index: int, trial_fn: TrialFn | None, progress: bool,
                 threads: int, batch_fn: Unit | None = None, gpu: str | None = None) -> None:
    if gpu is not None:  # before anything initialises CUDA in this (spawned) process
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    _die_with_parent()
    with stop_signals_as_interrupt():
        result = run_worker(spec, url, index=index, trial_fn=trial_fn, progress=progress, threads=threads,
                            batch_fn=batch_fn)
    sys.exit(130 if result.interrupted else 0)


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the process that started it dies (even by SIGKILL), so no
    orphan trains on; the worker then re-queues its trial as for Ctrl-C."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before prctl: stop now
        sys.exit(130)


def _run_processes(spec: StudySpec, url: str, workers: int, trial_fn: TrialFn | None, progress: bool,
                   threads: int, batch_fn: Unit | None = None) -> tuple[tuple[int, ...], bool]:
    ctx = multiprocessing.get_context("spawn")
    gpus = [] if spec.run.get("device") == "cpu" else visible_gpus(cuda_device_count(),
                                                                   os.environ.get("CUDA_VISIBLE_DEVICES"))
    procs = [ctx.Process(target=_worker_main, args=(spec, url, i, trial_fn, progress, threads, batch_fn, gpu),
                         name=f"scaling-study-worker-{i}") for i, gpu in enumerate(worker_gpus(workers, gpus))]
    for p in procs:
        p.start()
    interrupted = False
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt as exc:
        # A terminal Ctrl-C (or a SIGTERM/SIGHUP to the process group) reached the workers too; a
        # signal sent to this process alone did not, so pass it on (workers ignore a second one
        # while they re-queue their trials, and so does this process while it waits for them).
        interrupted = True
        forward = getattr(signal, str(exc), signal.SIGINT) if str(exc).startswith("SIG") else signal.SIGINT
        with stop_signals_ignored():
            for p in procs:
                if p.is_alive() and p.pid is not None:
                    try:
                        os.kill(p.pid, forward)
                    except ProcessLookupError:
                        pass
            for p in procs:
                p.join(timeout=60)
                if p.is_alive():
                    p.terminate()
                    p.join()
    codes = tuple(p.exitcode if p.exitcode is not None else -1 for p in procs)
    interrupted = interrupted or any(c == 130 for c in codes)
    for i, code in enumerate(codes):
        if code not in (0, 130):
            how = f"signal {-code}" if code < 0 else f"status {code}"
            print(f"scaling study: worker {i} exited with {how}", file=sys.stderr)
    return codes, interrupted
