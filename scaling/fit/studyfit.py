"""`fit_study`: every fit of design.md section 4 on one trials table, in one result object.

A table with a `decay` column is a study: per-cell optima for each objective, decay laws (direct
and Power Lines), backtests, and the loss surface fitted to each cell's loss at its optimum.
A table without one (only N, D and a loss, e.g. Chinchilla's points) gets the loss surface alone.
`StudyFit.to_dict()` is what `scaling fit` writes to fits.json; `summary()` is its text.

fits.json (schema "scaling.fits/1"; every NaN or infinity is written as null):

    schema, source, mode ("study" | "surface"), n_trials, n_cells, settings {n_bootstrap, seed,
        level, ci_level, law_form | drop_highest_loss}, n_range [min N, max N], d_range [min D, max D]
    E, A, B, alpha, beta        the surface parameters again at the top level (only if fitted)
    surface: null | {formula, params {E, A, B, alpha, beta}, ci {name: [low, high]}, se {name},
        ci_level, n_points, n_starts, n_converged, n_bootstrap, objective, huber_delta, n_range,
        d_range, allocation_exponents {n_params, n_tokens}}       (N* ~ C^a, D* ~ C^b)
    objectives: {column: "min" | "max"}
    optima: [{cell, n_params, n_tokens, tpp, objective, direction, decay_opt, low, high, log_sd,
        bracketed, n_trials, best_observed_decay, value_at_opt, curvature, lr, batch_tokens,
        tau_opt, decays_searched [..], level, reason}]             one per (cell, objective)
    laws: {objective: null | {objective, direction, response ("decay"), form ("n_d" | "tpp" |
        "n"), formula, coefficients {name: {term, value, se, low, high}}, ci_level, n_cells,
        cells [..], excluded [{cell, reason}], tau2, scale, df_resid, warnings [..], n_range,
        d_range, tpp_range}}          coefficients: c, a (ln N), b (ln D) | c, m (ln TPP) | c, a
    tau_laws: {objective: null | same shape, response "tau", formula "ln tau* = c + m ln TPP"}
    backtests: {objective: null | {objective, available, reason, held_out_n_params, form,
        n_train_cells, level, n_cases, n_inside, mean_abs_log_error, mean_factor, max_factor,
        cases [{cell, n_params, n_tokens, predicted, low, high, realised, log_error, factor,
        inside}]}}
    warnings: [..]

Predictions for a new (N, D) need the statsmodels results, so they come from the Python objects
(`StudyFit.law(objective).predict(N, D)`) or `scaling recommend`, not from the JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from scaling.errors import DataError, FitError
from scaling.fit import text
from scaling.fit.backtest import Backtest, backtest_law
from scaling.fit.laws import DecayLaw, fit_decay_law
from scaling.fit.optima import CellOptimum, cell_optima
from scaling.fit.surface import LossSurface, fit_loss_surface
from scaling.fit.table import DEFAULT_OBJECTIVES, apply_columns, human, prepare_table

SCHEMA = "scaling.fits/1"


@dataclass(frozen=True)
class StudyFit:
    """All fits of one table. Laws, tau laws and backtests hold one entry per objective that
    could be fitted; what could not is explained in `warnings`."""

    source: str
    mode: str  # "study" (has decay) or "surface" (N, D, loss only)
    n_trials: int
    n_cells: int
    objectives: tuple[tuple[str, str], ...]  # (column, "min"/"max")
    surface: LossSurface | None
    optima: tuple[CellOptimum, ...]
    laws: tuple[DecayLaw, ...]
    tau_laws: tuple[DecayLaw, ...]
    backtests: tuple[Backtest, ...]
    warnings: tuple[str, ...]
    n_range: tuple[float, float]
    d_range: tuple[float, float]
    settings: tuple[tuple[str, Any], ...]

    def law(self, objective: str) -> DecayLaw | None:
        return next((law for law in self.laws if law.objective == objective), None)

    def tau_law(self, objective: str) -> DecayLaw | None:
        return next((law for law in self.tau_laws if law.objective == objective), None)

    def backtest(self, objective: str) -> Backtest | None:
        return next((b for b in self.backtests if b.objective == objective), None)

    def optima_for(self, objective: str) -> tuple[CellOptimum, ...]:
        return tuple(o for o in self.optima if o.objective == objective)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "source": self.source,
            "mode": self.mode,
            "n_trials": self.n_trials,
            "n_cells": self.n_cells,
            "settings": dict(self.settings),
            "n_range": list(self.n_range),
            "d_range": list(self.d_range),
        }
        if self.surface is not None:  # the surface parameters, also at the top level
            out.update(self.surface.to_dict()["params"])
        out["surface"] = self.surface.to_dict() if self.surface is not None else None
        out["objectives"] = dict(self.objectives)
        out["optima"] = [o.to_dict() for o in self.optima]
        out["laws"] = {obj: _maybe(self.law(obj)) for obj, _ in self.objectives}
        out["tau_laws"] = {obj: _maybe(self.tau_law(obj)) for obj, _ in self.objectives}
        out["backtests"] = {obj: _maybe(self.backtest(obj)) for obj, _ in self.objectives}
        out["warnings"] = list(self.warnings)
        return out

    def summary(self) -> str:
        return _summary(self)


def fit_study(
    df: pd.DataFrame,
    *,
    columns: Mapping[str, str] | None = None,
    objectives: Mapping[str, str] | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
    level: float = 0.9,
    ci_level: float = 0.95,
    law_form: str = "auto",
    drop_highest_loss: int = 0,
    source: str = "trials table",
) -> StudyFit:
    """Fit everything the table supports.

    columns: {design name: table column} for foreign tables. objectives: {column: "min"|"max"};
    default val_loss (min) and ft_score (max), those present. n_bootstrap: resamples for every
    interval (per-cell optima and loss surface). level: prediction / per-cell interval coverage;
    ci_level: coefficient and surface-parameter confidence level. drop_highest_loss: leave out
    the k highest-loss points before the surface fit (Epoch AI drop 5 of Chinchilla's).
    """
    mapped = apply_columns(df, columns, source) if isinstance(df, pd.DataFrame) else df
    if isinstance(mapped, pd.DataFrame) and "decay" not in mapped.columns:
        study_like = [c for c in ("ft_score", "seed", "lr", *(objectives or {})) if c in mapped.columns]
        if study_like:
            raise DataError(
                f"{source}: missing column 'decay' (the table has {study_like[0]!r}, so it looks like a study); "
                "map it with --col decay=COLUMN"
            )
        return _surface_only(mapped, source, n_bootstrap, seed, ci_level, drop_highest_loss)

    table = prepare_table(mapped, source=source, require=("n_params", "n_tokens", "decay"))
    wanted = _objectives(table, objectives, source)
    settings = (("n_bootstrap", n_bootstrap), ("seed", seed), ("level", level), ("ci_level", ci_level),
                ("law_form", law_form))  # fmt: skip
    warnings: list[str] = []
    optima: list[CellOptimum] = []
    laws, tau_laws, backtests = [], [], []
    fitted: list[tuple[str, str]] = []
    for i, (objective, direction) in enumerate(wanted):
        if not np.isfinite(table[objective].to_numpy(dtype=float)).any():
            warnings.append(f"{objective}: no finite values in the table; skipped")
            continue
        cells = cell_optima(table, objective, direction, n_bootstrap=n_bootstrap, level=level, seed=seed + i)
        optima.extend(cells)
        fitted.append((objective, direction))
        unbracketed = [o.cell for o in cells if not o.bracketed]
        if unbracketed:
            warnings.append(f"{objective}: {len(unbracketed)} of {len(cells)} cells not bracketed: {', '.join(unbracketed)}")
        try:
            law = fit_decay_law(cells, form=law_form, ci_level=ci_level)
        except FitError as exc:
            warnings.append(f"{objective}: no decay law: {exc}")
            continue
        laws.append(law)
        warnings.extend(law.warnings)
        backtests.append(backtest_law(cells, level=level, form=law_form))
        if not backtests[-1].available:
            warnings.append(f"{objective}: no backtest ({backtests[-1].reason}); a prediction is a guess")
        if {"lr", "batch_tokens"} <= set(table.columns):
            try:
                tau_laws.append(fit_decay_law(cells, response="tau", ci_level=ci_level))
            except FitError as exc:
                warnings.append(f"{objective}: no Power Lines law: {exc}")
    if not optima:
        raise FitError(f"{source}: no objective column has finite values ({', '.join(o for o, _ in wanted)})")
    if not any(o.bracketed for o in optima):
        raise FitError(
            f"{source}: no cell has a bracketed optimum for {', '.join(o for o, _ in fitted)} (the best decay "
            "is at the edge of the searched range everywhere); widen the decay grid"
        )
    if not laws:
        reasons = "; ".join(w for w in warnings if "no decay law" in w)
        raise FitError(f"{source}: no decay law could be fitted: {reasons}")

    surface = None
    if "val_loss" in dict(fitted):
        surface = _study_surface(optima, n_bootstrap, seed, ci_level, warnings)

    n_cells = len({(o.n_params, o.n_tokens) for o in optima})
    return StudyFit(
        source=source,
        mode="study",
        n_trials=len(table),
        n_cells=n_cells,
        objectives=tuple(fitted),
        surface=surface,
        optima=tuple(optima),
        laws=tuple(laws),
        tau_laws=tuple(tau_laws),
        backtests=tuple(backtests),
        warnings=tuple(warnings),
        n_range=(float(table["n_params"].min()), float(table["n_params"].max())),
        d_range=(float(table["n_tokens"].min()), float(table["n_tokens"].max())),
        settings=settings,
    )


def _objectives(table: pd.DataFrame, objectives, source: str) -> list[tuple[str, str]]:
    if objectives:
        out = []
        for col, direction in objectives.items():
            if col not in table.columns:
                raise DataError(f"{source}: objective column {col!r} is not in the table")
            if direction not in ("min", "max"):
                raise DataError(f"{source}: objective {col!r}: direction must be 'min' or 'max', got {direction!r}")
            out.append((col, direction))
    else:
        out = [(c, d) for c, d in DEFAULT_OBJECTIVES.items() if c in table.columns]
        if not out:
            raise DataError(
                f"{source}: no objective column: expected val_loss and/or ft_score "
                "(or name one with --objective COLUMN:min|max)"
            )
    for col, _ in out:
        values = pd.to_numeric(table[col], errors="coerce")
        if (values.isna() & table[col].notna()).any():
            raise DataError(f"{source}: objective column {col!r} must be numeric")
        table[col] = values.astype(float)
    return out


def _study_surface(optima, n_bootstrap, seed, ci_level, warnings: list[str]) -> LossSurface | None:
    """The surface through each cell's val_loss at its optimum (the quadratic's minimum when
    bracketed; the best observed mean, an upper bound, when not)."""
    cells = [o for o in optima if o.objective == "val_loss"]
    try:
        surface = fit_loss_surface(
            [o.n_params for o in cells], [o.n_tokens for o in cells], [o.value_at_opt for o in cells],
            n_bootstrap=n_bootstrap, ci_level=ci_level, seed=seed,
        )  # fmt: skip
    except FitError as exc:
        warnings.append(f"loss surface not fitted: {exc}")
        return None
    if surface.n_points < 10:
        warnings.append(
            f"loss surface: 5 parameters from {surface.n_points} cells; treat its intervals and "
            "anything extrapolated from it as rough"
        )
    return surface


def _surface_only(df, source, n_bootstrap, seed, ci_level, drop_highest_loss) -> StudyFit:
    table = prepare_table(df, source=source, require=("n_params", "n_tokens", "val_loss"))
    table = table[np.isfinite(table["val_loss"].to_numpy(dtype=float))]
    if drop_highest_loss:
        if drop_highest_loss < 0 or drop_highest_loss >= len(table):
            raise DataError(f"{source}: cannot drop {drop_highest_loss} highest-loss points of {len(table)}")
        table = table.sort_values("val_loss").iloc[:-drop_highest_loss]
    if (table["val_loss"] <= 0).any():
        raise DataError(f"{source}: column 'val_loss' must be > 0 for a loss-surface fit")
    surface = fit_loss_surface(
        table["n_params"], table["n_tokens"], table["val_loss"], n_bootstrap=n_bootstrap, ci_level=ci_level, seed=seed
    )
    settings = (("n_bootstrap", n_bootstrap), ("seed", seed), ("ci_level", ci_level),
                ("drop_highest_loss", drop_highest_loss))  # fmt: skip
    return StudyFit(
        source=source,
        mode="surface",
        n_trials=len(table),
        n_cells=int(table.groupby(["n_params", "n_tokens"]).ngroups),
        objectives=(),  # no decay, so no decay objectives: the surface is the whole fit
        surface=surface,
        optima=(),
        laws=(),
        tau_laws=(),
        backtests=(),
        warnings=("no decay column: fitted the loss surface only",),
        n_range=(float(table["n_params"].min()), float(table["n_params"].max())),
        d_range=(float(table["n_tokens"].min()), float(table["n_tokens"].max())),
        settings=settings,
    )


def _maybe(obj) -> dict | None:
    return obj.to_dict() if obj is not None else None


# ----------------------------------------------------------------------------- text summary


def _summary(fit: StudyFit) -> str:
    out = [f"{fit.source}: {fit.n_trials} {'trials' if fit.mode == 'study' else 'points'}, {fit.n_cells} cells"]
    if fit.surface is not None:
        out += ["", _surface_text(fit.surface)]
    for objective, direction in fit.objectives if fit.mode == "study" else ():
        out += ["", _optima_text(fit.optima_for(objective), objective, direction)]
        law = fit.law(objective)
        if law is not None:
            out += ["", _law_text(law)]
        tau = fit.tau_law(objective)
        if tau is not None:
            out += ["", _law_text(tau, note="Power Lines (Bergsma et al. 2025); tau = B / (lr * decay * D)")]
        bt = fit.backtest(objective)
        if bt is not None:
            out += ["", _backtest_text(bt)]
    if fit.warnings:
        out += ["", "Warnings:"] + [f"  - {w}" for w in fit.warnings]
    return "\n".join(out)


def _surface_text(s: LossSurface) -> str:
    head = (f"Loss surface  L(N, D) = E + A N^-alpha + B D^-beta   ({s.n_points} points, Huber delta 1e-3, "
            f"{s.n_starts} starts, {s.n_bootstrap} bootstrap refits)")  # fmt: skip
    level = f"{round(100 * s.ci_level)}% CI"
    rows = []
    for name, value in s.params().items():
        low, high = s.interval(name) if s.intervals else (math.nan, math.nan)
        se = dict(s.std_errors).get(name, math.nan)
        rows.append([name, text.fmt(value, 5), text.interval(low, high, 4), text.fmt(se, 3)])
    lines = [head, text.table(["param", "estimate", level, "bootstrap se"], rows)]
    if s.alpha > 0 and s.beta > 0:
        a = s.beta / (s.alpha + s.beta)
        lines.append(f"  compute-optimal allocation (C = 6ND): N* ~ C^{a:.3f}, D* ~ C^{1 - a:.3f}")
    return "\n".join(lines)


def _optima_text(optima, objective: str, direction: str) -> str:
    level = optima[0].level if optima else 0.9
    head = f"Per-cell optima: {objective} ({'minimise' if direction == 'min' else 'maximise'})"
    rows = []
    for o in optima:
        rows.append([
            o.cell, human(o.n_params), human(o.n_tokens), text.fmt(o.tpp, 3), text.fmt(o.decay_opt, 3),
            text.interval(o.low, o.high), text.fmt(o.best_observed_decay, 3), text.fmt(o.value_at_opt, 4),
            str(o.n_trials), "" if o.bracketed else "NOT BRACKETED: " + (o.reason or ""),
        ])  # fmt: skip
    headers = ["cell", "N", "D", "TPP", "decay*", f"{round(100 * level)}% interval", "best seen", objective,
               "trials", "note"]  # fmt: skip
    return head + "\n" + text.table(headers, rows)


def _law_text(law: DecayLaw, note: str = "") -> str:
    head = (f"{'Decay law' if law.response == 'decay' else 'Timescale law'}: {law.objective}   {law.formula}   "
            f"({law.n_cells} cells, WLS, between-cell sd {math.sqrt(law.tau2):.3g})")  # fmt: skip
    rows = [[c.name, c.term, text.fmt(c.value, 4), text.fmt(c.se, 3), text.interval(c.low, c.high, 3)]
            for c in law.coefficients]  # fmt: skip
    lines = [head, text.table(["coef", "term", "estimate", "se", f"{round(100 * law.ci_level)}% CI"], rows)]
    if note:
        lines.append(f"  {note}")
    if law.excluded:
        lines.append("  excluded: " + "; ".join(f"{c} ({r})" for c, r in law.excluded))
    return "\n".join(lines)


def _backtest_text(bt: Backtest) -> str:
    head = f"Backtest: {bt.objective}, largest N = {human(bt.held_out_n_params)} held out"
    if not bt.available:
        return f"{head}: not possible ({bt.reason}); predictions are guesses"
    rows = [[c.cell, text.fmt(c.predicted, 3), text.interval(c.low, c.high), text.fmt(c.realised, 3),
             f"{c.log_error:+.3f}", f"x{c.factor:.2f}", "yes" if c.inside else "NO"] for c in bt.cases]  # fmt: skip
    headers = ["cell", "predicted", f"{round(100 * bt.level)}% PI", "realised", "ln error", "factor", "inside"]
    tail = (f"  refit on {bt.n_train_cells} cells ({bt.form} law); mean |ln error| {bt.mean_abs_log_error:.3f} "
            f"(x{math.exp(bt.mean_abs_log_error):.2f}); {bt.n_inside}/{len(bt.cases)} inside the PI")  # fmt: skip
    return head + "\n" + text.table(headers, rows) + "\n" + tail
