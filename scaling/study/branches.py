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

import time
from collections.abc import Callable
from typing import Any

import optuna

from scaling.config import RunConfig
from scaling.study.storage import retry_storage
from scaling.study.worker import Prepared, Worker, claim_planned

# K base configs (differing in decay/seed) and budgets in tokens in, metrics[config][budget] out
BranchFn = Callable[[list[RunConfig], list[int]], list[list[dict[str, Any]]]]


def pipeline_branches(configs: list[RunConfig], budgets: list[int]) -> list[list[dict[str, Any]]]:
    """The default unit of work: `scaling.cooldown.run_pipeline_with_cooldowns`."""
    from scaling.cooldown import run_pipeline_with_cooldowns

    return run_pipeline_with_cooldowns(configs, budgets)


class BranchWorker(Worker):
    def __init__(self, *args: Any, branch_fn: BranchFn | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.branch_fn = branch_fn or pipeline_branches

    def _claim_next(self) -> list[tuple[optuna.Study, int]] | None:
        """Up to `batch_models` plan keys of the first size with anything waiting, each with its
        trial in every budget's cell that still has it waiting."""
        for size in self.spec.sizes:
            studies = [self.studies[c.name] for c in self.cells if c.size == size]
            for study in studies:
                retry_storage(lambda: optuna.storages.fail_stale_trials(study))
            units: dict[str | None, list[tuple[optuna.Study, int]]] = {}
            for study in studies:
                while len(units) < self.spec.batch_models:
                    got = retry_storage(lambda: claim_planned(study, exclude=set(units)))
                    if got is None:
                        break
                    units[got[1]] = [(study, got[0])]
            for key, members in units.items():
                taken = {study for study, _ in members}
                for study in studies:
                    if study in taken or key is None:
                        continue
                    got = retry_storage(lambda: claim_planned(study, key=key))
                    if got is not None:
                        members.append((study, got[0]))
            if units:
                return [member for members in units.values() for member in members]
        return None

    def _execute(self, claimed: list[tuple[optuna.Study, int]]) -> None:
        self._run_unit(claimed)

    def _train_unit(self, prepared: list[Prepared], pending: list[tuple[optuna.Study, int]]) -> None:
        """One stacked model per (decay, seed), a cooldown branch per claimed budget."""
        from scaling.batched import check_stackable
        from scaling.model import non_embedding_params
        from scaling.train import model_shape, token_budget

        start = time.perf_counter()
        by_model: dict[tuple[float, int], list[Prepared]] = {}
        for item in prepared:
            by_model.setdefault((item[2].decay, item[2].seed), []).append(item)
        n_params = non_embedding_params(model_shape(prepared[0][2]))
        tokens = {trial._trial_id: token_budget(config, n_params)[1] for _, trial, config in prepared}
        budgets = sorted(set(tokens.values()))
        try:
            base = [items[0][2].replace(tokens=budgets[-1], tpp=None) for items in by_model.values()]
            check_stackable(base)  # one size's trials differ only in decay, seed and budget
            results = self.branch_fn(base, budgets)
            if len(results) != len(base) or any(len(row) != len(budgets) for row in results):
                raise RuntimeError(f"branch_fn returned {[len(r) for r in results]} results for "
                                   f"{len(base)} configs x {len(budgets)} budgets")
        except Exception as exc:
            self._fail_unit(prepared, pending, exc, time.perf_counter() - start)
            return
        wall = time.perf_counter() - start  # every trial of the unit ran this long
        for row, items in zip(results, by_model.values()):
            for study, trial, _ in items:
                self._finish(study, trial, row[budgets.index(tokens[trial._trial_id])], wall, pending)
