"""A worker: claim a unit of WAITING trials, train it, record each trial, repeat.

Workers never create trials of their own: the plan does (`scaling.study.plan`), so running any
number of them, here or on other machines, runs each planned trial exactly once. Between units a
worker asks the plan for the refinement rounds that are due (`refine_due`): a cell's next round
is decided, under the plan lock and once, as soon as that cell's own trials have finished, while
other cells still train. Units are claimed from the costliest cell first (`claim_order`). A
worker with nothing to claim waits while other workers' trials are still running: if one of them
dies, its heartbeat goes stale, the trial is failed and re-queued with the same params, and a
waiting worker runs it. The worker stops when no cell has a WAITING or RUNNING trial.

A unit (`scaling.study.units`) is one trial, up to `batch_models` trials of one cell, or with
`cooldown_branches` one size's trials across budgets. Each trial of a unit ends as it would
alone:

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
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from scaling.study.claim import Held, claim_across, claim_some, heartbeats
from scaling.study.identity import IDENTITY, current, trial_identity
from scaling.study.plan import by_plan_key, refine_due, requeue
from scaling.study.provenance import provenance
from scaling.study.sampler import make_sampler, suggest_decay
from scaling.study.spec import StudySpec
from scaling.study.storage import open_storage, retry_storage
from scaling.study.training import RunConfig, set_threads
from scaling.study.units import Metrics, TrialFn, Unit, claim_order, make_unit
from scaling.study.values import is_finite_number, jsonable


@dataclass
class WorkerResult:
    """What one worker did: trials it ran, completed and failed, refinement trials it enqueued,
    and whether Ctrl-C stopped it."""

    index: int
    ran: int = 0
    completed: int = 0
    failed: int = 0
    interrupted: bool = False
    refined: int = 0


@dataclass(frozen=True)
class Prepared:
    """A claimed trial ready to train: its Optuna trial and its RunConfig."""

    held: Held
    trial: optuna.Trial
    config: RunConfig


class Worker:
    """Claims units of the spec's WAITING trials from `storage_url` and trains them with `unit`
    until no cell has a trial waiting or running."""

    def __init__(self, spec: StudySpec, storage_url: str, unit: Unit, index: int = 0, progress: bool = True,
                 poll_s: float | None = None):
        self.spec = spec
        self.unit = unit
        self.index = index
        self.storage = open_storage(storage_url, spec.worker)
        self.studies = {
            c.name: retry_storage(lambda c=c: optuna.load_study(
                study_name=spec.study_name(c), storage=self.storage, sampler=make_sampler(spec.decay)))
            for c in spec.cells()
        }
        # Studies a unit is claimed from (one cell, or one size's cells for cooldown branches),
        # the costliest first: the largest cell's units start first instead of ending the study alone.
        self.groups = [[self.studies[c.name] for c in cells] for cells in claim_order(spec)]
        # The identity planning gave each cell (checked against this spec just before workers start):
        # trials a later, edited spec plans are not this worker's to run.
        self.identities: dict[str, str | None] = {
            study.study_name: retry_storage(lambda s=study: s.user_attrs).get(IDENTITY) for study in self.studies.values()}
        self.refining = spec.refine.enabled  # off after a failed decision (`_refine`)
        self.poll_s = poll_s if poll_s is not None else min(2.0, spec.worker.heartbeat_interval / 2)
        self.info = provenance()
        self.result = WorkerResult(index)
        self.bar = _make_bar(index, progress)

    def run(self) -> WorkerResult:
        try:
            self._refresh_bar()
            while True:
                self._refine()
                held = self._claim_unit()
                if held:
                    self._run_unit(held)
                    self._refresh_bar()
                elif self._anything_running():
                    time.sleep(self.poll_s)  # another worker's trial may still die and come back
                    self._refresh_bar()
                elif not self._refine():  # the last trial of a cell may have ended since: its next round
                    break
        except KeyboardInterrupt:
            self.result.interrupted = True
        finally:
            if self.bar is not None:
                self.bar.close()
        return self.result

    def _claim_unit(self) -> list[Held]:
        """The trials of the next unit, claimed, from the first group (costliest first) with any waiting."""
        k = self.spec.batch_models
        for group in self.groups:
            for study in group:
                retry_storage(lambda: optuna.storages.fail_stale_trials(study))
            if self.spec.cooldown_branches:
                held = claim_across(self.storage, group, k, self.identities)
            else:
                held = claim_some(self.storage, group[0], k, self.identities[group[0].study_name])
            if held:
                return held
        return []

    def _refine(self) -> int:
        """Decide and enqueue the refinement rounds of the cells ready for one (`refine_due`):
        a cell's next round as soon as its own trials have finished, not once every cell has."""
        if not self.refining:
            return 0
        cells = [(cell, self.studies[cell.name]) for cell in self.spec.cells()]
        try:
            added = refine_due(self.spec, self.storage, cells, self.identities)
        except Exception as exc:  # training goes on; the runner's round loop decides after the workers stop
            print(f"worker {self.index}: refinement left to the runner: {_reason(exc)}", file=sys.stderr)
            self.refining = False
            return 0
        self.result.refined += added
        return added

    def _anything_running(self) -> bool:
        """Whether a trial of this spec's version still waits or runs (it may come back to us)."""
        for s in self.studies.values():
            live = retry_storage(lambda s=s: s.get_trials(deepcopy=False,
                                                          states=(TrialState.RUNNING, TrialState.WAITING)))
            attrs = s.user_attrs if live else {}
            mine = self.identities[s.study_name]
            if any(mine is None or trial_identity(t, attrs) == mine for t in live):
                return True
        return False

    # -- a unit ----------------------------------------------------------------------------------

    def _run_unit(self, held: list[Held]) -> None:
        """Prepare, train and record the claimed trials; each ends as it would alone."""
        self.result.ran += len(held)
        pending = list(held)  # claimed and not yet told
        try:
            with heartbeats(self.storage, held, self.spec.worker.heartbeat_interval):
                prepared: list[Prepared] = []
                for h in held:
                    try:
                        trial = optuna.Trial(h.study, h.trial_id)
                        self._attrs(trial, self.info)
                        prepared.append(Prepared(h, trial, self._config(trial)))
                    except Exception as exc:  # this trial alone is broken (a foreign trial)
                        self._fail_outside(h, exc)
                        pending.remove(h)
                if prepared:
                    self._train(prepared, pending)
        except KeyboardInterrupt as exc:
            with stop_signals_ignored():  # a second Ctrl-C (or SIGTERM) must not cut the clean-up short
                for h in pending:
                    self._fail(h, "interrupted", f"interrupted by {exc or 'the user (Ctrl-C)'}", retry="free")
            raise
        except Exception as exc:  # bookkeeping around the unit failed (a storage hiccup)
            for h in pending:
                self._fail_outside(h, exc)

    def _config(self, trial: optuna.Trial) -> RunConfig:
        """The trial's RunConfig (asking the sampler for its decay), recorded on the trial."""
        cell = self.spec.cell(trial.user_attrs["cell"])
        decay = suggest_decay(trial, self.spec.decay, self.spec.decay_bounds(cell))
        config = self.spec.run_config(cell, decay, int(trial.user_attrs["seed"]))
        self._attrs(trial, {"config": config.to_dict(), "size": cell.size.name})
        return config

    def _train(self, prepared: list[Prepared], pending: list[Held]) -> None:
        start = time.perf_counter()
        try:
            results = self.unit([p.config for p in prepared])
            if len(results) != len(prepared):
                raise RuntimeError(f"the unit returned {len(results)} results for {len(prepared)} configs")
        except Exception as exc:  # a bug or a lost device: every trial fails as if alone
            self._fail_all(prepared, pending, exc, time.perf_counter() - start)
            return
        wall = time.perf_counter() - start  # every trial of the unit ran this long
        for p, metrics in zip(prepared, results):
            self._finish(p, dict(metrics), wall)
            pending.remove(p.held)

    # -- recording -------------------------------------------------------------------------------

    def _finish(self, p: Prepared, metrics: Metrics, wall: float) -> None:
        """Record one trial: diverged (final), complete, or FAIL when an objective is not finite."""
        if metrics.get("error") is not None:
            self._attrs(p.trial, {"trial_wall_s": wall, "diverged_step": jsonable(metrics.get("diverged_step")),
                                  "diverged_phase": metrics.get("diverged_phase")})
            self._fail(p.held, "diverged", str(metrics["error"]), retry="never")
            return
        objectives = [name for name, _ in self.spec.objectives]
        values = [metrics.get(name) for name in objectives]
        bad = [n for n, v in zip(objectives, values) if not is_finite_number(v)]
        curve = metrics.pop("curve", None)
        metrics.update(timescales(p.config, metrics))
        self._attrs(p.trial, {k: jsonable(v) for k, v in metrics.items()})
        self._attrs(p.trial, {"metric_keys": list(metrics), "curve": curve, "trial_wall_s": wall})
        if bad:
            self._fail(p.held, "error", f"objective {bad[0]} is {values[objectives.index(bad[0])]!r}", retry="never")
            return
        retry_storage(lambda: p.held.study.tell(p.trial, values=[float(v) for v in values], skip_if_finished=True))
        self.result.completed += 1

    def _fail_all(self, prepared: list[Prepared], pending: list[Held], exc: Exception, wall: float) -> None:
        """Training the unit raised: every trial of it fails with a counted retry."""
        reason = _reason(exc)
        names = ", ".join(f"{p.held.study.study_name.rsplit('/', 1)[-1]}#{p.trial.number}" for p in prepared)
        print(f"worker {self.index}: trial{'s' * (len(prepared) > 1)} {names} failed: {reason}", file=sys.stderr)
        for p in prepared:
            self._attrs(p.trial, {"trial_wall_s": wall, "traceback": traceback.format_exc(limit=8)})
            self._fail(p.held, "error", reason, retry="counted")
            pending.remove(p.held)

    def _fail_outside(self, h: Held, exc: Exception) -> None:
        """The bookkeeping around a trial failed: FAIL it (counted retry) if the storage lets us."""
        reason = _reason(exc)
        print(f"worker {self.index}: trial id {h.trial_id} failed outside training: {reason}", file=sys.stderr)
        try:
            self._fail(h, "error", reason, retry="counted")
        except Exception:  # storage unreachable: the stale heartbeat will re-queue it
            pass

    def _fail(self, h: Held, kind: str, reason: str, retry: str) -> None:
        """FAIL the trial with its reason; retry: "never", "counted" (up to max_retry) or "free"."""
        self.result.failed += 1
        storage = self.storage
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            retry_storage(lambda: storage.set_trial_user_attr(h.trial_id, "fail_kind", kind))
            retry_storage(lambda: storage.set_trial_user_attr(h.trial_id, "fail_reason", reason))
            number = retry_storage(lambda: storage.get_trial_number_from_id(h.trial_id))  # tell() takes a number
            retry_storage(lambda: h.study.tell(number, state=TrialState.FAIL, skip_if_finished=True))
            if retry != "never":
                requeue(h.study, storage.get_trial(h.trial_id), count_retry=retry == "counted",
                        max_retry=self.spec.worker.max_retry)

    def _attrs(self, trial: optuna.Trial, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            retry_storage(lambda: trial.set_user_attr(key, value))

    # -- progress --------------------------------------------------------------------------------

    def _refresh_bar(self) -> None:
        if self.bar is None:
            return
        total = done = 0
        for study in self.studies.values():
            for trials in by_plan_key(current(study.get_trials(deepcopy=False), study.user_attrs)).values():
                total += 1
                done += trials[-1].state in (TrialState.COMPLETE, TrialState.FAIL)
        self.bar.show(done, total, self.result.ran)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def timescales(config: RunConfig, metrics: Metrics) -> Metrics:
    """A trial's EMA timescales: `tau` with the peak lr (as the pipeline records it) and
    `tau_mean_lr` with the schedule's mean lr over the run's steps (None without steps)."""
    from scaling.core.schedule import mean_lr_multiplier

    tau, steps = metrics.get("tau"), metrics.get("steps")
    if not isinstance(tau, (int, float)) or isinstance(tau, bool) or math.isnan(tau):
        return {}
    if not isinstance(steps, int) or steps < 1:
        return {}
    if config.decay_mode == "independent":  # the shrink does not follow the lr
        return {"tau_mean_lr": tau}
    mean = mean_lr_multiplier(steps, config.schedule, config.warmup_frac, config.final_lr_frac, config.cooldown_frac)
    return {"tau_mean_lr": tau / mean}


@contextlib.contextmanager
def stop_signals_as_interrupt():
    """SIGTERM and SIGHUP (kill, a closed terminal, a batch system's stop) raise KeyboardInterrupt
    like Ctrl-C, so they stop a worker the same way: its trials re-queued, nothing orphaned."""
    yield from _handling(signal.SIGTERM, signal.SIGHUP, handler=_raise_interrupt)


@contextlib.contextmanager
def stop_signals_ignored():
    """No SIGINT, SIGTERM or SIGHUP while the block runs (the clean-up after the first one)."""
    yield from _handling(*STOP_SIGNALS, handler=signal.SIG_IGN)


def _handling(*signums: int, handler):
    try:
        previous = {s: signal.signal(s, handler) for s in signums}
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _reason(exc: BaseException) -> str:
    """An exception as one line: "TypeName: message"."""
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")


PROGRESS_ENV = "SCALING_PROGRESS_EVERY"  # seconds between plain progress lines (default 30)


class _Bar:
    """A tqdm bar per worker, for a terminal."""

    def __init__(self, index: int):
        from tqdm import tqdm

        self.bar = tqdm(desc=f"worker {index}", position=index, unit="trial", dynamic_ncols=True, leave=True)

    def show(self, done: int, total: int, mine: int) -> None:
        if self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        self.bar.set_postfix_str(f"mine {mine}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class _Lines:
    """Plain progress lines for a log file: one whole line at most every `every` s, also while a
    long trial trains (from a daemon thread, with the counts as of the last trial), and a last one."""

    def __init__(self, index: int, every: float):
        self.index, self.every = index, every
        self.start = time.monotonic()
        self.last = -math.inf  # the first state is shown at once
        self.state: tuple[int, int, int] | None = None
        self.first_done: int | None = None
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.ticker = threading.Thread(target=self._tick, daemon=True, name=f"progress-{index}")
        self.ticker.start()

    def show(self, done: int, total: int, mine: int) -> None:
        with self.lock:
            self.state = (done, total, mine)
            if self.first_done is None:
                self.first_done = done
            if time.monotonic() - self.last >= self.every:
                self._print()

    def close(self) -> None:
        self.stop.set()
        with self.lock:
            if self.state is not None:
                self._print()

    def _tick(self) -> None:
        while not self.stop.wait(max(self.every, 1.0)):
            with self.lock:
                if self.state is not None and time.monotonic() - self.last >= self.every:
                    self._print()

    def _print(self) -> None:
        assert self.state is not None and self.first_done is not None
        done, total, mine = self.state
        self.last = time.monotonic()
        minutes = (self.last - self.start) / 60
        rate = (done - self.first_done) / minutes if minutes > 0 else 0.0
        sys.stderr.write(f"worker {self.index}: {done}/{total} trials finished, {mine} run by this worker, "
                         f"{rate:.2g} trials/min\n")
        sys.stderr.flush()


def _make_bar(index: int, progress: bool) -> _Bar | _Lines | None:
    """Bars on a terminal, plain periodic lines otherwise (no escape codes in log files)."""
    if not progress:
        return None
    if sys.stderr.isatty():
        return _Bar(index)
    return _Lines(index, float(os.environ.get(PROGRESS_ENV, "30")))


def run_worker(spec: StudySpec, storage_url: str, index: int = 0, trial_fn: TrialFn | None = None,
               progress: bool = True, threads: int | None = None, batch_fn: Unit | None = None) -> WorkerResult:
    """Run one worker in this process until the study has nothing left to run."""
    unit = make_unit(spec, trial_fn, batch_fn)
    if threads is not None:
        set_threads(threads)
    return Worker(spec, storage_url, unit, index=index, progress=progress).run()
