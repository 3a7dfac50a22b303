"""`fit_study`: every fit of design.md section 4 on one trials table, in one result object.

A table with a `decay` column is a study: per-cell optima for each objective, decay laws (direct
and Power Lines), backtests, and the loss surface fitted to each cell's loss at its optimum.
A table without one (only N, D and a loss, e.g. Chinchilla's points) gets the loss surface alone.
`StudyFit.to_dict()` is what `scaling fit` writes to fits.json; `summary()` is its text.

fits.json (schema "scaling.fits/3"; every NaN or infinity is written as null):

    schema, source, mode ("study" | "surface"), n_trials, n_cells, settings {...}, n_range, d_range
    E, A, B, alpha, beta        the surface parameters again at the top level (only if fitted)
    surface: null | {formula, params, ci, se, ...}
    objectives: {column: "min" | "max"}
    plasticity: null | column          the plasticity objective (claims, decay_plastic_opt): the table's
                                       `plasticity` choice ("nll" -> ft_nll, "score" -> ft_score; ft_score
                                       without the column), or the non-val_loss objective the user named
    noise: {objective: {sd, df}}       pooled per-trial residual sd the intervals were drawn at
    optima: [{cell, n_params, n_tokens, tpp, objective, direction, kind ("interior" |
        "censored_below" | "censored_above"), decay_opt, low, high, log_sd, decay_tol, tol_kind,
        tol_low, tol_high, delta, n_trials, n_seeds, interval_basis, evidence, tau_opt, ...}]
    laws: {objective: null | law}      ln decay* = ... (censored likelihood; see laws.py)
    tau_laws: {objective: [law, ...]}  ln tau*: the N-D form, Power Lines m free, m = -0.53
    tolerance_laws: {objective: [law, ...]}   ln decay_tol = ... and ln tau_tol = ... (its forms)
    carriers: {objective: {optimum: null | {response, form, formula, held_out}, tolerance: ...}}
                                       the law of each estimand that `recommend` uses: the smallest
                                       held-out error among that estimand's laws (choose_carrier)
        law: {objective, response, form, formula, coefficients {name: {term, value, se, low,
        high}}, cells, censored [{cell, kind, bound}], tau2, between_cell_sd, df_resid,
        held_out_mean_abs_log_error, held_out_cells, warnings, n_range, d_range, tpp_range}
    backtests: {objective: null | {available, reason, response, law_form, held_out_n_params, distance,
        cases, ...}}                   the backtest of the optimum carrier (tolerance carrier if none)
    claims: [{name, statement, verdict ("supports" | "does not support" | "cannot tell"), level,
        note, pooled [{label, value, low, high, censored, verdict}], rows [...]}]
    skipped: [{cell, reason}]          cells the response model could not be fitted to
    warnings: [..]

Predictions for a new (N, D) need the statsmodels results, so they come from the Python objects
(`StudyFit.law(objective).predict(N, D)`) or `scaling recommend`, not from the JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from scaling.errors import DataError, FitError
from scaling.fit import text
from scaling.fit.backtest import Backtest, backtest_law
from scaling.fit.claims import Claim, optima_fall_with_tpp, plastic_above_loss
from scaling.fit.laws import RESPONSES, DecayLaw, fit_decay_law
from scaling.fit.optima import CellOptimum, cell_estimates
from scaling.fit.surface import LossSurface, fit_loss_surface
from scaling.fit.table import apply_columns, describe_objective, human, plain, plasticity_objective, prepare_table

SCHEMA = "scaling.fits/3"


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
    tau_laws: tuple[DecayLaw, ...]  # per objective: the N-D form, Power Lines m free, m fixed
    backtests: tuple[Backtest, ...]
    warnings: tuple[str, ...]
    n_range: tuple[float, float]
    d_range: tuple[float, float]
    settings: tuple[tuple[str, Any], ...]
    tolerance_laws: tuple[DecayLaw, ...] = ()
    claims: tuple[Claim, ...] = ()
    noise: tuple[tuple[str, float, int], ...] = ()  # (objective, pooled residual sd, df)
    skipped: tuple[tuple[str, str], ...] = ()
    lr: float = math.nan  # the study's (median) peak lr and batch tokens
    batch_tokens: float = math.nan
    plasticity: str | None = None  # the plasticity objective's column (ft_nll, ft_score, ...), None if none

    @property
    def plasticity_direction(self) -> str | None:
        """"min" or "max" for the plasticity objective, None if it was not fitted."""
        return dict(self.objectives).get(self.plasticity) if self.plasticity else None

    def law(self, objective: str) -> DecayLaw | None:
        return next((law for law in self.laws if law.objective == objective), None)

    def carrier(self, objective: str, estimand: str = "optimum", *, tau_only: bool = False) -> DecayLaw | None:
        """The law that carries `objective`'s estimand ("optimum": decay* or tau*; "tolerance":
        decay_tol or tau_tol) to a new budget: of the laws fitted for it, the one with the smallest
        held-out error (choose_carrier). tau_only: only timescale laws, if there are any (a
        recipe with another lr or batch size is reached through tau)."""
        pool = [law for law in (*self.laws, *self.tau_laws, *self.tolerance_laws)
                if law.objective == objective and law.estimand == estimand]  # fmt: skip
        if tau_only and any(law.in_tau for law in pool):
            pool = [law for law in pool if law.in_tau]
        return choose_carrier(pool)

    def backtest_for(self, law: DecayLaw | None) -> Backtest | None:
        """The backtest of `law` (the same objective, response and form, refitted without the largest N)."""
        return next((b for b in self.backtests if _checks(b, law)), None) if law is not None else None

    def tau_law(self, objective: str, form: str | None = None) -> DecayLaw | None:
        """The tau law of `objective` in `form`, or (form None) the one with the smallest held-out error."""
        laws = [law for law in self.tau_laws if law.objective == objective and (form is None or law.form == form)]
        return choose_carrier(laws) if form is None else next(iter(laws), None)

    def tolerance_law(self, objective: str) -> DecayLaw | None:
        """The decay_tol law of `objective` (its tau_tol laws compete with it in `carrier`)."""
        return next((law for law in self.tolerance_laws if law.objective == objective and law.response == "tolerance"),
                    None)  # fmt: skip

    def claim(self, name: str) -> Claim | None:
        return next((c for c in self.claims if c.name == name), None)

    def backtest(self, objective: str) -> Backtest | None:
        """The backtest of `objective`'s optimum carrier (its tolerance carrier when no optimum law exists)."""
        law = self.carrier(objective, "optimum") or self.carrier(objective, "tolerance")
        return self.backtest_for(law)

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
        out["plasticity"] = self.plasticity
        out["noise"] = {obj: {"sd": sd, "df": df} for obj, sd, df in self.noise}
        out["optima"] = [o.to_dict() for o in self.optima]
        out["laws"] = {obj: _maybe(self.law(obj)) for obj, _ in self.objectives}
        out["tau_laws"] = {obj: [law.to_dict() for law in self.tau_laws if law.objective == obj]
                           for obj, _ in self.objectives}  # fmt: skip
        out["tolerance_laws"] = {obj: [law.to_dict() for law in self.tolerance_laws if law.objective == obj]
                                 for obj, _ in self.objectives}  # fmt: skip
        out["carriers"] = {obj: {e: _carrier_dict(self.carrier(obj, e)) for e in ("optimum", "tolerance")}
                           for obj, _ in self.objectives}  # fmt: skip
        out["backtests"] = {obj: _maybe(self.backtest(obj)) for obj, _ in self.objectives}
        out["claims"] = [c.to_dict() for c in self.claims]
        out["skipped"] = [{"cell": c, "reason": r} for c, r in self.skipped]
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
    deltas: Mapping[str, float] | None = None,
) -> StudyFit:
    """Fit everything the table supports.

    columns: {design name: table column} for foreign tables. objectives: {column: "min"|"max"};
    default val_loss (min) and the table's plasticity objective (`plasticity_objective`: ft_nll
    (min) or ft_score (max)), those present. With explicit objectives the plasticity objective is
    the one besides val_loss, or if there are several, the table's choice, ft_score or ft_nll
    (a warning says which). n_bootstrap: resamples for every
    interval (per-cell optima and loss surface). level: prediction / per-cell interval coverage;
    ci_level: coefficient and surface-parameter confidence level. drop_highest_loss: leave out
    the k highest-loss points before the surface fit (Epoch AI drop 5 of Chinchilla's).
    deltas: {objective: delta} for the tolerance estimand (default optima.DEFAULT_DELTA).
    A table whose cells can be fitted but whose laws cannot still gives a StudyFit (per-cell
    estimands and bounds); the warnings say which laws are missing and why.
    """
    mapped = apply_columns(df, columns, source) if isinstance(df, pd.DataFrame) else df
    if isinstance(mapped, pd.DataFrame) and "decay" not in mapped.columns:
        study_like = [c for c in ("ft_score", "ft_nll", "seed", "lr", *(objectives or {})) if c in mapped.columns]
        if study_like:
            raise DataError(
                f"{source}: missing column 'decay' (the table has {study_like[0]!r}, so it looks like a study); "
                "map it with --col decay=COLUMN"
            )
        return _surface_only(mapped, source, n_bootstrap, seed, ci_level, drop_highest_loss)

    table = prepare_table(mapped, source=source, require=("n_params", "n_tokens", "decay"))
    wanted, plasticity, notes = _objectives(table, objectives, source)
    settings = (("n_bootstrap", n_bootstrap), ("seed", seed), ("level", level), ("ci_level", ci_level),
                ("law_form", law_form), ("deltas", dict(deltas or {})))  # fmt: skip
    warnings: list[str] = list(notes)
    present = {}
    for objective, direction in wanted:
        if np.isfinite(table[objective].to_numpy(dtype=float)).any():
            present[objective] = direction
        else:
            warnings.append(f"{objective}: no finite values in the table; skipped")
    if not present:
        raise FitError(f"{source}: no objective column has finite values ({', '.join(o for o, _ in wanted)})")
    est = cell_estimates(table, present, n_bootstrap=n_bootstrap, level=level, seed=seed, deltas=deltas)
    for cell, reason in est.skipped:
        warnings.append(f"cell {cell} not fitted: {reason}")
    if not any(est.optima.values()):
        raise FitError(
            f"{source}: no cell can be fitted: the response model needs 4 or more distinct decays with a finite "
            f"value per cell ({est.skipped[0][1] if est.skipped else 'no cells'})"
        )
    optima: list[CellOptimum] = []
    laws, tau_laws, tol_laws, backtests = [], [], [], []
    fitted: list[tuple[str, str]] = []
    for objective, direction in present.items():
        cells = est.optima[objective]
        if not cells:
            continue
        optima.extend(cells)
        fitted.append((objective, direction))
        censored = [o.cell for o in cells if not o.bracketed]
        if censored:
            warnings.append(f"{objective}: decay* censored (beyond the searched decays) in {len(censored)} of "
                            f"{len(cells)} cells: {', '.join(censored)}")  # fmt: skip
        if any(not math.isfinite(o.noise_sd) for o in cells):
            warnings.append(f"{objective}: no interval: no cell has more trials than the response model's parameters, "
                            "so the noise cannot be measured; search more decays or run more seeds")  # fmt: skip
        elif any(o.n_seeds == 1 for o in cells):
            warnings.append(f"{objective}: one seed per decay in some cells: their intervals rest on the response "
                            "model's smoothness (the noise is what the model leaves unexplained)")  # fmt: skip
        try:
            law = fit_decay_law(cells, form=law_form, ci_level=ci_level)
        except FitError as exc:
            warnings.append(f"{objective}: no decay law: {exc}")
        else:
            laws.append(law)
            warnings.extend(law.warnings)
        try:
            tol_laws.append(fit_decay_law(cells, form=law_form, response="tolerance", ci_level=ci_level))
        except FitError as exc:
            warnings.append(f"{objective}: no tolerance law: {exc}")
        if {"lr", "batch_tokens"} <= set(table.columns):
            for response, into, what in (("tau", tau_laws, "timescale law"), ("tau_tolerance", tol_laws, "tau_tol law")):
                for form in ("auto", "tpp", "tpp_fixed"):
                    try:
                        tau_law = fit_decay_law(cells, response=response, form=form, ci_level=ci_level)
                    except FitError as exc:
                        warnings.append(f"{objective}: no {what} ({form}): {exc}")
                        continue
                    if not any(t.objective == objective and t.response == response and t.form == tau_law.form
                               for t in into):  # fmt: skip
                        into.append(tau_law)
        candidates = [law for law in (*laws, *tau_laws, *tol_laws) if law.objective == objective]
        for law in candidates:
            refit_form = law.form if law.in_tau else law_form
            bt = backtest_law(cells, level=level, form=refit_form, response=law.response)
            backtests.append(replace(bt, law_form=law.form))
        for estimand in ("optimum", "tolerance"):
            chosen = choose_carrier([law for law in candidates if law.estimand == estimand])
            bt = next((b for b in backtests if _checks(b, chosen)), None) if chosen is not None else None
            if bt is not None and not bt.available:
                warnings.append(f"{objective}: no backtest of the {estimand} law {chosen.formula} ({bt.reason}); a "
                                "prediction from it is a guess")  # fmt: skip

    claims = []
    by_objective = {obj: est.optima[obj] for obj, _ in fitted}
    if "val_loss" in by_objective and plasticity in by_objective:
        claims.append(plastic_above_loss(by_objective["val_loss"], by_objective[plasticity], level, plasticity))
    pair = {obj: by_objective[obj] for obj in ("val_loss", plasticity) if obj in by_objective}
    if pair and len(set(np.round(table["tpp"], 6))) > 1:
        claims.append(optima_fall_with_tpp(pair, level))

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
        warnings=tuple(dict.fromkeys(warnings)),
        n_range=(float(table["n_params"].min()), float(table["n_params"].max())),
        d_range=(float(table["n_tokens"].min()), float(table["n_tokens"].max())),
        settings=settings,
        tolerance_laws=tuple(tol_laws),
        claims=tuple(claims),
        noise=tuple((obj, sd, df) for obj, (sd, df) in est.noise.items()),
        skipped=est.skipped,
        lr=_median(table, "lr"),
        batch_tokens=_median(table, "batch_tokens"),
        plasticity=plasticity,
    )


def _carrier_dict(law: DecayLaw | None) -> dict | None:
    if law is None:
        return None
    return {"response": law.response, "form": law.form, "formula": law.formula,
            "held_out_mean_abs_log_error": text.json_number(law.held_out), "held_out_cells": law.held_out_n}  # fmt: skip


def choose_carrier(laws) -> DecayLaw | None:
    """Of competing laws for one estimand, the one with the smallest leave-one-cell-out held-out
    |ln error| (the forms are compared on the cells they predict, not on their fit); with no
    finite held-out error anywhere, the first (the direct decay law before the timescale laws)."""
    laws = [law for law in laws if law is not None]
    scored = [law for law in laws if math.isfinite(law.held_out)]
    if scored:
        return min(scored, key=lambda law: law.held_out)
    return laws[0] if laws else None


def _checks(bt: Backtest, law: DecayLaw | None) -> bool:
    return (law is not None and bt.objective == law.objective and bt.response == law.response
            and bt.law_form == law.form)  # fmt: skip


def _median(table: pd.DataFrame, col: str) -> float:
    if col not in table.columns:
        return math.nan
    values = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    return float(np.median(values)) if values.size else math.nan


def _objectives(table: pd.DataFrame, objectives, source: str) -> tuple[list[tuple[str, str]], str | None, list[str]]:
    """(objectives to fit, the plasticity objective's column or None, notes for the warnings)."""
    try:
        chosen, chosen_direction = plasticity_objective(table)
    except DataError as exc:
        raise DataError(f"{source}: {exc}") from None
    notes: list[str] = []
    if objectives:
        out = []
        for col, direction in objectives.items():
            if col not in table.columns:
                raise DataError(f"{source}: objective column {col!r} is not in the table")
            if direction not in ("min", "max"):
                raise DataError(f"{source}: objective {col!r}: direction must be 'min' or 'max', got {direction!r}")
            out.append((col, direction))
        others = [col for col, _ in out if col != "val_loss"]
        if len(others) == 1:
            plasticity = others[0]
        else:
            plasticity = next((c for c in (chosen, "ft_score", "ft_nll") if c in others), None)
            if len(others) > 1:
                notes.append(f"{len(others)} objectives besides val_loss ({', '.join(others)}): the plasticity objective "
                             f"(the claims, decay_plastic_opt) is {plasticity or 'none of them'}")  # fmt: skip
    else:
        out = [("val_loss", "min")] if "val_loss" in table.columns else []
        plasticity = chosen
        if not _has_values(table, chosen):
            other = next((c for c in ("ft_nll", "ft_score") if c != chosen and _has_values(table, c)), None)
            if other is not None:
                notes.append(f"the table's plasticity objective {chosen} has no values in the table; fitted {other} "
                             "instead")  # fmt: skip
                plasticity, chosen_direction = other, "min" if other == "ft_nll" else "max"
        if plasticity in table.columns:
            out.append((plasticity, chosen_direction))
        if not out:
            raise DataError(
                f"{source}: no objective column: expected val_loss and/or a plasticity objective ({chosen}) "
                "(or name one with --objective COLUMN:min|max)"
            )
    for col, _ in out:
        values = pd.to_numeric(table[col], errors="coerce")
        if (values.isna() & table[col].notna()).any():
            raise DataError(f"{source}: objective column {col!r} must be numeric")
        table[col] = values.astype(float)
        _check_objective(table, col, source)
    return out, plasticity, notes


def _has_values(table: pd.DataFrame, col: str) -> bool:
    return col in table.columns and bool(np.isfinite(pd.to_numeric(table[col], errors="coerce")).any())


def _check_objective(table: pd.DataFrame, col: str, source: str) -> None:
    """The bad-row policy of a study table (docs/fitting.md): an empty objective cell is a missing
    value (a diverged model, a task not run) and is left out of that objective's fits; +-inf, and
    a negative loss or NLL, cannot be a measurement, so the first such row is a one-line error."""
    values = table[col].to_numpy(dtype=float)
    is_loss = col.endswith(("loss", "nll"))
    bad = np.isinf(values) | (is_loss & (values < 0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        expected = "finite and >= 0 (a loss)" if is_loss else "finite"
        raise DataError(
            f"{source}: objective column {col!r} must be {expected} or empty "
            f"(data row {row + 1}: {plain(values[row])})"
        )


def _study_surface(optima, n_bootstrap, seed, ci_level, warnings: list[str]) -> LossSurface | None:
    """The surface through each cell's val_loss at its optimum (the response curve's value at
    decay*; at a censored cell, at the grid edge: an upper bound on the cell's best loss)."""
    cells = [o for o in optima if o.objective == "val_loss"]
    try:
        with np.errstate(all="ignore"):  # bootstrap refits of a 5-parameter law on few cells may overflow
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
    if fit.mode == "study":
        if fit.plasticity:
            out += ["", f"Plasticity objective: {describe_objective(fit.plasticity)}"]
        if fit.noise:
            out += ["", "Noise (pooled residual sd per trial, the intervals' basis): " + "; ".join(
                f"{obj} {sd:.3g} ({df} df)" for obj, sd, df in fit.noise)]  # fmt: skip
        for claim in fit.claims:
            out += ["", _claim_text(claim)]
    for objective, direction in fit.objectives if fit.mode == "study" else ():
        out += ["", _optima_text(fit.optima_for(objective), objective, direction)]
        out += ["", _laws_text(fit, objective)]
        bt = fit.backtest(objective)
        if bt is not None:
            out += ["", _backtest_text(bt)]
    if fit.warnings:
        out += ["", "Warnings:"] + [f"  - {w}" for w in fit.warnings]
    return "\n".join(out)


def _claim_text(claim) -> str:
    head = f"Test: {claim.statement}: {claim.verdict.upper()}"
    pct = f"{round(100 * claim.level)}% interval"
    rows = [[r.label, f"{r.value:+.3f}", f"[{r.low:+.3f}, {r.high:+.3f}]", "bound (censored)" if r.censored else "",
             r.verdict] for r in (*claim.pooled, *claim.rows) if math.isfinite(r.value)]  # fmt: skip
    return head + "\n" + text.table(["", "value", pct, "note", "verdict"], rows) + f"\n  {claim.note}"


def _optima_text(optima, objective: str, direction: str) -> str:
    level = optima[0].level if optima else 0.9
    delta = optima[0].delta if optima else math.nan
    head = (f"Per-cell estimands: {objective} ({'minimise' if direction == 'min' else 'maximise'}); "
            f"decay_tol = largest decay within {delta:g} of the best")  # fmt: skip
    rows = []
    for o in optima:
        rows.append([
            o.cell, human(o.n_params), text.fmt(o.tpp, 3), o.kind, _value(o.kind, o.decay_opt, o.low, o.high),
            _span(o.low, o.high), _value(o.tol_kind, o.decay_tol, o.tol_low, o.tol_high), _span(o.tol_low, o.tol_high),
            text.fmt(o.value_at_opt, 4), f"{o.n_trials}/{o.n_seeds}",
        ])  # fmt: skip
    headers = ["cell", "N", "TPP", "decay* kind", "decay*", f"{round(100 * level)}% interval", "decay_tol",
               "interval", objective, "trials/seeds"]  # fmt: skip
    basis = sorted({o.interval_basis for o in optima})
    return head + "\n" + text.table(headers, rows) + "\n  intervals rest on: " + "; ".join(basis)


def _value(kind: str, value: float, low: float, high: float) -> str:
    if kind == "censored_below":
        return f"< {text.fmt(value, 3)}" if value > 0 else "0 (no decay)"
    if kind == "censored_above":
        return f"> {text.fmt(value, 3)}"
    return text.fmt(value, 3)


def _span(low: float, high: float) -> str:
    if not (math.isfinite(low) or math.isfinite(high)) or (math.isnan(low) or math.isnan(high)):
        return "-"
    return f"[{text.fmt(low, 3)}, {text.fmt(high, 3) if math.isfinite(high) else 'inf'}]"


def _laws_text(fit: StudyFit, objective: str) -> str:
    laws = [law for law in (*fit.laws, *fit.tolerance_laws, *fit.tau_laws) if law.objective == objective]
    if not laws:
        return f"Laws: {objective}: none could be fitted (see the warnings)"
    carriers = [fit.carrier(objective, e) for e in ("optimum", "tolerance")]
    pct = f"{round(100 * laws[0].ci_level)}% CI"
    rows = []
    for law in laws:
        coefs = "  ".join(f"{c.name}={text.fmt(c.value, 3)} [{text.fmt(c.low, 3)}, {text.fmt(c.high, 3)}]"
                          for c in law.coefficients)  # fmt: skip
        rows.append([("* " if any(law is c for c in carriers) else "  ") + law.formula, coefs,
                     f"{len(law.cells)}+{len(law.censored)}", text.fmt(math.sqrt(law.tau2), 3),
                     text.fmt(law.held_out, 3) + (f" ({law.held_out_n})" if law.held_out_n else "")])  # fmt: skip
    head = (f"Laws: {objective} (censored likelihood; cells = interior + censored; held-out = leave-one-cell-out "
            f"mean |ln error|; * = the law each estimand is carried by: the smallest held-out error)")  # fmt: skip
    return head + "\n" + text.table(["law", f"coefficients ({pct})", "cells", "between-cell sd", "held-out"], rows)


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


def _backtest_text(bt: Backtest) -> str:
    what = RESPONSES.get(bt.response, bt.response)
    head = (f"Backtest: {bt.objective} {what} law ({bt.law_form or bt.form}), largest N = {human(bt.held_out_n_params)} held out "
            f"({bt.distance:.3g}x beyond the refit's largest N)")  # fmt: skip
    if not bt.available:
        return f"{head}: not possible ({bt.reason}); predictions are guesses"
    rows = [[c.cell, text.fmt(c.predicted, 3), text.interval(c.low, c.high), text.fmt(c.realised, 3),
             f"{c.log_error:+.3f}", f"x{c.factor:.2f}", "yes" if c.inside else "NO"] for c in bt.cases]  # fmt: skip
    headers = ["cell", "predicted", f"{round(100 * bt.level)}% PI", "realised", "ln error", "factor", "inside"]
    tail = (f"  refit on {bt.n_train_cells} cells ({bt.form} law); mean |ln error| {bt.mean_abs_log_error:.3f} "
            f"(x{math.exp(bt.mean_abs_log_error):.2f}); {bt.n_inside}/{len(bt.cases)} inside the PI")  # fmt: skip
    return head + "\n" + text.table(headers, rows) + "\n" + tail
