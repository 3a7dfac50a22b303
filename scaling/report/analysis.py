"""The fits the report draws, made tolerant: whatever the table supports, and why the rest is missing.

`fit_study` (scaling.fit) returns per-cell estimands even when no law can be fitted, but raises
FitError when no cell can be fitted at all; this module then falls back to `cell_optima` per
objective and records the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scaling.errors import ScalingError
from scaling.fit import CellOptimum, DecayLaw, StudyFit, cell_optima, fit_study
from scaling.fit.table import direction_of, human, plasticity_objective
from scaling.fit.recommend import Recommendation, recommend

NEXT_BUDGET_FACTOR = 4.0  # "next budget" = this many times the largest N, at the same TPP
LEVEL = 0.9  # coverage of prediction and per-cell intervals drawn in the report


@dataclass(frozen=True)
class NextBudget:
    """The budget the report extrapolates to: `factor` x the largest N at a TPP the study used."""

    n_params: float
    tpp: float
    factor: float
    largest_n: float

    @property
    def n_tokens(self) -> float:
        return self.n_params * self.tpp

    def describe(self) -> str:
        return (f"next budget: {self.factor:g}x the largest N ({human(self.largest_n)} -> {human(self.n_params)}) "
                f"at {self.tpp:.3g} TPP (D = {human(self.n_tokens)})")  # fmt: skip


@dataclass(frozen=True)
class ReportFit:
    """What the figures and the summary need from the fits."""

    fit: StudyFit | None
    optima: tuple[CellOptimum, ...]
    problems: tuple[str, ...]  # fits that could not be made, in the fitter's words
    next_budget: NextBudget | None
    recommendation: Recommendation | None
    level: float = LEVEL
    plasticity: str | None = None  # the plasticity objective (fit.plasticity): ft_nll or ft_score

    @property
    def plasticity_direction(self) -> str | None:
        """"min" (ft_nll: lower is better) or "max" (ft_score), None without a plasticity objective."""
        if self.plasticity is None:
            return None
        if self.fit is not None and self.fit.plasticity == self.plasticity:
            return self.fit.plasticity_direction or direction_of(self.plasticity)
        return direction_of(self.plasticity)

    def optima_for(self, objective: str) -> tuple[CellOptimum, ...]:
        return tuple(o for o in self.optima if o.objective == objective)

    def optimum(self, objective: str, cell: str) -> CellOptimum | None:
        return next((o for o in self.optima if o.objective == objective and o.cell == cell), None)

    def law(self, objective: str) -> DecayLaw | None:
        return self.fit.law(objective) if self.fit is not None else None

    def tau_law(self, objective: str) -> DecayLaw | None:
        return self.fit.tau_law(objective) if self.fit is not None else None

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.fit.warnings if self.fit is not None else ()


def objectives_in(trials: pd.DataFrame) -> list[tuple[str, str]]:
    """fit_study's default objectives that have finite values: val_loss (min) and the table's
    plasticity objective (ft_nll min or ft_score max; the other one if the chosen column is absent)."""
    try:
        plastic = plasticity_objective(trials)
    except ScalingError:  # a table mixing choices: fit_study reports it
        plastic = ("ft_score", "max")
    if not _has_values(trials, plastic[0]):
        plastic = next(((c, d) for c, d in (("ft_nll", "min"), ("ft_score", "max")) if _has_values(trials, c)), plastic)
    return [(col, direction) for col, direction in (("val_loss", "min"), plastic) if _has_values(trials, col)]


def _has_values(trials: pd.DataFrame, col: str) -> bool:
    return col in trials.columns and bool(np.isfinite(pd.to_numeric(trials[col], errors="coerce")).any())


def choose_next_budget(trials: pd.DataFrame, factor: float = NEXT_BUDGET_FACTOR) -> NextBudget:
    """`factor` x the largest N, at the TPP most cells of the largest N used (ties: nearest 20,
    the compute-optimal ratio)."""
    largest = float(trials["n_params"].max())
    at_largest = trials.loc[np.isclose(trials["n_params"], largest), "tpp"].round(6)
    counts = at_largest.value_counts()
    best = counts[counts == counts.max()].index.to_numpy(dtype=float)
    tpp = float(best[np.argmin(np.abs(np.log(best / 20.0)))])
    return NextBudget(n_params=largest * factor, tpp=tpp, factor=factor, largest_n=largest)


def fit_for_report(
    trials: pd.DataFrame,
    study_fit: StudyFit | None = None,
    *,
    n_bootstrap: int = 200,
    seed: int = 0,
    level: float = LEVEL,
    next_factor: float = NEXT_BUDGET_FACTOR,
    source: str = "trials table",
) -> ReportFit:
    """Fit what the table supports. `study_fit`: a fit already made (e.g. by `scaling run`)."""
    problems: list[str] = []
    fit = study_fit
    if fit is None:
        try:
            fit = fit_study(trials, n_bootstrap=n_bootstrap, seed=seed, level=level, source=source)
        except ScalingError as exc:
            problems.append(str(exc))
    if fit is not None and fit.mode == "study":
        optima, plasticity = fit.optima, fit.plasticity
    else:
        optima = _optima_alone(trials, n_bootstrap, seed, level, problems)
        plasticity = next((c for c, _ in objectives_in(trials) if c != "val_loss"), None)
    budget = choose_next_budget(trials, next_factor)
    rec = None
    if fit is not None and fit.mode == "study":
        try:
            rec = recommend(fit=fit, n_params=budget.n_params, tpp=budget.tpp, level=level)
        except ScalingError as exc:
            problems.append(f"no recommendation: {exc}")
    return ReportFit(fit=fit, optima=tuple(optima), problems=tuple(problems), next_budget=budget,
                     recommendation=rec, level=level, plasticity=plasticity)  # fmt: skip


def _optima_alone(trials, n_bootstrap, seed, level, problems: list[str]) -> list[CellOptimum]:
    out: list[CellOptimum] = []
    for i, (objective, direction) in enumerate(objectives_in(trials)):
        try:
            out.extend(cell_optima(trials, objective, direction, n_bootstrap=n_bootstrap, level=level, seed=seed + i))
        except ScalingError as exc:
            problems.append(f"{objective}: no per-cell optima: {exc}")
    return out

