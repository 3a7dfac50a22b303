"""The Optuna sampler of a cell's study, and the decay it proposes for a trial."""

from __future__ import annotations

import optuna

from scaling.study.spec import DecaySearch


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


def suggest_decay(trial: optuna.Trial, search: DecaySearch, bounds: tuple[float, float] | None = None) -> float:
    """The trial's decay: its enqueued value (a grid point or a refinement trial's), or the
    sampler's proposal in `bounds` (default the search's; a timescale grid's are per cell)."""
    low, high = bounds if bounds is not None else search.bounds()
    planned = trial.user_attrs.get("planned_decay")
    if planned is not None:  # refinement may step beyond the grid: widen so the value fits
        low, high = min(low, float(planned)), max(high, float(planned))
    return float(trial.suggest_float("decay", low, high, log=search.log and not search.is_grid))
