"""Decay laws: how the per-cell optimum moves with model size N and token budget D.

For each objective separately (design.md section 4.3):

    ln decay* = c + a ln N + b ln D                      (form "n_d", 3 parameters)
    ln tau*   = c + m ln TPP                              (Power Lines form, Bergsma et al. 2025,
                                                           "Power Lines: Scaling Laws for Weight
                                                           Decay and Batch Size in LLM
                                                           Pre-training", arXiv 2505.13738;
                                                           tau = B / (lr * decay * D))

Only bracketed cells enter a fit; the others are listed with their reason. Fewer cells than
the 3-parameter law can support (< 4, or N and D collinear, e.g. one TPP for every size)
degrade to a 2-parameter law in ln TPP or ln N, with a warning saying so. Fewer cells than
parameters plus one (no residual degree of freedom, so no interval) is a FitError.

Weights. Each cell's ln decay* carries its bootstrap sd s_i, but cells also scatter around any
smooth law for reasons no seed resampling sees. The fit is a random-effects meta-regression:
weights w_i = 1 / (s_i^2 + tau2), with the between-cell variance tau2 chosen by the Paule-Mandel
rule (the weighted residual sum of squares equals its degrees of freedom; tau2 = 0 when the
s_i already explain the scatter), then statsmodels WLS with those weights.

Prediction intervals are statsmodels' `get_prediction(...).summary_frame(alpha=1 - level)`
obs_ci, t-based on the residual degrees of freedom, for a new cell whose variance around the law
is tau2 (its true optimum) plus, optionally, a measurement sd (a realised, noisy optimum: used
by the backtest).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import statsmodels.api as sm
from scipy.optimize import brentq

from scaling.errors import FitError
from scaling.fit.optima import MIN_LOG_SD, CellOptimum

# form -> (terms, coefficient names, formula template)
FORMS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "n_d": (("const", "ln_n", "ln_d"), ("c", "a", "b"), "ln {y} = c + a ln N + b ln D"),
    "tpp": (("const", "ln_tpp"), ("c", "m"), "ln {y} = c + m ln TPP"),
    "n": (("const", "ln_n"), ("c", "a"), "ln {y} = c + a ln N"),
}
RESPONSES = {"decay": "decay*", "tau": "tau*"}


@dataclass(frozen=True)
class Coefficient:
    name: str
    term: str
    value: float
    se: float
    low: float
    high: float

    def to_dict(self) -> dict:
        return {"term": self.term, "value": self.value, "se": self.se, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class LawPrediction:
    """A law's prediction at one (N, D): ln-scale centre and interval, and natural-scale values."""

    n_params: float
    n_tokens: float
    log_value: float
    log_low: float
    log_high: float
    level: float

    @property
    def value(self) -> float:
        return math.exp(self.log_value)

    @property
    def low(self) -> float:
        return math.exp(self.log_low)

    @property
    def high(self) -> float:
        return math.exp(self.log_high)

    def contains(self, x: float) -> bool:
        return x > 0 and self.log_low <= math.log(x) <= self.log_high


@dataclass(frozen=True)
class DecayLaw:
    """A fitted law for ln decay* (or ln tau*) of one objective, with CIs and PIs."""

    objective: str
    direction: str
    response: str  # "decay" or "tau"
    form: str  # key of FORMS
    formula: str
    coefficients: tuple[Coefficient, ...]
    cells: tuple[str, ...]  # cells the fit used
    excluded: tuple[tuple[str, str], ...]  # (cell, reason) for cells left out
    tau2: float  # between-cell variance of ln decay* around the law
    scale: float  # WLS residual scale (about 1 when tau2 > 0)
    df_resid: int
    ci_level: float
    warnings: tuple[str, ...]
    n_range: tuple[float, float]
    d_range: tuple[float, float]
    tpp_range: tuple[float, float]
    results: Any = field(default=None, repr=False, compare=False)  # statsmodels WLS results

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    def coefficient(self, name: str) -> Coefficient:
        for coef in self.coefficients:
            if coef.name == name:
                return coef
        raise KeyError(f"{self.formula} has no coefficient {name!r}")

    def predict(
        self, n_params: float, n_tokens: float, *, level: float = 0.9, measurement_sd: float = 0.0
    ) -> LawPrediction:
        """Prediction interval at (N, D) for the cell's true optimum (measurement_sd = 0) or for a
        realised optimum measured with that sd of ln decay*."""
        if not (n_params > 0 and n_tokens > 0):
            raise FitError(f"prediction needs n_params > 0 and n_tokens > 0, got {n_params!r}, {n_tokens!r}")
        x = _design(self.form, np.array([math.log(n_params)]), np.array([math.log(n_tokens)]))
        var_new = self.tau2 + (measurement_sd if math.isfinite(measurement_sd) else 0.0) ** 2
        # statsmodels uses scale / weights as the new observation's variance
        weights = np.array([1.0 / max(var_new, 1e-12)])
        frame = self.results.get_prediction(x, weights=weights).summary_frame(alpha=1.0 - level)
        return LawPrediction(
            n_params=float(n_params),
            n_tokens=float(n_tokens),
            log_value=float(frame["mean"].iloc[0]),
            log_low=float(frame["obs_ci_lower"].iloc[0]),
            log_high=float(frame["obs_ci_upper"].iloc[0]),
            level=level,
        )

    def to_dict(self) -> dict:
        return {
            "objective": self.objective,
            "direction": self.direction,
            "response": self.response,
            "form": self.form,
            "formula": self.formula,
            "coefficients": {c.name: _clean(c.to_dict()) for c in self.coefficients},
            "ci_level": self.ci_level,
            "n_cells": self.n_cells,
            "cells": list(self.cells),
            "excluded": [{"cell": c, "reason": r} for c, r in self.excluded],
            "tau2": _num(self.tau2),
            "scale": _num(self.scale),
            "df_resid": self.df_resid,
            "warnings": list(self.warnings),
            "n_range": [_num(v) for v in self.n_range],
            "d_range": [_num(v) for v in self.d_range],
            "tpp_range": [_num(v) for v in self.tpp_range],
        }


def fit_decay_law(
    optima: Sequence[CellOptimum],
    *,
    form: str = "auto",
    response: str = "decay",
    ci_level: float = 0.95,
) -> DecayLaw:
    """Fit ln decay* (response="decay") or ln tau* (response="tau") across the cells of one
    objective. form: "auto" (3-parameter law if the cells support it, else a 2-parameter one),
    or one of FORMS ("n_d", "tpp", "n")."""
    if not optima:
        raise FitError("decay law: no cell optima to fit")
    objective, direction = optima[0].objective, optima[0].direction
    if response not in RESPONSES:
        raise FitError(f"decay law: response must be 'decay' or 'tau', got {response!r}")
    used, excluded = [], []
    for opt in optima:
        if not opt.bracketed:
            excluded.append((opt.cell, opt.reason or "not bracketed"))
        elif response == "tau" and not (math.isfinite(opt.tau_opt) and opt.tau_opt > 0):
            excluded.append((opt.cell, "no lr / batch_tokens to compute tau"))
        else:
            used.append(opt)
    if not used:
        raise FitError(
            f"{objective}: no bracketed optimum in any of {len(optima)} cells (the best decay sits at "
            "the edge of the searched range everywhere); widen the decay grid"
        )

    log_n = np.log([o.n_params for o in used])
    log_d = np.log([o.n_tokens for o in used])
    warnings: list[str] = []
    chosen = _choose_form(form, log_n, log_d, objective, response, warnings)
    terms, names, template = FORMS[chosen]
    formula = template.format(y=RESPONSES[response])
    if len(used) < len(terms) + 1:
        raise FitError(
            f"{objective}: {formula} has {len(terms)} parameters and needs at least {len(terms) + 1} "
            f"bracketed cells for an interval; have {len(used)}"
        )
    y = np.log([o.tau_opt if response == "tau" else o.decay_opt for o in used])
    sd = np.array([o.log_sd if math.isfinite(o.log_sd) else 0.0 for o in used])
    sd = np.where(sd > 0, np.maximum(sd, MIN_LOG_SD), 0.0)
    x = _design(chosen, log_n, log_d)

    tau2 = _paule_mandel(y, x, sd)
    weights = 1.0 / np.maximum(sd**2 + tau2, 1e-12)
    res = sm.WLS(y, x, weights=weights).fit()
    ci = res.conf_int(alpha=1.0 - ci_level)
    coefs = tuple(
        Coefficient(name, term, float(res.params[i]), float(res.bse[i]), float(ci[i, 0]), float(ci[i, 1]))
        for i, (name, term) in enumerate(zip(names, terms))
    )
    n = np.exp(log_n)
    d = np.exp(log_d)
    return DecayLaw(
        objective=objective,
        direction=direction,
        response=response,
        form=chosen,
        formula=formula,
        coefficients=coefs,
        cells=tuple(o.cell for o in used),
        excluded=tuple(excluded),
        tau2=float(tau2),
        scale=float(res.scale),
        df_resid=round(res.df_resid),
        ci_level=ci_level,
        warnings=tuple(warnings),
        n_range=(float(n.min()), float(n.max())),
        d_range=(float(d.min()), float(d.max())),
        tpp_range=(float((d / n).min()), float((d / n).max())),
        results=res,
    )


def _choose_form(form: str, log_n, log_d, objective: str, response: str, warnings: list[str]) -> str:
    n_cells = log_n.size
    varies_n = np.ptp(log_n) > 1e-9
    varies_tpp = np.ptp(log_d - log_n) > 1e-9
    if form != "auto":
        if form not in FORMS:
            raise FitError(f"decay law: form must be 'auto' or one of {', '.join(FORMS)}, got {form!r}")
        need = {"n_d": varies_n and varies_tpp, "tpp": varies_tpp, "n": varies_n}[form]
        if not need:
            raise FitError(f"{objective}: the bracketed cells do not vary enough in N / TPP for the {form!r} law")
        return form
    if not (varies_n or varies_tpp):
        raise FitError(f"{objective}: every bracketed cell has the same (N, D); a law needs cells that differ")
    if response == "tau":
        if not varies_tpp:
            raise FitError(f"{objective}: the Power Lines law needs cells at 2 or more TPP values")
        return "tpp"
    full_rank = np.linalg.matrix_rank(_design("n_d", log_n, log_d), tol=1e-8) == 3
    if n_cells >= 4 and full_rank:
        return "n_d"
    if varies_n and not varies_tpp:
        fallback, why = "n", "all bracketed cells share one TPP, so N and D cannot be told apart"
    elif varies_tpp and not varies_n:
        fallback, why = "tpp", "all bracketed cells share one N"
    elif not full_rank:
        fallback, why = "tpp", "ln N and ln D are collinear across the bracketed cells"
    else:
        fallback, why = "tpp", f"only {n_cells} bracketed cells (the 3-parameter law needs 4)"
    formula = FORMS[fallback][2].format(y=RESPONSES[response])
    warnings.append(f"{objective}: {why}; fell back to the 2-parameter law {formula}")
    return fallback


def _design(form: str, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    ones = np.ones_like(log_n)
    if form == "n_d":
        return np.column_stack([ones, log_n, log_d])
    if form == "tpp":
        return np.column_stack([ones, log_d - log_n])
    if form == "n":
        return np.column_stack([ones, log_n])
    raise FitError(f"unknown law form {form!r}")


def _paule_mandel(y: np.ndarray, x: np.ndarray, sd: np.ndarray) -> float:
    """Between-cell variance tau2 with sum w_i r_i^2 = n - p, w_i = 1 / (sd_i^2 + tau2)."""
    dof = y.size - x.shape[1]
    if dof <= 0:
        return 0.0

    def excess(tau2: float) -> float:
        w = 1.0 / np.maximum(sd**2 + tau2, 1e-300)
        sw = np.sqrt(w)
        beta, *_ = np.linalg.lstsq(x * sw[:, None], y * sw, rcond=None)
        r = y - x @ beta
        return float(np.sum(w * r * r)) - dof

    if np.all(sd > 0) and excess(0.0) <= 0:
        return 0.0
    hi = float(np.var(y)) + 1.0
    while excess(hi) > 0:
        hi *= 10.0
    lo = 1e-12 if np.any(sd == 0) else 0.0
    if excess(lo) <= 0:
        return lo
    return float(brentq(excess, lo, hi, xtol=1e-12, rtol=1e-10))


def _num(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _clean(d: dict) -> dict:
    return {k: (_num(v) if isinstance(v, float) else v) for k, v in d.items()}
