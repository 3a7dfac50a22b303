"""Units of work: the trials a worker claims together, trained by one function.

A unit function takes the RunConfigs of the trials a worker claimed together and returns one
metrics dict per config, in order. A model that diverged gets a dict with `error`,
`diverged_step` and `diverged_phase` instead of raising, so it fails alone. The spec picks it:

  one trial    `lone(trial_fn)`: one config, trained by a `RunConfig -> metrics` function
  a stack      `batch_models = K`: up to K trials of one cell trained as one stacked model
  branches     `cooldown_branches = true`: one size's trials across budgets, one WSD run per
               (decay, seed) with a cooldown branch per budget
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from scaling.errors import ConfigError, TrainingDiverged
from scaling.study.spec import Cell, StudySpec
from scaling.study.training import (RunConfig, check_stackable, pretraining_compute, run_branches, run_one, run_stack,
                                    trained_tokens)

Metrics = dict[str, Any]
Unit = Callable[[list[RunConfig]], list[Metrics]]
TrialFn = Callable[[RunConfig], Metrics]


def lone(trial_fn: TrialFn) -> Unit:
    """The unit of one trial: `trial_fn(config)`, its TrainingDiverged turned into a result."""
    def unit(configs: list[RunConfig]) -> list[Metrics]:
        (config,) = configs
        try:
            return [trial_fn(config)]
        except TrainingDiverged as exc:
            return [{"error": str(exc), "diverged_step": exc.step, "diverged_phase": exc.phase}]
    return unit


def stacked(batch_fn: Unit) -> Unit:
    """The unit of one cell's trials trained together by `batch_fn` (they may differ only in
    decay and seed)."""
    def unit(configs: list[RunConfig]) -> list[Metrics]:
        check_stackable(configs)
        return batch_fn(configs)
    return unit


def branches(configs: list[RunConfig], compile: bool = False) -> list[Metrics]:
    """The unit of one size's trials across budgets: one stacked WSD run per (decay, seed)
    through the largest claimed budget, with a cooldown branch per claimed budget."""
    models: dict[tuple[float, int], list[int]] = {}  # (decay, seed) -> indexes into configs
    for i, config in enumerate(configs):
        models.setdefault((config.decay, config.seed), []).append(i)
    tokens = [trained_tokens(config) for config in configs]
    budgets = sorted(set(tokens))
    base = [configs[members[0]].replace(tokens=budgets[-1], tpp=None) for members in models.values()]
    check_stackable(base)  # one size's trials differ only in decay, seed and budget
    rows = run_branches(base, budgets, compile)
    if len(rows) != len(base) or any(len(row) != len(budgets) for row in rows):
        raise RuntimeError(f"cooldown branches returned {[len(r) for r in rows]} results for "
                           f"{len(base)} configs x {len(budgets)} budgets")
    results: list[Metrics] = [{} for _ in configs]
    for row, members in zip(rows, models.values()):
        for i in members:
            results[i] = row[budgets.index(tokens[i])]
    return results


def unit_cost(spec: StudySpec, cells: Sequence[Cell]) -> int:
    """What one trial of a unit drawn from `cells` costs to train, up to a constant: non-embedding
    parameters x trained tokens of the largest cell (one cell; or one size's cells for cooldown
    branches, which run through the largest budget). Fine-tuning and evaluation are left out:
    the order it gives workers (largest first) is all it is for."""
    return max(pretraining_compute(spec.run_config(cell, 0.0, spec.seeds[0])) for cell in cells)


def claim_order(spec: StudySpec) -> list[list[Cell]]:
    """The groups of cells a worker claims units from, the costliest (`unit_cost`) first and
    ties in spec order: one cell each, or one size's cells with cooldown branches. Longest
    first keeps the largest cell's units from starting last and ending the study on one core."""
    if spec.cooldown_branches:
        groups = [[c for c in spec.cells() if c.size == size] for size in spec.sizes]
    else:
        groups = [[c] for c in spec.cells()]
    return sorted(groups, key=lambda cells: -unit_cost(spec, cells))  # a stable sort: ties keep spec order


def check_fns(spec: StudySpec, trial_fn: TrialFn | None, batch_fn: Unit | None) -> None:
    """A custom `trial_fn` trains one config; batching it needs a matching `batch_fn`, and
    cooldown branches (several budgets from one run) cannot use it at all."""
    if spec.cooldown_branches and trial_fn is not None:
        raise ConfigError(f"{spec.path}: cooldown_branches: a custom trial_fn trains one config at one budget; "
                          "expected cooldown_branches = false with a trial_fn, got true")
    if spec.batch_models > 1 and trial_fn is not None and batch_fn is None:
        raise ConfigError(f"{spec.path}: batch_models: a custom trial_fn trains one config at a time; "
                          f"expected batch_models = 1 or a batch_fn, got {spec.batch_models}")


def make_unit(spec: StudySpec, trial_fn: TrialFn | None = None, batch_fn: Unit | None = None) -> Unit:
    """The spec's unit, training with the real pipeline unless `trial_fn`/`batch_fn` replace it."""
    check_fns(spec, trial_fn, batch_fn)
    if spec.cooldown_branches:
        return functools.partial(branches, compile=spec.compile)
    if spec.batch_models > 1:
        return stacked(batch_fn or functools.partial(run_stack, compile=spec.compile))
    return lone(trial_fn or run_one)
