"""Backtest: refit a decay (or timescale) law without the largest model size and predict it.

This is the check that separates a recommendation from a guess (design.md section 4.4): the
cells of the largest N are held out, the law is refitted on the rest (the same automatic choice
of form, so with fewer cells it may degrade), and each held-out bracketed cell's realised
optimum (interior cells only) is compared with the prediction interval (the law's variance
already holds the cells' estimation scatter, see laws.py).
`distance` is how far the refit extrapolated: held-out N / largest N it was fitted on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scaling.errors import FitError
from scaling.fit.laws import RESPONSES, fit_decay_law, observations
from scaling.fit.optima import CellOptimum


@dataclass(frozen=True)
class BacktestCase:
    cell: str
    n_params: float
    n_tokens: float
    predicted: float
    low: float
    high: float
    realised: float
    log_error: float  # ln(predicted / realised)
    factor: float  # exp(|log_error|): "off by a factor of ..."
    inside: bool

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Backtest:
    objective: str
    available: bool
    reason: str | None  # why not available
    held_out_n_params: float
    form: str | None  # the law form the refit used
    n_train_cells: int
    level: float
    cases: tuple[BacktestCase, ...]
    distance: float = float("nan")  # held-out N / largest training N
    response: str = "decay"  # what the law predicts (laws.RESPONSES): decay*, tau*, decay_tol or tau_tol
    law_form: str | None = None  # form of the full-data law this checks (the refit's `form` may degrade)

    @property
    def mean_abs_log_error(self) -> float:
        return sum(abs(c.log_error) for c in self.cases) / len(self.cases) if self.cases else math.nan

    @property
    def max_factor(self) -> float:
        return max((c.factor for c in self.cases), default=math.nan)

    @property
    def n_inside(self) -> int:
        return int(sum(bool(c.inside) for c in self.cases))

    def to_dict(self) -> dict:
        mae = self.mean_abs_log_error
        mf = self.max_factor
        return {
            "objective": self.objective,
            "available": self.available,
            "reason": self.reason,
            "held_out_n_params": self.held_out_n_params,
            "form": self.form,
            "response": self.response,
            "law_form": self.law_form,
            "n_train_cells": self.n_train_cells,
            "level": self.level,
            "distance": self.distance if math.isfinite(self.distance) else None,
            "n_cases": len(self.cases),
            "n_inside": self.n_inside,
            "mean_abs_log_error": mae if math.isfinite(mae) else None,
            "mean_factor": math.exp(mae) if math.isfinite(mae) else None,
            "max_factor": mf if math.isfinite(mf) else None,
            "cases": [c.to_dict() for c in self.cases],
        }


def backtest_law(
    optima: Sequence[CellOptimum], *, level: float = 0.9, form: str = "auto", response: str = "decay"
) -> Backtest:
    """Hold out the largest N, refit the `response` law (laws.RESPONSES) on the rest, predict the
    held-out cells where that response is interior (a realised value, not a bound)."""
    if not optima:
        raise FitError("backtest: no cell optima")
    objective = optima[0].objective
    largest = max(o.n_params for o in optima)
    train = [o for o in optima if o.n_params < largest]
    held, _ = observations([o for o in optima if o.n_params == largest], response)
    test = [ob for ob in held if ob.kind == "interior"]
    distance = largest / max((o.n_params for o in train), default=math.nan)

    def unavailable(reason: str, form_used: str | None = None) -> Backtest:
        return Backtest(objective, False, reason, largest, form_used, len(train), level, (), distance, response)

    if not test:
        return unavailable(f"no interior {RESPONSES[response]} at the largest N ({largest:.3g}) to check against")
    try:
        law = fit_decay_law(train, form=form, response=response, cross_validate=False)
    except FitError as exc:
        return unavailable(f"cannot refit without the largest N: {exc}")
    cases = []
    for ob in test:
        pred = law.predict(ob.n_params, ob.n_tokens, level=level)
        realised = math.exp(ob.log_value)
        err = pred.log_value - ob.log_value
        cases.append(
            BacktestCase(
                cell=ob.cell, n_params=ob.n_params, n_tokens=ob.n_tokens, predicted=pred.value,
                low=pred.low, high=pred.high, realised=realised, log_error=err, factor=math.exp(abs(err)),
                inside=bool(pred.contains(realised)),
            )
        )  # fmt: skip
    return Backtest(objective, True, None, largest, law.form, law.n_cells, level, tuple(cases), distance, response)
