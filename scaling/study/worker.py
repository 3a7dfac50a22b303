"""A worker: pop a WAITING trial from any cell of the spec, train it, record it, repeat.

Workers never create trials (the plan does, see `scaling.study.plan`), so running any number
of them, here or on other machines, runs each planned trial exactly once. A worker with nothing
to pop waits while other workers' trials are still running: if one of them dies, its heartbeat
goes stale, the trial is failed and re-queued with the same params, and a waiting worker runs
it. The worker stops when no cell has a WAITING or RUNNING trial.

Batches (spec `batch_models = K` > 1). The worker claims up to K WAITING trials of one cell,
each with the same atomic claim as a single trial, heartbeats all of them, trains them as one
stacked model (`scaling.batched.run_pipeline_batched`: the trials of a cell differ only in decay
and seed) and records each one exactly as a lone trial: a model that diverged fails alone, the
others complete. An error of the whole batch, Ctrl-C or a crash affects every trial of it the
way it would affect one trial (retried, re-queued, or gone stale and re-queued).

Outcomes of one trial:
  complete    values = (val_loss, ft_score); every metric a user attr, `curve` included
  diverged    FAIL, fail_kind "diverged" and fail_reason; final (a rerun would diverge again)
  error       FAIL with the exception as reason; re-queued up to worker.max_retry times
  interrupted FAIL (Ctrl-C), re-queued at once without counting as a retry; `run` resumes it
  stale       FAIL set by whichever worker notices the silent heartbeat; re-queued by the
              storage's RetryHeartbeatStaleTrialCallback (up to worker.max_retry times)
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

import scaling
from scaling.config import RunConfig
from scaling.errors import ConfigError, TrainingDiverged
from scaling.study.plan import OBJECTIVES, by_plan_key, requeue
from scaling.study.spec import DecaySearch, StudySpec
from scaling.study.storage import open_storage, retry_storage

TrialFn = Callable[[RunConfig], dict[str, Any]]
# a claimed trial ready to train: its study, the trial, its RunConfig
Prepared = tuple[optuna.Study, optuna.Trial, RunConfig]
# K configs in, K metrics dicts out; a diverged model's dict carries `error`, `diverged_step`
# and `diverged_phase` instead of raising (the contract of `run_pipeline_batched`).
BatchFn = Callable[[list[RunConfig]], list[dict[str, Any]]]


def pipeline_trial(config: RunConfig) -> dict[str, Any]:
    """The default unit of work: `scaling.pipeline.run_pipeline` without its own progress bar."""
    from scaling.pipeline import run_pipeline

    return run_pipeline(config, progress=False)


def pipeline_batch(configs: list[RunConfig]) -> list[dict[str, Any]]:
    """The default unit of work of a batch: `scaling.batched.run_pipeline_batched`."""
    from scaling.batched import run_pipeline_batched

    return run_pipeline_batched(configs, progress=False)


@dataclass
class WorkerResult:
    index: int
    ran: int = 0
    completed: int = 0
    failed: int = 0
    interrupted: bool = False


def make_sampler(search: DecaySearch) -> optuna.samplers.BaseSampler:
    """The sampler for a cell's study. A grid fixes every param at enqueue time, so its sampler
    never samples; RandomSampler is the cheapest placeholder."""
    if search.is_grid:
        return optuna.samplers.RandomSampler()
    n = int(search.n_trials or 1)
    startup = min(10, max(3, n // 3))
    if search.sampler == "tpe":
        # constant_liar: concurrent workers see each other's running trials as bad, so they do
        # not all propose the same decay.
        return optuna.samplers.TPESampler(n_startup_trials=startup, constant_liar=True)
    if search.sampler == "gp":
        return optuna.samplers.GPSampler(n_startup_trials=startup)
    if search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=max(4, min(50, n // 4)))
    return optuna.samplers.RandomSampler()


def suggest_decay(trial: optuna.Trial, search: DecaySearch) -> float:
    low, high = search.bounds()
    return float(trial.suggest_float("decay", low, high, log=search.log and not search.is_grid))


def provenance() -> dict[str, Any]:
    """Code version, git commit (when the package runs from a checkout), host and pid."""
    info: dict[str, Any] = {"code_version": scaling.__version__, "git_commit": None,
                            "host": socket.gethostname(), "worker_pid": os.getpid()}
    root = Path(scaling.__file__).resolve().parent.parent
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10)
            info["git_commit"] = commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    return info


class Heartbeat:
    """Records the trial's heartbeat every `interval` s on a daemon thread. A failed write is
    retried on the next beat instead of killing the thread."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{trial_id}")

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self.storage.record_heartbeat(self.trial_id)

    def __enter__(self) -> "Heartbeat":
        retry_storage(lambda: self.storage.record_heartbeat(self.trial_id))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def claim(study: optuna.Study) -> int | None:
    """Pop the oldest WAITING trial: WAITING -> RUNNING is atomic in the storage (row lock in
    PostgreSQL/MySQL, BEGIN IMMEDIATE in SQLite), so exactly one worker wins each trial."""
    got = claim_planned(study)
    return None if got is None else got[0]


def claim_planned(study: optuna.Study, key: str | None = None,
                  exclude: Collection[str] = ()) -> tuple[int, str | None] | None:
    """`claim`, restricted to trials whose plan key is `key` (if given) and not in `exclude`;
    returns (trial id, its plan key)."""
    storage = study._storage
    waiting = storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,))
    for t in waiting:
        plan = t.user_attrs.get("plan")
        if (key is not None and plan != key) or plan in exclude:
            continue
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return t._trial_id, plan
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


class Worker:
    def __init__(self, spec: StudySpec, storage_url: str, index: int = 0, trial_fn: TrialFn | None = None,
                 progress: bool = True, poll_s: float | None = None, batch_fn: BatchFn | None = None):
        check_batch_fn(spec, trial_fn, batch_fn)
        self.spec = spec
        self.index = index
        self.trial_fn = trial_fn or pipeline_trial
        self.batch_fn = batch_fn or pipeline_batch
        self.storage = open_storage(storage_url, spec.worker)
        self.cells = spec.cells()
        self.studies = {
            c.name: retry_storage(lambda c=c: optuna.load_study(
                study_name=spec.study_name(c), storage=self.storage, sampler=make_sampler(spec.decay)))
            for c in self.cells
        }
        self.poll_s = poll_s if poll_s is not None else min(2.0, spec.worker.heartbeat_interval / 2)
        self.info = provenance()
        self.result = WorkerResult(index)
        self.bar = _make_bar(index, progress)

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> WorkerResult:
        try:
            self._refresh_bar()
            while True:
                claimed = self._claim_next()
                if claimed is not None:
                    self._execute(claimed)
                    self._refresh_bar()
                elif self._anything_running():
                    time.sleep(self.poll_s)  # another worker's trial may still die and come back
                    self._refresh_bar()
                else:
                    break
        except KeyboardInterrupt:
            self.result.interrupted = True
        finally:
            if self.bar is not None:
                self.bar.close()
        return self.result

    def _claim_next(self) -> Any:
        """The next unit of work, claimed, or None when nothing is waiting."""
        return self._claim_any()

    def _execute(self, claimed: Any) -> None:
        study, trial_ids = claimed
        if self.spec.batch_models == 1:
            self._run_trial(study, trial_ids[0])
        else:
            self._run_unit([(study, trial_id) for trial_id in trial_ids])

    def _claim_any(self) -> tuple[optuna.Study, list[int]] | None:
        """Up to `batch_models` trials of the first cell that has any waiting; each claimed by
        the atomic `claim`, so batching cannot make two workers run one trial."""
        for cell in self.cells:
            study = self.studies[cell.name]
            retry_storage(lambda: optuna.storages.fail_stale_trials(study))
            trial_ids: list[int] = []
            while len(trial_ids) < self.spec.batch_models:
                trial_id = retry_storage(lambda: claim(study))
                if trial_id is None:
                    break
                trial_ids.append(trial_id)
            if trial_ids:
                return study, trial_ids
        return None

    def _anything_running(self) -> bool:
        return any(
            retry_storage(lambda s=s: s.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)))
            for s in self.studies.values()
        )

    # -- one trial -------------------------------------------------------------------------------

    def _run_trial(self, study: optuna.Study, trial_id: int) -> None:
        self.result.ran += 1
        try:
            with Heartbeat(self.storage, trial_id, self.spec.worker.heartbeat_interval):
                trial = optuna.Trial(study, trial_id)
                self._attrs(trial, self.info)
                self._train(study, trial)
        except KeyboardInterrupt:
            with _sigint_ignored():  # a second Ctrl-C must not cut the clean-up short
                self._fail(study, trial_id, "interrupted", "interrupted by the user (Ctrl-C)", retry="free")
            raise
        except Exception as exc:  # bookkeeping around the trial failed (a foreign trial, a storage hiccup)
            self._fail_outside(study, trial_id, exc)

    def _prepare(self, trial: optuna.Trial) -> RunConfig:
        """The trial's RunConfig (asking the sampler for its decay), recorded on the trial."""
        cell = self.spec.cell(trial.user_attrs["cell"])
        seed = int(trial.user_attrs["seed"])
        decay = suggest_decay(trial, self.spec.decay)
        config = self.spec.run_config(cell, decay, seed)
        self._attrs(trial, {"config": config.to_dict(), "size": cell.size.name})
        return config

    def _train(self, study: optuna.Study, trial: optuna.Trial) -> None:
        config = self._prepare(trial)
        start = time.perf_counter()
        try:
            metrics = self.trial_fn(config)
        except TrainingDiverged as exc:
            self._attrs(trial, {"trial_wall_s": time.perf_counter() - start, "diverged_step": exc.step,
                                "diverged_phase": exc.phase})
            self._fail(study, trial._trial_id, "diverged", str(exc), retry="never")
            return
        except Exception as exc:  # a bug or a lost device: record it, retry a few times, go on
            reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            print(f"worker {self.index}: trial {trial.number} failed: {reason}", file=sys.stderr)
            self._attrs(trial, {"trial_wall_s": time.perf_counter() - start,
                                "traceback": traceback.format_exc(limit=8)})
            self._fail(study, trial._trial_id, "error", reason, retry="counted")
            return
        self._record(study, trial, metrics, time.perf_counter() - start)

    def _record(self, study: optuna.Study, trial: optuna.Trial, metrics: dict[str, Any], wall: float) -> None:
        """Complete the trial with its metrics (or FAIL it when an objective is not finite)."""
        values = [metrics.get(name) for name in OBJECTIVES]
        bad = [n for n, v in zip(OBJECTIVES, values) if not _finite(v)]
        curve = metrics.pop("curve", None)
        self._attrs(trial, {k: _jsonable(v) for k, v in metrics.items()})
        self._attrs(trial, {"metric_keys": list(metrics), "curve": curve, "trial_wall_s": wall})
        if bad:
            self._fail(study, trial._trial_id, "error", f"objective {bad[0]} is {values[OBJECTIVES.index(bad[0])]!r}",
                       retry="never")
            return
        retry_storage(lambda: study.tell(trial, values=[float(v) for v in values], skip_if_finished=True))
        self.result.completed += 1

    # -- several trials trained together ---------------------------------------------------------

    def _run_unit(self, claimed: list[tuple[optuna.Study, int]]) -> None:
        """`_run_trial` for several claimed trials (of one cell, or of one size's cells for
        cooldown branches) trained together by `_train_unit`; each ends as it would alone."""
        self.result.ran += len(claimed)
        pending = list(claimed)  # claimed and not yet told
        try:
            with contextlib.ExitStack() as beats:
                for _, trial_id in claimed:
                    beats.enter_context(Heartbeat(self.storage, trial_id, self.spec.worker.heartbeat_interval))
                prepared: list[Prepared] = []
                for study, trial_id in claimed:
                    trial = optuna.Trial(study, trial_id)
                    try:
                        self._attrs(trial, self.info)
                        prepared.append((study, trial, self._prepare(trial)))
                    except Exception as exc:  # this trial alone is broken (a foreign trial)
                        self._fail_outside(study, trial_id, exc)
                        pending.remove((study, trial_id))
                if prepared:
                    self._train_unit(prepared, pending)
        except KeyboardInterrupt:
            with _sigint_ignored():
                for study, trial_id in pending:
                    self._fail(study, trial_id, "interrupted", "interrupted by the user (Ctrl-C)", retry="free")
            raise
        except Exception as exc:
            for study, trial_id in pending:
                self._fail_outside(study, trial_id, exc)

    def _train_unit(self, prepared: list[Prepared], pending: list[tuple[optuna.Study, int]]) -> None:
        """A batch of one cell's trials: one stacked model (`batch_fn`)."""
        from scaling.batched import check_stackable

        start = time.perf_counter()
        configs = [config for _, _, config in prepared]
        try:
            check_stackable(configs)  # one cell's trials differ only in decay and seed
            results = self.batch_fn(configs)
            if len(results) != len(configs):
                raise RuntimeError(f"batch_fn returned {len(results)} results for {len(configs)} configs")
        except Exception as exc:
            self._fail_unit(prepared, pending, exc, time.perf_counter() - start)
            return
        wall = time.perf_counter() - start  # every trial of the batch ran this long
        for (study, trial, _), metrics in zip(prepared, results):
            self._finish(study, trial, metrics, wall, pending)

    def _fail_unit(self, prepared: list[Prepared], pending: list[tuple[optuna.Study, int]], exc: Exception,
                   wall: float) -> None:
        """A bug or a lost device while training a unit: every trial of it fails as if alone."""
        reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        names = ", ".join(f"{study.study_name.rsplit('/', 1)[-1]}#{trial.number}" for study, trial, _ in prepared)
        print(f"worker {self.index}: trials {names} failed: {reason}", file=sys.stderr)
        for study, trial, _ in prepared:
            self._attrs(trial, {"trial_wall_s": wall, "traceback": traceback.format_exc(limit=8)})
            self._fail(study, trial._trial_id, "error", reason, retry="counted")
            pending.remove((study, trial._trial_id))

    def _finish(self, study: optuna.Study, trial: optuna.Trial, metrics: dict[str, Any], wall: float,
                pending: list[tuple[optuna.Study, int]]) -> None:
        """Record one trial of a unit: diverged (final, as a lone trial's TrainingDiverged) or complete."""
        if metrics.get("error") is not None:
            self._attrs(trial, {"trial_wall_s": wall, "diverged_step": _jsonable(metrics.get("diverged_step")),
                                "diverged_phase": metrics.get("diverged_phase")})
            self._fail(study, trial._trial_id, "diverged", str(metrics["error"]), retry="never")
        else:
            self._record(study, trial, dict(metrics), wall)
        pending.remove((study, trial._trial_id))

    def _fail_outside(self, study: optuna.Study, trial_id: int, exc: Exception) -> None:
        """The bookkeeping around a trial failed: FAIL it (counted retry) if the storage lets us."""
        reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        print(f"worker {self.index}: trial id {trial_id} failed outside training: {reason}", file=sys.stderr)
        try:
            self._fail(study, trial_id, "error", reason, retry="counted")
        except Exception:  # storage unreachable: the stale heartbeat will re-queue it
            pass

    def _fail(self, study: optuna.Study, trial_id: int, kind: str, reason: str, retry: str) -> None:
        """FAIL the trial with its reason; retry: "never", "counted" (up to max_retry) or "free"."""
        self.result.failed += 1
        storage = study._storage
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            retry_storage(lambda: storage.set_trial_user_attr(trial_id, "fail_kind", kind))
            retry_storage(lambda: storage.set_trial_user_attr(trial_id, "fail_reason", reason))
            number = storage.get_trial_number_from_id(trial_id)  # tell() takes a number, not an id
            retry_storage(lambda: study.tell(number, state=TrialState.FAIL, skip_if_finished=True))
            if retry != "never":
                frozen = storage.get_trial(trial_id)
                requeue(study, frozen, count_retry=retry == "counted", max_retry=self.spec.worker.max_retry)

    def _attrs(self, trial: optuna.Trial, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            retry_storage(lambda: trial.set_user_attr(key, value))

    # -- progress --------------------------------------------------------------------------------

    def _refresh_bar(self) -> None:
        if self.bar is None:
            return
        total = done = 0
        for study in self.studies.values():
            for trials in by_plan_key(study.get_trials(deepcopy=False)).values():
                total += 1
                done += trials[-1].state in (TrialState.COMPLETE, TrialState.FAIL)
        if self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        self.bar.set_postfix_str(f"mine {self.result.ran}", refresh=False)
        self.bar.refresh()


@contextlib.contextmanager
def _sigint_ignored():
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to protect
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _make_bar(index: int, progress: bool):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(desc=f"worker {index}", position=index, unit="trial", dynamic_ncols=True, leave=True)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _jsonable(value: Any) -> Any:
    """Optuna stores user attrs as JSON: numpy scalars and tuples become plain values."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return value


def check_batch_fn(spec: StudySpec, trial_fn: TrialFn | None, batch_fn: BatchFn | None) -> None:
    """A custom `trial_fn` trains one config; batching it needs a matching `batch_fn`, and
    cooldown branches (several budgets from one run) cannot use it at all."""
    if spec.cooldown_branches and trial_fn is not None:
        raise ConfigError(f"{spec.path}: cooldown_branches: a custom trial_fn trains one config at one budget; "
                          "expected cooldown_branches = false with a trial_fn, got true")
    if spec.batch_models > 1 and trial_fn is not None and batch_fn is None:
        raise ConfigError(f"{spec.path}: batch_models: a custom trial_fn trains one config at a time; "
                          f"expected batch_models = 1 or a batch_fn, got {spec.batch_models}")


def run_worker(spec: StudySpec, storage_url: str, index: int = 0, trial_fn: TrialFn | None = None,
               progress: bool = True, threads: int | None = None, batch_fn: BatchFn | None = None) -> WorkerResult:
    """Run one worker in this process until the study has nothing left to run."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if spec.cooldown_branches:
        from scaling.study.branches import BranchWorker

        return BranchWorker(spec, storage_url, index=index, progress=progress).run()
    return Worker(spec, storage_url, index=index, trial_fn=trial_fn, progress=progress, batch_fn=batch_fn).run()
