"""Decay laws: how the per-cell optimum moves with model size N and token budget D.

For each objective separately (design.md section 4.3), with y = ln decay*, ln tau*, ln decay_tol or
ln tau_tol (the tolerance estimand as a timescale, tau_tol = B / (lr * decay_tol * D)):

    y = c + a ln N + b ln D          (form "n_d")
    y = c + m ln TPP                 (form "tpp": Power Lines, Bergsma et al. 2025, arXiv 2505.13738,
                                      tau = B / (lr * decay * D), m free)
    y = c - 0.53 ln TPP              (form "tpp_fixed": the same with their fitted m = -0.53)
    y = c + a ln N                   (form "n", when every cell shares one TPP)

Censored likelihood (Tobit): an interior cell contributes its estimate y_i ~ Normal(x_i beta,
tau2); a censored cell contributes the probability that its optimum lies beyond the grid edge it
was censored at (below the smallest positive decay, above the largest). tau2 is the random-effects
variance: how far a cell's estimated optimum sits from the law, between-cell deviation and
estimation error together (per-cell bootstrap sds were tried as weights and gave intervals that
covered too little; docs/fitting.md). Fitted by maximum likelihood.

Prediction interval for a new (N, D): x0 beta +- t(df) sqrt(max(x0 V x0' + tau2 n / (n - p),
pi e^2 / 2)), V the inverse observed information of beta, n the cells used, p the law's free
coefficients (the n / (n - p) factor undoes the downward bias of the ML variance), e the
leave-one-cell-out mean |ln error| over interior cells (`held_out`, the number the forms are
compared by): the prediction variance that leaving cells out measured is a floor under the
model's own (docs/fitting.md gives the coverage in simulation with and without it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_ndtr
from scipy.stats import t as student_t

from scaling.errors import FitError
from scaling.fit.text import json_number
from scaling.fit.optima import CellOptimum

POWER_LINES_M = -0.53  # Bergsma et al. 2025: tau* ~ TPP^-0.53
# form -> (terms, coefficient names, formula template)
FORMS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "n_d": (("const", "ln_n", "ln_d"), ("c", "a", "b"), "ln {y} = c + a ln N + b ln D"),
    "tpp": (("const", "ln_tpp"), ("c", "m"), "ln {y} = c + m ln TPP"),
    "tpp_fixed": (("const",), ("c",), "ln {y} = c - 0.53 ln TPP"),
    "n": (("const", "ln_n"), ("c", "a"), "ln {y} = c + a ln N"),
}
RESPONSES = {"decay": "decay*", "tau": "tau*", "tolerance": "decay_tol", "tau_tolerance": "tau_tol"}
TAU_RESPONSES = frozenset({"tau", "tau_tolerance"})  # laws of a timescale: decay = B / (lr * tau * D)
TOLERANCE_RESPONSES = frozenset({"tolerance", "tau_tolerance"})


def estimand_of(response: str) -> str:
    """"optimum" (decay*, tau*) or "tolerance" (decay_tol, tau_tol)."""
    return "tolerance" if response in TOLERANCE_RESPONSES else "optimum"


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
    """A law's prediction at one (N, D): ln-scale centre and interval."""

    n_params: float
    n_tokens: float
    log_value: float
    log_low: float
    log_high: float
    level: float

    @property
    def value(self) -> float:
        return _exp(self.log_value)

    @property
    def low(self) -> float:
        return _exp(self.log_low)

    @property
    def high(self) -> float:
        return _exp(self.log_high)

    def contains(self, x: float) -> bool:
        return x > 0 and self.log_low <= math.log(x) <= self.log_high


@dataclass(frozen=True)
class Observation:
    """One cell as a law sees it: an estimate with its sd, or a bound."""

    cell: str
    n_params: float
    n_tokens: float
    kind: str  # "interior", "censored_below", "censored_above"
    log_value: float  # the estimate, or the ln of the grid edge it is censored at
    log_sd: float


@dataclass(frozen=True)
class DecayLaw:
    """A fitted law for one objective, with coefficient CIs and prediction intervals."""

    objective: str
    direction: str
    response: str  # RESPONSES
    form: str  # key of FORMS
    formula: str
    coefficients: tuple[Coefficient, ...]
    cells: tuple[str, ...]  # interior cells
    censored: tuple[tuple[str, str, float], ...]  # (cell, kind, bound decay or tau)
    excluded: tuple[tuple[str, str], ...]  # (cell, reason) left out entirely
    tau2: float  # between-cell variance around the law (ML)
    df_resid: int
    ci_level: float
    warnings: tuple[str, ...]
    n_range: tuple[float, float]
    d_range: tuple[float, float]
    tpp_range: tuple[float, float]
    held_out: float = math.nan  # leave-one-cell-out mean |ln error| over interior cells
    held_out_n: int = 0
    cov: np.ndarray = field(default=None, repr=False, compare=False)

    @property
    def n_cells(self) -> int:
        return len(self.cells) + len(self.censored)

    @property
    def in_tau(self) -> bool:
        """True for a law of a timescale (tau* or tau_tol): it predicts tau, not decay."""
        return self.response in TAU_RESPONSES

    @property
    def estimand(self) -> str:
        return estimand_of(self.response)

    @property
    def tau2_prediction(self) -> float:
        p = len(self.coefficients)
        return self.tau2 * self.n_cells / max(self.n_cells - p, 1)

    @property
    def held_out_variance(self) -> float:
        """The variance of a prediction's error that leaving cells out measured: mean |ln error| e
        of normal errors with sd s is s sqrt(2 / pi), so s^2 = pi e^2 / 2 (0 without a held-out
        error). A floor under the model's own prediction variance: the model's can be too small
        when a few cells estimate tau2, and when this law was chosen among forms for its held-out
        error (docs/fitting.md section 6 gives the coverage with and without it)."""
        return math.pi / 2.0 * self.held_out**2 if math.isfinite(self.held_out) else 0.0

    def coefficient(self, name: str) -> Coefficient:
        for coef in self.coefficients:
            if coef.name == name:
                return coef
        raise KeyError(f"{self.formula} has no coefficient {name!r}")

    def predict(
        self, n_params: float, n_tokens: float, *, level: float = 0.9, measurement_sd: float = 0.0
    ) -> LawPrediction:
        """Prediction interval at (N, D) for a new cell's true optimum (measurement_sd = 0) or for a
        realised optimum measured with that sd of ln."""
        if not (n_params > 0 and n_tokens > 0 and math.isfinite(n_params) and math.isfinite(n_tokens)):
            raise FitError(f"prediction needs finite n_params > 0 and n_tokens > 0, got {n_params!r}, {n_tokens!r}")
        x, offset = design(self.form, np.array([math.log(n_params)]), np.array([math.log(n_tokens)]))
        beta = np.array([c.value for c in self.coefficients])
        mean = float(x[0] @ beta + offset[0])
        ms = measurement_sd if math.isfinite(measurement_sd) else 0.0
        var = max(float(x[0] @ self.cov @ x[0]) + self.tau2_prediction, self.held_out_variance) + ms * ms
        q = student_t.ppf(0.5 + level / 2.0, max(self.df_resid, 1))
        half = q * math.sqrt(max(var, 0.0))
        return LawPrediction(float(n_params), float(n_tokens), mean, mean - half, mean + half, level)

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
            "censored": [{"cell": c, "kind": k, "bound": json_number(b)} for c, k, b in self.censored],
            "excluded": [{"cell": c, "reason": r} for c, r in self.excluded],
            "tau2": json_number(self.tau2),
            "between_cell_sd": json_number(math.sqrt(self.tau2)),
            "df_resid": self.df_resid,
            "held_out_mean_abs_log_error": json_number(self.held_out),
            "held_out_cells": self.held_out_n,
            "warnings": list(self.warnings),
            "n_range": [json_number(v) for v in self.n_range],
            "d_range": [json_number(v) for v in self.d_range],
            "tpp_range": [json_number(v) for v in self.tpp_range],
        }


def observations(optima: Sequence[CellOptimum], response: str) -> tuple[list[Observation], list[tuple[str, str]]]:
    """Each cell's estimate or bound for `response`, and the cells that have neither."""
    obs, excluded = [], []
    for o in optima:
        searched = [d for d in o.decays_searched if d > 0]
        lo, hi = (min(searched), max(searched)) if searched else (math.nan, math.nan)
        if response in TOLERANCE_RESPONSES:
            kind, value, sd = o.tol_kind, o.decay_tol, o.tol_log_sd
        else:
            kind, value, sd = o.kind, o.decay_opt, o.log_sd
        edge = {"interior": value, "censored_below": lo, "censored_above": hi}[kind]
        if not (edge > 0 and math.isfinite(edge)):
            excluded.append((o.cell, f"no positive {RESPONSES[response]} or grid edge"))
            continue
        log_value = math.log(edge)
        if response in TAU_RESPONSES:
            if not (math.isfinite(o.lr) and o.lr > 0 and math.isfinite(o.batch_tokens) and o.batch_tokens > 0):
                excluded.append((o.cell, "no lr / batch_tokens to compute tau"))
                continue
            log_value = math.log(o.batch_tokens / (o.lr * o.n_tokens)) - log_value
            kind = {"interior": "interior", "censored_below": "censored_above",
                    "censored_above": "censored_below"}[kind]  # fmt: skip
        obs.append(Observation(o.cell, o.n_params, o.n_tokens, kind, log_value, sd if math.isfinite(sd) else math.nan))
    return obs, excluded


def fit_decay_law(
    optima: Sequence[CellOptimum],
    *,
    form: str = "auto",
    response: str = "decay",
    ci_level: float = 0.95,
    cross_validate: bool = True,
) -> DecayLaw:
    """Fit ln decay* ("decay"), ln tau* ("tau"), ln decay_tol ("tolerance") or ln tau_tol
    ("tau_tolerance") across the cells of one objective. form: "auto" (the 3-parameter law if the cells support it, else a 2-parameter
    one) or one of FORMS."""
    if not optima:
        raise FitError("decay law: no cell optima to fit")
    if response not in RESPONSES:
        raise FitError(f"decay law: response must be one of {', '.join(RESPONSES)}, got {response!r}")
    objective, direction = optima[0].objective, optima[0].direction
    obs, excluded = observations(optima, response)
    law = _fit(obs, excluded, objective, direction, form, response, ci_level)
    if cross_validate:
        errors = []
        for i, held in enumerate(obs):
            if held.kind != "interior":
                continue
            try:
                refit = _fit(obs[:i] + obs[i + 1:], [], objective, direction, law.form, response, ci_level, quick=True)
            except FitError:
                continue
            errors.append(abs(refit.predict(held.n_params, held.n_tokens).log_value - held.log_value))
        if errors:
            law = _replace(law, held_out=float(np.mean(errors)), held_out_n=len(errors))
    return law


def _replace(law: DecayLaw, **changes) -> DecayLaw:
    return DecayLaw(**{**{k: getattr(law, k) for k in law.__dataclass_fields__}, **changes})


def _fit(obs, excluded, objective, direction, form, response, ci_level, quick: bool = False) -> DecayLaw:
    name = RESPONSES[response]
    interior = [o for o in obs if o.kind == "interior"]
    if not interior:
        kinds = sorted({o.kind.replace("_", " ") for o in obs})
        raise FitError(f"{objective}: every cell's {name} is censored ({', '.join(kinds)} the searched decays), "
                       "so no law can locate it; the per-cell bounds are all the data support")  # fmt: skip
    log_n = np.log([o.n_params for o in obs])
    log_d = np.log([o.n_tokens for o in obs])
    warnings: list[str] = []
    chosen = _choose_form(form, log_n, log_d, objective, response, warnings)
    terms, names, template = FORMS[chosen]
    formula = template.format(y=name)
    p = len(terms)
    if len(obs) < p + 1 or len(interior) < p:
        raise FitError(f"{objective}: {formula} has {p} parameters and needs at least {p + 1} cells, {p} of them "
                       f"interior (not censored), for an interval; have {len(obs)} cells, {len(interior)} interior")  # fmt: skip
    x, offset = design(chosen, log_n, log_d)
    y = np.array([o.log_value for o in obs])
    kind = np.array([o.kind for o in obs])
    # Every cell gets the same variance tau2: the per-cell bootstrap sds are too heavy-tailed to
    # weight by (a few cells with tiny sds dominated the law and its intervals covered 80% where
    # 90% was claimed; docs/fitting.md), so tau2 holds the between-cell and the estimation scatter.
    sd = np.zeros(len(obs))
    beta, tau2, cov = _tobit(y, x, offset, sd, kind, quick)
    if not (np.all(np.isfinite(beta)) and np.all(np.abs(beta) < 1e3) and math.isfinite(tau2) and tau2 < 1e4):
        raise FitError(f"{objective}: the censored likelihood of {formula} has no finite maximum (the bounds do not "
                       "pin the law down); the per-cell bounds are all the data support")  # fmt: skip
    df_resid = len(obs) - p
    q = student_t.ppf(0.5 + ci_level / 2.0, max(df_resid, 1))
    se = np.sqrt(np.maximum(np.diag(cov), 0.0))
    coefs = tuple(Coefficient(nm, tm, float(b), float(s), float(b - q * s), float(b + q * s))
                  for nm, tm, b, s in zip(names, terms, beta, se))  # fmt: skip
    n, d = np.exp(log_n), np.exp(log_d)
    censored = tuple((o.cell, o.kind, math.exp(o.log_value)) for o in obs if o.kind != "interior")
    return DecayLaw(
        objective=objective, direction=direction, response=response, form=chosen, formula=formula,
        coefficients=coefs, cells=tuple(o.cell for o in interior), censored=censored, excluded=tuple(excluded),
        tau2=float(tau2), df_resid=df_resid, ci_level=ci_level, warnings=tuple(warnings),
        n_range=(float(n.min()), float(n.max())), d_range=(float(d.min()), float(d.max())),
        tpp_range=(float((d / n).min()), float((d / n).max())), cov=cov,
    )  # fmt: skip


def _tobit(y, x, offset, sd, kind, quick: bool = False) -> tuple[np.ndarray, float, np.ndarray]:
    """ML of y ~ Normal(x beta + offset, sd^2 + tau2) with left/right censoring; returns
    (beta, tau2, covariance of beta from the observed information at the maximum). quick: one
    start instead of two (for leave-one-out refits)."""
    inside, below, above = kind == "interior", kind == "censored_below", kind == "censored_above"
    p = x.shape[1]

    half_log_2pi = 0.5 * math.log(2.0 * math.pi)

    def nll(theta):
        """Negative log-likelihood and its gradient in (beta, t), tau2 = t^2."""
        beta, t = theta[:p], theta[p]
        mu = x @ beta + offset
        s2 = sd * sd + t * t
        s = np.sqrt(s2)
        z = (y - mu) / s
        value = np.sum(0.5 * z[inside] ** 2 + np.log(s[inside]))
        d_z = np.where(inside, z, 0.0)  # d value / d z for interior cells, plus d/ds via log s below
        d_t = np.where(inside, (t / s2) * (1.0 - z * z), 0.0)
        for mask, sign in ((below, 1.0), (above, -1.0)):
            if mask.any():
                zz = sign * z[mask]
                log_cdf = log_ndtr(zz)
                value -= np.sum(log_cdf)
                mills = np.exp(-0.5 * zz * zz - half_log_2pi - log_cdf)  # phi / Phi
                d_z[mask] = -sign * mills
                d_t[mask] = sign * mills * z[mask] * t / s2[mask]
        grad_beta = -(d_z / s) @ x
        return float(value), np.concatenate([grad_beta, [np.sum(d_t)]])

    xi = x[inside]
    start, *_ = np.linalg.lstsq(xi, y[inside] - offset[inside], rcond=None)
    resid = y[inside] - offset[inside] - xi @ start
    if not (below.any() or above.any()) and not np.any(sd > 0):
        # no censoring and one common variance: the maximum is ordinary least squares
        tau2 = float(np.mean(resid * resid))
        try:
            cov = tau2 * np.linalg.inv(xi.T @ xi)
        except np.linalg.LinAlgError:
            cov = np.full((p, p), np.nan)
        return start, tau2, cov
    t0 = max(float(np.std(resid)), 0.05)
    best = None
    for t_start in (t0,) if quick else (t0, 0.3 * t0 + 0.01):
        res = minimize(nll, np.concatenate([start, [t_start]]), jac=True, method="L-BFGS-B")
        if best is None or res.fun < best.fun:
            best = res
    beta, tau2 = best.x[:p], float(best.x[p] ** 2)
    h = _hessian(lambda b: nll(np.concatenate([b, best.x[p:]]))[0], beta)
    try:
        cov = np.linalg.inv(h)
    except np.linalg.LinAlgError:
        cov = np.linalg.pinv(h)
    if not np.all(np.isfinite(cov)) or np.any(np.diag(cov) < 0):
        cov = np.full((p, p), np.nan)
    return beta, tau2, cov


def _hessian(f, x0: np.ndarray, step: float = 1e-4) -> np.ndarray:
    k = x0.size
    h = np.zeros((k, k))
    for i in range(k):
        for j in range(i, k):
            ei, ej = np.eye(k)[i] * step, np.eye(k)[j] * step
            v = (f(x0 + ei + ej) - f(x0 + ei - ej) - f(x0 - ei + ej) + f(x0 - ei - ej)) / (4 * step * step)
            h[i, j] = h[j, i] = v
    return h


def _choose_form(form: str, log_n, log_d, objective: str, response: str, warnings: list[str]) -> str:
    n_cells = log_n.size
    varies_n = np.ptp(log_n) > 1e-9
    varies_tpp = np.ptp(log_d - log_n) > 1e-9
    if form != "auto":
        if form not in FORMS:
            raise FitError(f"decay law: form must be 'auto' or one of {', '.join(FORMS)}, got {form!r}")
        need = {"n_d": varies_n and varies_tpp, "tpp": varies_tpp, "n": varies_n, "tpp_fixed": True}[form]
        if not need:
            raise FitError(f"{objective}: the cells do not vary enough in N / TPP for the {form!r} law")
        return form
    if not (varies_n or varies_tpp):
        raise FitError(f"{objective}: every cell has the same (N, D); a law needs cells that differ")
    x, _ = design("n_d", log_n, log_d)
    full_rank = np.linalg.matrix_rank(x, tol=1e-8) == 3
    if n_cells >= 4 and full_rank:
        return "n_d"
    if varies_n and not varies_tpp:
        fallback, why = "n", "all cells share one TPP, so N and D cannot be told apart"
    elif varies_tpp and not varies_n:
        fallback, why = "tpp", "all cells share one N"
    elif not full_rank:
        fallback, why = "tpp", "ln N and ln D are collinear across the cells"
    else:
        fallback, why = "tpp", f"only {n_cells} cells (the 3-parameter law needs 4)"
    warnings.append(f"{objective}: {why}; fell back to the 2-parameter law {FORMS[fallback][2].format(y=RESPONSES[response])}")
    return fallback


def design(form: str, log_n: np.ndarray, log_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(design matrix, fixed offset) of a law form."""
    ones = np.ones_like(log_n)
    zero = np.zeros_like(log_n)
    if form == "n_d":
        return np.column_stack([ones, log_n, log_d]), zero
    if form == "tpp":
        return np.column_stack([ones, log_d - log_n]), zero
    if form == "tpp_fixed":
        return ones[:, None], POWER_LINES_M * (log_d - log_n)
    if form == "n":
        return np.column_stack([ones, log_n]), zero
    raise FitError(f"unknown law form {form!r}")


def _exp(x: float) -> float:
    return math.exp(x) if x < 709 else math.inf




def _clean(d: dict) -> dict:
    return {k: (json_number(v) if isinstance(v, float) else v) for k, v in d.items()}
