"""Study workers for `cooldown_branches = true`: every budget of a size from one run.

A plain worker claims trials of one cell (one size, one budget). A branch worker claims, for a
size, the trials of one plan key (a decay and a seed) in every budget's cell at once, up to
`batch_models` plan keys, and trains them as one shared WSD stable phase with a cooldown branch
per budget (`scaling.cooldown.run_pipeline_with_cooldowns`). Each branch's result is recorded
into its own cell's trial exactly as a lone trial would be: a diverged model fails alone (in
every budget it had not reached yet and in those whose branches carry its divergence), the
others complete; an error of the whole unit fails every trial of it with a counted retry.

Claims stay atomic per trial (`claim_planned`), so a unit never takes a trial another worker
holds: if some budget's trial of a plan key is already running or done elsewhere (a retry, a
plain worker beside this one), the unit simply branches for the budgets it did claim.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from scaling.config import RunConfig
from scaling.study.spec import Cell
from scaling.study.storage import retry_storage
from scaling.study.worker import Heartbeat, Worker, _jsonable, _sigint_ignored, claim_planned

# K base configs (differing in decay/seed) and budgets in tokens in, metrics[config][budget] out
BranchFn = Callable[[list[RunConfig], list[int]], list[list[dict[str, Any]]]]


def pipeline_branches(configs: list[RunConfig], budgets: list[int]) -> list[list[dict[str, Any]]]:
    """The default unit of work: `scaling.cooldown.run_pipeline_with_cooldowns`."""
    from scaling.cooldown import run_pipeline_with_cooldowns

    return run_pipeline_with_cooldowns(configs, budgets, progress=False)


@dataclass(frozen=True)
class Member:
    """One claimed trial of a unit: the cell it belongs to and its ids."""

    cell: Cell
    study: optuna.Study
    trial_id: int


class BranchWorker(Worker):
    def __init__(self, *args: Any, branch_fn: BranchFn | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.branch_fn = branch_fn or pipeline_branches

    def _claim_next(self) -> list[Member] | None:
        """Up to `batch_models` plan keys of the first size with anything waiting, each with its
        trial in every budget's cell that still has it waiting."""
        for size in self.spec.sizes:
            cells = [c for c in self.cells if c.size == size]
            for cell in cells:
                study = self.studies[cell.name]
                retry_storage(lambda: optuna.storages.fail_stale_trials(study))
            units: dict[str | None, list[Member]] = {}
            for cell in cells:
                study = self.studies[cell.name]
                while len(units) < self.spec.batch_models:
                    got = retry_storage(lambda: claim_planned(study, exclude=set(units)))
                    if got is None:
                        break
                    units[got[1]] = [Member(cell, study, got[0])]
            for key, members in units.items():
                taken = {m.cell.name for m in members}
                for cell in cells:
                    if cell.name in taken or key is None:
                        continue
                    study = self.studies[cell.name]
                    got = retry_storage(lambda: claim_planned(study, key=key))
                    if got is not None:
                        members.append(Member(cell, study, got[0]))
            if units:
                return [m for members in units.values() for m in members]
        return None

    def _execute(self, members: list[Member]) -> None:
        """`Worker._run_batch` for a unit spanning several cells."""
        self.result.ran += len(members)
        pending = list(members)  # claimed and not yet told
        try:
            with contextlib.ExitStack() as beats:
                for m in members:
                    beats.enter_context(Heartbeat(self.storage, m.trial_id, self.spec.worker.heartbeat_interval))
                prepared = []
                for m in members:
                    trial = optuna.Trial(m.study, m.trial_id)
                    try:
                        self._attrs(trial, self.info)
                        prepared.append((m, trial, self._prepare(trial)))
                    except Exception as exc:  # this trial alone is broken (a foreign trial)
                        self._fail_outside(m.study, m.trial_id, exc)
                        pending.remove(m)
                if prepared:
                    self._train_branches(prepared, pending)
        except KeyboardInterrupt:
            with _sigint_ignored():
                for m in pending:
                    self._fail(m.study, m.trial_id, "interrupted", "interrupted by the user (Ctrl-C)", retry="free")
            raise
        except Exception as exc:
            for m in pending:
                self._fail_outside(m.study, m.trial_id, exc)

    def _train_branches(self, prepared: list[tuple[Member, optuna.Trial, RunConfig]], pending: list[Member]) -> None:
        from scaling.batched import check_stackable
        from scaling.model import non_embedding_params
        from scaling.train import model_shape, token_budget

        start = time.perf_counter()
        by_model: dict[tuple[float, int], list[tuple[Member, optuna.Trial, RunConfig]]] = {}
        for item in prepared:
            by_model.setdefault((item[2].decay, item[2].seed), []).append(item)
        n_params = non_embedding_params(model_shape(prepared[0][2]))
        tokens = {item[0]: token_budget(item[2], n_params)[1] for item in prepared}
        budgets = sorted(set(tokens.values()))
        try:
            base = [items[0][2].replace(tokens=budgets[-1], tpp=None) for items in by_model.values()]
            check_stackable(base)  # one size's trials differ only in decay, seed and budget
            results = self.branch_fn(base, budgets)
            if len(results) != len(base) or any(len(row) != len(budgets) for row in results):
                raise RuntimeError(f"branch_fn returned {[len(r) for r in results]} results for "
                                   f"{len(base)} configs x {len(budgets)} budgets")
        except Exception as exc:  # a bug or a lost device: every trial of the unit as if alone
            reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            numbers = ", ".join(f"{m.cell.name}#{trial.number}" for m, trial, _ in prepared)
            print(f"worker {self.index}: trials {numbers} failed: {reason}", file=sys.stderr)
            for m, trial, _ in prepared:
                self._attrs(trial, {"trial_wall_s": time.perf_counter() - start,
                                    "traceback": traceback.format_exc(limit=8)})
                self._fail(m.study, m.trial_id, "error", reason, retry="counted")
                pending.remove(m)
            return
        wall = time.perf_counter() - start  # every trial of the unit ran this long
        for row, items in zip(results, by_model.values()):
            for m, trial, _ in items:
                metrics = row[budgets.index(tokens[m])]
                if metrics.get("error") is not None:  # diverged: final, as a lone trial's TrainingDiverged
                    self._attrs(trial, {"trial_wall_s": wall,
                                        "diverged_step": _jsonable(metrics.get("diverged_step")),
                                        "diverged_phase": metrics.get("diverged_phase")})
                    self._fail(m.study, m.trial_id, "diverged", str(metrics["error"]), retry="never")
                else:
                    self._record(m.study, trial, dict(metrics), wall)
                pending.remove(m)
