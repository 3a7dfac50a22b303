"""Budgets -> recommended weight decays, with prediction intervals and honest labels.

    from scaling.fit.recommend import recommend
    rec = recommend(trials_df, n_params=5e8, tpp=20, lr=2.5e-4, batch_tokens=2**20)
    rec.decay_loss_opt.value, rec.decay_plastic_opt.low, rec.label, rec.summary()

For a budget (N, D) and a target recipe (peak lr, batch tokens B; default the study's) this gives
`decay_loss_opt` (minimising base val_loss) and `decay_plastic_opt` (the optimum of the fit's
plasticity objective `fit.plasticity`: ft_nll minimised or ft_score maximised), each
{value, low, high} at `level`, from the first of these the study supports:

1. estimand "optimum": the law of decay* or of the timescale tau* = B / (lr decay* D) (censored
   likelihood, scaling.fit.laws) with the smallest leave-one-cell-out held-out error
   (StudyFit.carrier). A tau law gives decay* = B / (lr tau* D) at the target recipe (Power Lines:
   tau* depends on the budget, not on lr or B); when the recipe differs from the study's, only tau
   laws are used (a decay law is shifted at fixed tau if there is none).
2. estimand "tolerance": the same for decay_tol / tau_tol (the largest decay within delta of the
   best), which exists on a plateau where decay* is not identified. It is used when no optimum law
   exists, or when the optimum's law could not be checked by leaving a cell out (one interior
   cell, the rest bounds) and the tolerance law could.
3. estimand "bound": no law; the per-cell bounds the study measured, with the reason.

Each choice says which law carried it; the extrapolation factors in N, D, tau, lr and B are
given, and whether the backtest (largest N held out) reached that far in N. A choice whose law
could not be backtested (the law that carried it, refitted without the largest N) is labelled
"guess". Expected base val_loss: the loss surface at (N, D)
plus k (ln decay - ln decay*_loss)^2, k the median curvature of the interior cells' curves.
A compute budget C is turned into (N, D) with the loss surface's compute-optimal allocation.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scaling.errors import ConfigError, FitError
from scaling.fit import text
from scaling.fit.text import json_number
from scaling.fit.backtest import Backtest
from scaling.fit.claims import Claim
from scaling.fit.laws import RESPONSES, DecayLaw
from scaling.fit.studyfit import StudyFit, fit_study
from scaling.fit.table import describe_objective, human

MAX_FACTOR = 1e6  # refuse budgets more than this factor outside the study's N or D range


@dataclass(frozen=True)
class DecayChoice:
    """One recommended decay, or (estimand "bound") what the study can say instead."""

    objective: str
    value: float | None
    low: float
    high: float
    level: float
    estimand: str  # "optimum" | "tolerance" | "bound"
    formula: str  # the law that carried it (or "" for a bound)
    form: str
    carried_by: str  # how the law reached this recipe
    label: str  # "backtested" or "guess"
    expected_val_loss: float | None
    reason: str | None = None  # why not the optimum

    def to_dict(self) -> dict:
        return {
            "value": json_number(self.value), "low": json_number(self.low), "high": json_number(self.high), "level": self.level,
            "estimand": self.estimand, "objective": self.objective, "formula": self.formula, "form": self.form,
            "carried_by": self.carried_by, "label": self.label, "expected_val_loss": json_number(self.expected_val_loss),
            "reason": self.reason,
        }  # fmt: skip


@dataclass(frozen=True)
class Extrapolation:
    is_extrapolation: bool
    n_factor: float  # N / largest fitted N (> 1: beyond it)
    d_factor: float  # D / largest fitted D
    tau_factor: float  # predicted tau* / nearest end of the tau range the study searched (1 inside)
    lr_factor: float  # target lr / study lr
    batch_factor: float  # target B / study B
    largest_n: float
    largest_d: float
    backtest_distance: float  # how far in N the backtest extrapolated (held-out N / refit's largest N)
    backtest_supports: bool  # the backtest reached this far in N and its held-out cells fell inside
    notes: tuple[str, ...]

    def to_dict(self) -> dict:
        return {k: (json_number(v) if isinstance(v, float) else (list(v) if isinstance(v, tuple) else v))
                for k, v in self.__dict__.items()}  # fmt: skip


@dataclass(frozen=True)
class Recommendation:
    n_params: float
    n_tokens: float
    tpp: float
    compute: float  # 6 N D
    allocation: str  # how (N, D) was chosen
    lr: float
    batch_tokens: float
    decay_loss_opt: DecayChoice | None
    decay_plastic_opt: DecayChoice | None
    loss_cost: float | None  # expected val_loss(plastic decay) - val_loss(loss-optimal decay)
    loss_model: str
    extrapolation: Extrapolation
    backtests: tuple[Backtest, ...]
    label: str  # "backtested" when every choice was backtested, else "guess"
    warnings: tuple[str, ...]
    plasticity: str | None = None  # the plasticity objective decay_plastic_opt optimises (fit.plasticity)
    delta_test: Claim | None = None  # the study's test of "plasticity wants more decay than base loss"

    def to_dict(self) -> dict:
        loss_opt, plastic = self.decay_loss_opt, self.decay_plastic_opt
        return {
            "budget": {"n_params": self.n_params, "n_tokens": self.n_tokens, "tpp": self.tpp, "compute": json_number(self.compute),
                       "allocation": self.allocation},
            "recipe": {"lr": json_number(self.lr), "batch_tokens": json_number(self.batch_tokens)},
            "plasticity_objective": ({"column": self.plasticity, "meaning": describe_objective(self.plasticity)}
                                     if self.plasticity else None),
            "decay_loss_opt": loss_opt.to_dict() if loss_opt else None,
            "decay_plastic_opt": plastic.to_dict() if plastic else None,
            "expected_val_loss": {
                "at_decay_loss_opt": json_number(loss_opt.expected_val_loss) if loss_opt else None,
                "at_decay_plastic_opt": json_number(plastic.expected_val_loss) if plastic else None,
                "cost_of_plastic": json_number(self.loss_cost),
                "model": self.loss_model,
            },
            "extrapolation": self.extrapolation.to_dict(),
            "backtest": {b.objective: _backtest_summary(b) for b in self.backtests},
            "delta_test": self.delta_test.to_dict() if self.delta_test is not None else None,
            "label": self.label,
            "warnings": list(self.warnings),
        }  # fmt: skip

    def summary(self) -> str:
        return _summary(self)


def recommend(
    df: pd.DataFrame | None = None,
    *,
    n_params: float | None = None,
    n_tokens: float | None = None,
    tpp: float | None = None,
    compute: float | None = None,
    lr: float | None = None,
    batch_tokens: float | None = None,
    fit: StudyFit | None = None,
    level: float = 0.9,
    **fit_options,
) -> Recommendation:
    """Recommend decays for (n_params, n_tokens), (n_params, tpp) or a FLOP budget `compute`,
    for a run with peak `lr` and `batch_tokens` per step (default: the study's).

    Pass the trials table `df` (fitted here with `fit_study(df, **fit_options)`) or an existing
    `fit`. level: coverage of the prediction intervals.
    """
    for name, value in (("lr", lr), ("batch_tokens", batch_tokens)):
        if value is not None and not (_is_number(value) and math.isfinite(value) and value > 0):
            raise ConfigError(f"recommend: {name} must be a positive number, got {value!r}")
    if fit is None:
        if df is None:
            raise ConfigError("recommend: pass a trials table or a StudyFit")
        if compute is None:  # absurd budgets fail before the (slow) fit
            n, d, _ = _given(n_params, n_tokens, tpp)
            _check_range(n, d, _table_range(df, "n_params"), _table_range(df, "n_tokens"))
        fit = fit_study(df, level=level, **fit_options)
    if fit.mode != "study":
        raise FitError(f"{fit.source}: the table has no decay column, so there is nothing to recommend")
    warnings: list[str] = []
    n, d, allocation = _budget(fit, n_params, n_tokens, tpp, compute, warnings)
    _check_range(n, d, fit.n_range, fit.d_range)
    study_lr, study_b = fit.lr, fit.batch_tokens
    target_lr = float(lr) if lr is not None else study_lr
    target_b = float(batch_tokens) if batch_tokens is not None else study_b
    if (lr is not None or batch_tokens is not None) and not (math.isfinite(study_lr) and math.isfinite(study_b)):
        raise FitError(f"{fit.source}: the table has no lr / batch_tokens, so a decay cannot be carried to another recipe")
    same = _close(target_lr, study_lr) and _close(target_b, study_b)

    choices: dict[str, DecayChoice | None] = {}
    backtests = []
    taus: list[float] = []
    for key, objective in objectives_of(fit).items():
        if objective is None or objective not in dict(fit.objectives):
            warnings.append(f"{key}: no {objective or 'plasticity objective'} was fitted in this study")
            choices[key] = None
            continue
        choice, tau, bt = _choose(fit, objective, n, d, target_lr, target_b, same, level, warnings)
        if bt is not None:
            backtests.append(bt)
        choices[key] = choice
        if tau is not None:
            taus.append(tau)
    if not any(choices.values()):
        raise FitError(f"{fit.source}: neither val_loss nor a plasticity objective ({fit.plasticity or 'none'}) "
                       "was fitted; nothing to recommend")

    curvature = _loss_curvature(fit)
    base = _finite(fit.surface.predict(n, d)) if fit.surface is not None else None
    loss_cost = None
    loss_opt, plastic = choices["decay_loss_opt"], choices["decay_plastic_opt"]
    if loss_opt is not None and loss_opt.value:
        choices["decay_loss_opt"] = _with_loss(loss_opt, base)
        if plastic is not None and plastic.value and math.isfinite(curvature):
            loss_cost = _finite(curvature * math.log(plastic.value / loss_opt.value) ** 2)
            choices["decay_plastic_opt"] = _with_loss(plastic, None if base is None or loss_cost is None else base + loss_cost)
    if base is None:
        warnings.append("no loss surface at this budget: expected losses are not given")
    loss_model = (
        "loss surface L(N, D) at the loss-optimal decay + k (ln decay - ln decay*_loss)^2, "
        f"k = {text.fmt(curvature, 3)} (median curvature of the interior cells' val_loss curves in ln decay)"
    )
    extrapolation = _extrapolation(fit, n, d, taus, target_lr, target_b, backtests)
    labels = [c.label for c in choices.values() if c is not None]
    return Recommendation(
        n_params=n, n_tokens=d, tpp=d / n, compute=6.0 * n * d, allocation=allocation, lr=target_lr,
        batch_tokens=target_b, decay_loss_opt=choices["decay_loss_opt"], decay_plastic_opt=choices["decay_plastic_opt"],
        loss_cost=loss_cost, loss_model=loss_model, extrapolation=extrapolation, backtests=tuple(backtests),
        label="backtested" if labels and all(lb == "backtested" for lb in labels) else "guess",
        warnings=tuple(dict.fromkeys(warnings)), plasticity=fit.plasticity, delta_test=fit.claim("plastic_above_loss"),
    )  # fmt: skip


def objectives_of(fit: StudyFit) -> dict[str, str | None]:
    """{choice: objective column}: decay_loss_opt minimises val_loss, decay_plastic_opt optimises
    the fit's plasticity objective (ft_nll or ft_score, in its own direction)."""
    return {"decay_loss_opt": "val_loss", "decay_plastic_opt": fit.plasticity}


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or (a > 0 and b > 0 and abs(math.log(a / b)) < 1e-9)


def _choose(fit, objective, n, d, lr, b, same, level, warnings) -> tuple[DecayChoice | None, float | None, Backtest | None]:
    """The first estimand the study supports for `objective` (see the module docstring), carried by
    that estimand's law with the smallest held-out error (StudyFit.carrier)."""
    key = "decay_loss_opt" if objective == "val_loss" else "decay_plastic_opt"
    shift = 0.0 if same else math.log(b / fit.batch_tokens) - math.log(lr / fit.lr)  # ln decay at fixed tau
    options = [(e, law) for e in ("optimum", "tolerance") if (law := fit.carrier(objective, e, tau_only=not same))]
    # A law that predicted cells it had not seen (finite held-out error) comes first: an optimum
    # law pinned by one interior cell and bounds yields to a checked tolerance law.
    checked = [(e, law) for e, law in options if math.isfinite(law.held_out)]
    if not options:
        bound = _bound(fit, objective)
        warnings.append(f"{key}: no law could be fitted; {bound[2]}")
        return (DecayChoice(objective, None, bound[0], bound[1], level, "bound", "", "", "", "guess", None, bound[2]),
                None, None)  # fmt: skip
    estimand, chosen = (checked or options)[0]
    bt = fit.backtest_for(chosen)
    pred = chosen.predict(n, d, level=level)
    name = RESPONSES[chosen.response]
    held = f"held-out |ln error| {text.fmt(chosen.held_out, 3)}"
    if chosen.in_tau:  # decay = B / (lr tau D): the interval flips
        base = math.log(b) - math.log(lr) - math.log(d)
        centre, lo, hi = base - pred.log_value, base - pred.log_high, base - pred.log_low
        carried = (f"tau law {chosen.formula} ({held}), decay = B / (lr {name} D) with lr {text.fmt(lr, 3)}, "
                   f"B {text.fmt(b, 3)}")  # fmt: skip
        tau = math.exp(pred.log_value) if pred.log_value < 700 else math.inf
    else:
        centre, lo, hi = pred.log_value + shift, pred.log_low + shift, pred.log_high + shift
        carried = (f"decay law {chosen.formula} ({held})" if same else
                   f"decay law {chosen.formula} shifted to lr {text.fmt(lr, 3)}, B {text.fmt(b, 3)} at fixed "
                   "tau = B / (lr decay D) (no tau law)")  # fmt: skip
        tau = math.exp(math.log(b / (lr * d)) - centre) if abs(math.log(b / (lr * d)) - centre) < 700 else math.inf
    if not all(math.isfinite(v) and abs(v) < 700 for v in (centre, lo, hi)):
        raise FitError(f"{objective}: the prediction at N = {n:.3g}, D = {d:.3g} is not a usable number "
                       f"(ln decay {centre:.3g} [{lo:.3g}, {hi:.3g}]); the budget is too far from the study")  # fmt: skip
    reason = None
    if estimand == "tolerance":
        reason = (f"decay* is not identified by a law ({_why_no_law(fit, objective, not same)}); this is the "
                  f"largest decay within {_delta(fit, objective):g} of the best (decay_tol)")  # fmt: skip
        warnings.append(f"{key}: {reason}")
    label = "backtested" if bt is not None and bt.available else "guess"
    if label == "guess":
        warnings.append(f"{key} is a guess: " + (bt.reason if bt is not None and not bt.available else
                                                 "its law was not backtested"))  # fmt: skip
    warnings.extend(_law_notes(chosen, n, d))
    return DecayChoice(objective, math.exp(centre), math.exp(lo), math.exp(hi), level, estimand, chosen.formula,
                       chosen.form, carried, label, None, reason), tau, bt  # fmt: skip


def _why_no_law(fit, objective, tau_only: bool = False) -> str:
    law = fit.carrier(objective, "optimum", tau_only=tau_only)
    if law is not None:
        return (f"its best law {law.formula} rests on {len(law.cells)} interior and {len(law.censored)} censored "
                "cells and could not be checked on a cell it had not seen")  # fmt: skip
    for w in fit.warnings:
        if w.startswith(f"{objective}: no decay law: "):
            return w.removeprefix(f"{objective}: no decay law: ").removeprefix(f"{objective}: ")
    return "the decay* law could not be fitted"


def _delta(fit, objective) -> float:
    return next((o.delta for o in fit.optima_for(objective)), math.nan)


def _bound(fit, objective) -> tuple[float, float, str]:
    """(low, high, sentence): the per-cell bounds of decay*, as measured (no law, no extrapolation)."""
    optima = fit.optima_for(objective)
    kinds = {o.kind for o in optima}
    if kinds == {"censored_below"}:
        high = max(o.high for o in optima)
        return 0.0, high, (f"decay* lies below the smallest positive decay searched in every cell; the widest "
                           f"{round(100 * optima[0].level)}% bound over the cells is decay* < {text.fmt(high, 3)} "
                           "(at the study's budgets, not this one)")  # fmt: skip
    if kinds == {"censored_above"}:
        low = min(o.low for o in optima)
        return low, math.inf, (f"decay* lies above the largest decay searched in every cell; decay* > "
                               f"{text.fmt(low, 3)} at the study's budgets")  # fmt: skip
    low = min(o.low for o in optima)
    high = max(o.high for o in optima)
    return low, high, (f"per-cell decay* spans {text.fmt(low, 3)} to {text.fmt(high, 3)} at the study's budgets; too few "
                       "interior cells for a law")  # fmt: skip


def _check_range(n: float, d: float, n_range, d_range) -> None:
    for name, value, (lo, hi) in (("N", n, n_range), ("D", d, d_range)):
        if math.isfinite(lo) and math.isfinite(hi) and not lo / MAX_FACTOR <= value <= hi * MAX_FACTOR:
            raise ConfigError(f"recommend: {name} = {value:.3g} is more than {MAX_FACTOR:.0e}x outside the study's "
                              f"range ({lo:.3g} to {hi:.3g}); no law can be carried that far")  # fmt: skip


def _table_range(df: pd.DataFrame, column: str) -> tuple[float, float]:
    values = pd.to_numeric(df[column], errors="coerce") if column in df.columns else pd.Series(dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    return (float(values.min()), float(values.max())) if len(values) else (math.nan, math.nan)


def _given(n_params, n_tokens, tpp) -> tuple[float, float, str]:
    """(N, D) from n_params with n_tokens or tpp, checked."""
    for name, value in (("n_params", n_params), ("n_tokens", n_tokens), ("tpp", tpp)):
        if value is not None and not (_is_number(value) and math.isfinite(value) and value > 0):
            raise ConfigError(f"recommend: {name} must be a positive number, got {value!r}")
    if n_params is None or (n_tokens is None) == (tpp is None):
        raise ConfigError("recommend: give n_params with exactly one of n_tokens or tpp, or compute alone")
    d = float(n_tokens) if n_tokens is not None else float(tpp) * float(n_params)
    if not (math.isfinite(d) and d < 1e300 and float(n_params) < 1e300):
        raise ConfigError(f"recommend: the budget overflows (N = {float(n_params):.3g}, D = {d:.3g})")
    return float(n_params), d, "given"


def _budget(fit: StudyFit, n_params, n_tokens, tpp, compute, warnings: list[str]) -> tuple[float, float, str]:
    given = {"n_params": n_params, "n_tokens": n_tokens, "tpp": tpp, "compute": compute}
    for name, value in given.items():
        if value is not None and not (_is_number(value) and math.isfinite(value) and value > 0):
            raise ConfigError(f"recommend: {name} must be a positive number, got {value!r}")
    if compute is not None:
        if any(v is not None for v in (n_params, n_tokens, tpp)):
            raise ConfigError("recommend: give either compute alone, or n_params with n_tokens or tpp")
        if fit.surface is None:
            raise FitError(
                f"{fit.source}: a compute budget needs the loss surface for its N/D split, and none was fitted "
                "(needs 6+ cells with val_loss); give n_params and n_tokens instead"
            )
        opt = fit.surface.compute_optimal(float(compute))
        return opt.n_params, opt.n_tokens, "compute-optimal allocation of the fitted loss surface (C = 6ND)"
    return _given(n_params, n_tokens, tpp)


def _loss_curvature(fit: StudyFit) -> float:
    ks = [o.curvature for o in fit.optima_for("val_loss") if o.bracketed and math.isfinite(o.curvature) and o.curvature > 0]
    return float(np.median(ks)) if ks else math.nan


def _with_loss(choice: DecayChoice, loss: float | None) -> DecayChoice:
    return DecayChoice(**{**choice.__dict__, "expected_val_loss": loss})


def _law_notes(law: DecayLaw, n: float, d: float) -> list[str]:
    notes = []
    lo, hi = law.tpp_range
    if law.form == "n" and not (lo * 0.999 <= d / n <= hi * 1.001):
        notes.append(
            f"{law.objective} law was fitted at TPP {text.fmt(lo, 3)} only; TPP {text.fmt(d / n, 3)} is outside what it saw"
        )
    if law.form in ("tpp", "tpp_fixed") and not (law.n_range[0] * 0.999 <= n <= law.n_range[1] * 1.001):
        why = ("Power Lines: a timescale that depends on TPP, not on N" if law.in_tau else
               "too few cells to fit it")  # fmt: skip
        notes.append(f"{law.objective} law {law.formula} ignores N ({why}); N = {human(n)} is outside the fitted sizes")
    return notes


def _extrapolation(fit: StudyFit, n: float, d: float, taus: list[float], lr: float, b: float, backtests) -> Extrapolation:
    (n_lo, n_hi), (d_lo, d_hi) = fit.n_range, fit.d_range
    notes = []
    if n > n_hi:
        notes.append(f"N is {n / n_hi:.3g}x the largest fitted N ({human(n_hi)})")
    if d > d_hi:
        notes.append(f"D is {d / d_hi:.3g}x the largest fitted D ({human(d_hi)})")
    if n < n_lo:
        notes.append(f"N is below the smallest fitted N ({human(n_lo)})")
    if d < d_lo:
        notes.append(f"D is below the smallest fitted D ({human(d_lo)})")
    searched = [o.batch_tokens / (o.lr * x * o.n_tokens) for o in fit.optima for x in o.decays_searched
                if x > 0 and math.isfinite(o.lr) and math.isfinite(o.batch_tokens)]  # fmt: skip
    tau_factor = 1.0
    if searched and taus:
        lo, hi = min(searched), max(searched)
        worst = max(taus, key=lambda t: max(t / hi, lo / t))
        tau_factor = worst / hi if worst > hi else (worst / lo if worst < lo else 1.0)
        if tau_factor != 1.0:
            notes.append(f"tau* {text.fmt(worst, 3)} is outside the searched tau range {text.fmt(lo, 3)}..{text.fmt(hi, 3)}")
    lr_factor = lr / fit.lr if math.isfinite(fit.lr) else math.nan
    b_factor = b / fit.batch_tokens if math.isfinite(fit.batch_tokens) else math.nan
    if math.isfinite(lr_factor) and not _close(lr, fit.lr):
        notes.append(f"lr is {lr_factor:.3g}x the study's ({text.fmt(fit.lr, 3)})")
    if math.isfinite(b_factor) and not _close(b, fit.batch_tokens):
        notes.append(f"batch tokens are {b_factor:.3g}x the study's ({text.fmt(fit.batch_tokens, 3)})")
    available = [bt for bt in backtests if bt.available]
    distance = min((bt.distance for bt in available), default=math.nan)
    supports = bool(available) and n / n_hi <= distance * 1.0001 and all(bt.n_inside == len(bt.cases) for bt in available)
    if n > n_hi:
        reach = f"backtested {distance:.3g}x" if math.isfinite(distance) else "no backtest"
        notes.append(f"the backtest {'supports' if supports else 'does not support'} this distance in N "
                     f"({n / n_hi:.3g}x; {reach})")  # fmt: skip
    return Extrapolation(bool(notes), n / n_hi, d / d_hi, tau_factor, lr_factor, b_factor, n_hi, d_hi, distance,
                         supports, tuple(notes))  # fmt: skip


def _backtest_summary(bt: Backtest) -> dict:
    full = bt.to_dict()
    return {k: full[k] for k in ("available", "reason", "held_out_n_params", "distance", "form", "n_cases", "n_inside",
                                 "mean_abs_log_error", "mean_factor", "max_factor", "level")}  # fmt: skip


def _summary(rec: Recommendation) -> str:
    head = (f"Recommendation for N = {human(rec.n_params)}, D = {human(rec.n_tokens)} "
            f"(TPP {text.fmt(rec.tpp, 3)}, C = 6ND = {text.fmt(rec.compute, 3)} FLOP)")  # fmt: skip
    lines = [head]
    if rec.plasticity:
        lines.append(f"  plasticity objective: {describe_objective(rec.plasticity)}")
    if rec.allocation != "given":
        lines.append(f"  N and D: {rec.allocation}")
    rows = []
    for name, choice in (("base loss", rec.decay_loss_opt), ("plasticity", rec.decay_plastic_opt)):
        if choice is None:
            rows.append([name, "-", "-", "-", "-", "no law"])
            continue
        loss = text.fmt(choice.expected_val_loss, 4)
        if choice is rec.decay_plastic_opt and rec.loss_cost is not None:
            loss += f" (+{text.fmt(rec.loss_cost, 3)})"
        high = text.fmt(choice.high, 3) if math.isfinite(choice.high) else "inf"
        rows.append([f"{name} ({choice.objective})", choice.estimand, text.fmt(choice.value, 3),
                     f"[{text.fmt(choice.low, 3)}, {high}]", loss, choice.formula or "-", choice.label])  # fmt: skip
    pi = f"{round(100 * (rec.decay_loss_opt or rec.decay_plastic_opt).level)}% PI"
    lines.append(text.table(["objective", "estimand", "decay", pi, "expected val_loss", "law", "basis"], rows))
    for choice in (rec.decay_loss_opt, rec.decay_plastic_opt):
        if choice is not None and choice.carried_by:
            lines.append(f"  {choice.objective}: carried by {choice.carried_by}")
    ex = rec.extrapolation
    if ex.is_extrapolation:
        lines.append("  EXTRAPOLATION: " + "; ".join(ex.notes))
    else:
        lines.append(f"  inside the fitted range (N at {ex.n_factor:.3g}x, D at {ex.d_factor:.3g}x the largest fitted)")
    lines.append(f"  factors vs the study: N {ex.n_factor:.3g}x, D {ex.d_factor:.3g}x, tau {ex.tau_factor:.3g}x, "
                 f"lr {ex.lr_factor:.3g}x, B {ex.batch_factor:.3g}x (recipe lr {text.fmt(rec.lr, 3)}, "
                 f"B {text.fmt(rec.batch_tokens, 3)})")
    for bt in rec.backtests:
        if bt.available:
            lines.append(
                f"  backtest {bt.objective}: largest N ({human(bt.held_out_n_params)}) predicted within "
                f"x{math.exp(bt.mean_abs_log_error):.2f} on average (worst x{bt.max_factor:.2f}), "
                f"{bt.n_inside}/{len(bt.cases)} inside the {round(100 * bt.level)}% PI"
            )
        else:
            lines.append(f"  backtest {bt.objective}: not possible ({bt.reason})")
    if rec.delta_test is not None:
        lines.append(f"  delta test (the study's cells): {rec.delta_test.sentence()}")
    lines.append(f"  expected val_loss: {rec.loss_model}")
    if rec.label == "guess":
        lines.append("  LABEL: guess (not every choice could be backtested)")
    if rec.warnings:
        lines += ["Warnings:"] + [f"  - {w}" for w in rec.warnings]
    return "\n".join(lines)




def _is_number(value) -> bool:
    """A real number, numpy's included (np.int64 is not an int), but not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _finite(x) -> float | None:
    x = float(np.asarray(x).reshape(-1)[0]) if x is not None else math.nan
    return x if math.isfinite(x) else None
