"""Budgets -> recommended weight decays, with prediction intervals and honest labels.

    from scaling.fit.recommend import recommend
    rec = recommend(trials_df, n_params=1e6, n_tokens=2e7)
    rec.decay_loss_opt.value, rec.decay_plastic_opt.low, rec.label, rec.summary()

For a budget (N, D) this gives, from the fitted decay laws (scaling.fit):

- `decay_loss_opt`: the decay minimising the base model's val_loss, with a 90% prediction interval;
- `decay_plastic_opt`: the decay maximising ft_score after fine-tuning, likewise;
- the expected base val_loss at each, so the price of choosing the plastic decay is visible.
  Model (a choice, documented): L(N, D) from the fitted loss surface at the loss-optimal decay,
  plus k (ln decay - ln decay*_loss)^2 with k the median curvature of the per-cell quadratics of
  val_loss in ln decay. Without a surface (fewer than 6 cells) the absolute values are missing but
  the cost k (Delta ln decay)^2 is still given;
- whether (N, D) lies outside the fitted range, by what factor beyond the largest fitted N and D;
- the backtest of each law; a choice whose law could not be backtested is labelled "guess".

A compute budget C is turned into (N, D) with the loss surface's compute-optimal allocation
(Hoffmann et al. 2022, eq. 4), and the result says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scaling.errors import ConfigError, FitError
from scaling.fit import text
from scaling.fit.backtest import Backtest
from scaling.fit.laws import DecayLaw
from scaling.fit.studyfit import StudyFit, fit_study
from scaling.fit.table import human

OBJECTIVES = {"decay_loss_opt": "val_loss", "decay_plastic_opt": "ft_score"}


@dataclass(frozen=True)
class DecayChoice:
    """One recommended decay: the law's prediction at the budget and its prediction interval."""

    objective: str
    value: float
    low: float
    high: float
    level: float
    formula: str
    form: str
    label: str  # "backtested" or "guess"
    expected_val_loss: float | None

    def to_dict(self) -> dict:
        return {
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "objective": self.objective,
            "formula": self.formula,
            "form": self.form,
            "label": self.label,
            "expected_val_loss": _num(self.expected_val_loss),
        }


@dataclass(frozen=True)
class Extrapolation:
    is_extrapolation: bool
    n_factor: float  # N / largest fitted N (> 1: beyond it)
    d_factor: float  # D / largest fitted D
    largest_n: float
    largest_d: float
    notes: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "is_extrapolation": self.is_extrapolation,
            "n_factor": self.n_factor,
            "d_factor": self.d_factor,
            "largest_n": self.largest_n,
            "largest_d": self.largest_d,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Recommendation:
    n_params: float
    n_tokens: float
    tpp: float
    compute: float  # 6 N D
    allocation: str  # how (N, D) was chosen
    decay_loss_opt: DecayChoice | None
    decay_plastic_opt: DecayChoice | None
    loss_cost: float | None  # expected val_loss(plastic decay) - val_loss(loss-optimal decay)
    loss_model: str
    extrapolation: Extrapolation
    backtests: tuple[Backtest, ...]
    label: str  # "backtested" when every choice was backtested, else "guess"
    warnings: tuple[str, ...]

    def to_dict(self) -> dict:
        loss_opt, plastic = self.decay_loss_opt, self.decay_plastic_opt
        return {
            "budget": {
                "n_params": self.n_params,
                "n_tokens": self.n_tokens,
                "tpp": self.tpp,
                "compute": self.compute,
                "allocation": self.allocation,
            },
            "decay_loss_opt": loss_opt.to_dict() if loss_opt else None,
            "decay_plastic_opt": plastic.to_dict() if plastic else None,
            "expected_val_loss": {
                "at_decay_loss_opt": _num(loss_opt.expected_val_loss) if loss_opt else None,
                "at_decay_plastic_opt": _num(plastic.expected_val_loss) if plastic else None,
                "cost_of_plastic": _num(self.loss_cost),
                "model": self.loss_model,
            },
            "extrapolation": self.extrapolation.to_dict(),
            "backtest": {b.objective: _backtest_summary(b) for b in self.backtests},
            "label": self.label,
            "warnings": list(self.warnings),
        }

    def summary(self) -> str:
        return _summary(self)


def recommend(
    df: pd.DataFrame | None = None,
    *,
    n_params: float | None = None,
    n_tokens: float | None = None,
    tpp: float | None = None,
    compute: float | None = None,
    fit: StudyFit | None = None,
    level: float = 0.9,
    **fit_options,
) -> Recommendation:
    """Recommend decays for (n_params, n_tokens), (n_params, tpp) or a FLOP budget `compute`.

    Pass the trials table `df` (fitted here with `fit_study(df, **fit_options)`) or an existing
    `fit`. level: coverage of the prediction intervals.
    """
    if fit is None:
        if df is None:
            raise ConfigError("recommend: pass a trials table or a StudyFit")
        fit = fit_study(df, level=level, **fit_options)
    if fit.mode != "study":
        raise FitError(f"{fit.source}: the table has no decay column, so there is nothing to recommend")
    warnings: list[str] = []
    n, d, allocation = _budget(fit, n_params, n_tokens, tpp, compute, warnings)

    curvature = _loss_curvature(fit)
    base = float(fit.surface.predict(n, d)) if fit.surface is not None else None
    choices: dict[str, DecayChoice | None] = {}
    backtests = []
    for key, objective in OBJECTIVES.items():
        law = fit.law(objective)
        if law is None:
            warnings.append(f"{key}: no {objective} decay law in this study (see `scaling fit`)")
            choices[key] = None
            continue
        bt = fit.backtest(objective)
        if bt is not None:
            backtests.append(bt)
        pred = law.predict(n, d, level=level)
        label = "backtested" if bt is not None and bt.available else "guess"
        if label == "guess":
            warnings.append(f"{key} is a guess: {bt.reason if bt is not None else 'no backtest'}")
        warnings.extend(_law_notes(law, n, d))
        choices[key] = DecayChoice(objective, pred.value, pred.low, pred.high, level, law.formula, law.form, label, None)
    if not any(choices.values()):
        raise FitError(f"{fit.source}: neither val_loss nor ft_score has a decay law; nothing to recommend")

    loss_cost = None
    loss_opt, plastic = choices["decay_loss_opt"], choices["decay_plastic_opt"]
    if loss_opt is not None:
        choices["decay_loss_opt"] = _with_loss(loss_opt, base)
        if plastic is not None and math.isfinite(curvature):
            loss_cost = curvature * math.log(plastic.value / loss_opt.value) ** 2
            choices["decay_plastic_opt"] = _with_loss(plastic, None if base is None else base + loss_cost)
    if base is None:
        warnings.append("no loss surface (it needs 6+ cells with val_loss): expected losses are not given")
    loss_model = (
        "loss surface L(N, D) at the loss-optimal decay + k (ln decay - ln decay*_loss)^2, "
        f"k = {text.fmt(curvature, 3)} (median per-cell curvature of val_loss in ln decay)"
    )
    extrapolation = _extrapolation(fit, n, d)
    labels = [c.label for c in choices.values() if c is not None]
    return Recommendation(
        n_params=n,
        n_tokens=d,
        tpp=d / n,
        compute=6.0 * n * d,
        allocation=allocation,
        decay_loss_opt=choices["decay_loss_opt"],
        decay_plastic_opt=choices["decay_plastic_opt"],
        loss_cost=loss_cost,
        loss_model=loss_model,
        extrapolation=extrapolation,
        backtests=tuple(backtests),
        label="backtested" if all(lb == "backtested" for lb in labels) else "guess",
        warnings=tuple(dict.fromkeys(warnings)),
    )


def _budget(fit: StudyFit, n_params, n_tokens, tpp, compute, warnings: list[str]) -> tuple[float, float, str]:
    given = {"n_params": n_params, "n_tokens": n_tokens, "tpp": tpp, "compute": compute}
    for name, value in given.items():
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
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
    if n_params is None or (n_tokens is None) == (tpp is None):
        raise ConfigError("recommend: give n_params with exactly one of n_tokens or tpp, or compute alone")
    d = float(n_tokens) if n_tokens is not None else float(tpp) * float(n_params)
    return float(n_params), d, "given"


def _loss_curvature(fit: StudyFit) -> float:
    ks = [o.curvature for o in fit.optima_for("val_loss") if o.bracketed and math.isfinite(o.curvature)]
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
    if law.form == "tpp" and not (law.n_range[0] * 0.999 <= n <= law.n_range[1] * 1.001):
        notes.append(f"{law.objective} law ignores N (too few cells to fit it); N = {human(n)} is outside the fitted sizes")
    return notes


def _extrapolation(fit: StudyFit, n: float, d: float) -> Extrapolation:
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
    return Extrapolation(bool(notes), n / n_hi, d / d_hi, n_hi, d_hi, tuple(notes))


def _backtest_summary(bt: Backtest) -> dict:
    full = bt.to_dict()
    return {k: full[k] for k in ("available", "reason", "held_out_n_params", "form", "n_cases", "n_inside",
                                 "mean_abs_log_error", "mean_factor", "max_factor", "level")}  # fmt: skip


def _summary(rec: Recommendation) -> str:
    head = (f"Recommendation for N = {human(rec.n_params)}, D = {human(rec.n_tokens)} "
            f"(TPP {text.fmt(rec.tpp, 3)}, C = 6ND = {text.fmt(rec.compute, 3)} FLOP)")  # fmt: skip
    lines = [head]
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
        rows.append([f"{name} ({choice.objective})", text.fmt(choice.value, 3), text.interval(choice.low, choice.high),
                     loss, choice.formula, choice.label])  # fmt: skip
    pi = f"{round(100 * (rec.decay_loss_opt or rec.decay_plastic_opt).level)}% PI"
    lines.append(text.table(["objective", "decay", pi, "expected val_loss", "law", "basis"], rows))
    ex = rec.extrapolation
    if ex.is_extrapolation:
        lines.append("  EXTRAPOLATION: " + "; ".join(ex.notes))
    else:
        lines.append(f"  inside the fitted range (N at {ex.n_factor:.3g}x, D at {ex.d_factor:.3g}x the largest fitted)")
    for bt in rec.backtests:
        if bt.available:
            lines.append(
                f"  backtest {bt.objective}: largest N ({human(bt.held_out_n_params)}) predicted within "
                f"x{math.exp(bt.mean_abs_log_error):.2f} on average (worst x{bt.max_factor:.2f}), "
                f"{bt.n_inside}/{len(bt.cases)} inside the {round(100 * bt.level)}% PI"
            )
        else:
            lines.append(f"  backtest {bt.objective}: not possible ({bt.reason})")
    lines.append(f"  expected val_loss: {rec.loss_model}")
    if rec.label == "guess":
        lines.append("  LABEL: guess (not every choice could be backtested)")
    if rec.warnings:
        lines += ["Warnings:"] + [f"  - {w}" for w in rec.warnings]
    return "\n".join(lines)


def _num(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
