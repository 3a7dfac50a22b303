"""The report's opening in plain words: what the study found, what it recommends, and every
caveat. All numbers are computed from the tables and fits here; nothing is a stock phrase about
the expected science."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scaling.fit import DecayLaw
from scaling.fit.laws import RESPONSES
from scaling.fit.table import human
from scaling.report.analysis import ReportFit
from scaling.report.data import MECHANISMS, StudyTables

SAME_WITHIN = 1.15  # ratios of decays closer to 1 than this are "about the same"


@dataclass(frozen=True)
class Summary:
    findings: tuple[str, ...]
    recommendation: tuple[str, ...]
    caveat_groups: tuple[tuple[str, tuple[str, ...]], ...]  # (what they qualify, caveats)
    missing: tuple[str, ...]  # parts of the report that could not be drawn, and why

    @property
    def caveats(self) -> tuple[str, ...]:
        return tuple(c for _, group in self.caveat_groups for c in group)


def summarise(tables: StudyTables, rfit: ReportFit) -> Summary:
    return Summary(
        findings=tuple(_findings(tables, rfit)),
        recommendation=tuple(_recommendation(rfit)),
        caveat_groups=tuple((name, tuple(items)) for name, items in _caveat_groups(tables, rfit)),
        missing=tuple(missing_parts(tables, rfit)),
    )


def ratio_phrase(ratio: float, what: str) -> str:
    """3.04, 'the loss-optimal one' -> '3x the loss-optimal one'; 0.5 -> '2x smaller than ...'."""
    if not (math.isfinite(ratio) and ratio > 0):
        return f"not comparable with {what}"
    if 1 / SAME_WITHIN <= ratio <= SAME_WITHIN:
        return f"about the same as {what} (ratio {ratio:.2g})"
    if ratio > 1:
        return f"{ratio:.2g}x {what}"
    return f"{1 / ratio:.2g}x smaller than {what}"


def plasticity_name(rfit: ReportFit) -> str:
    """The plasticity objective's column: the fit's, else ft_score (the old tables' objective)."""
    return rfit.plasticity or "ft_score"


def what_plasticity_measures(column: str) -> str:
    """'fine-tuned score' (ft_score), 'fine-tuned held-out NLL' (ft_nll), else the column."""
    return {"ft_score": "fine-tuned score", "ft_nll": "fine-tuned held-out NLL"}.get(column, column)


def decay_ratios(rfit: ReportFit) -> pd.DataFrame:
    """Per cell with both optima: loss-optimal and plasticity-optimal decay* (the fit's plasticity
    objective), their ratio, and whether both are bracketed (estimates) or not (best searched values)."""
    rows = []
    for lo in rfit.optima_for("val_loss"):
        pl = rfit.optimum(plasticity_name(rfit), lo.cell)
        if pl is None:
            continue
        ratio = pl.decay_opt / lo.decay_opt if lo.decay_opt > 0 and pl.decay_opt > 0 else math.nan
        rows.append(dict(cell=lo.cell, n_params=lo.n_params, tpp=lo.tpp, loss_opt=lo.decay_opt,
                         plastic_opt=pl.decay_opt, ratio=ratio, both_bracketed=lo.bracketed and pl.bracketed))  # fmt: skip
    return pd.DataFrame(rows)


def tradeoff(trials: pd.DataFrame, plastic: str = "ft_score", direction: str = "max") -> pd.DataFrame:
    """Model-free price of plasticity per cell, from per-decay means: how much base loss the decay
    with the best `plastic` (highest, or lowest for direction "min") gives up (loss_cost), and how
    `plastic` changes from the decay with the best loss to that decay (plastic_change; an
    improvement is > 0 for "max", < 0 for "min")."""
    rows = []
    for cell, t in trials.groupby("cell"):
        m = t.groupby("decay")[["val_loss", plastic]].mean().dropna()
        if len(m) < 2:
            continue
        at_plastic = m.loc[m[plastic].idxmin() if direction == "min" else m[plastic].idxmax()]
        at_loss = m.loc[m["val_loss"].idxmin()]
        rows.append(dict(cell=cell, loss_cost=at_plastic["val_loss"] - at_loss["val_loss"],
                         plastic_change=at_plastic[plastic] - at_loss[plastic]))  # fmt: skip
    return pd.DataFrame(rows)


def _claims(rfit: ReportFit) -> list[str]:
    """The paper's question first: each claim's verdict with its pooled numbers (scaling.fit.claims)."""
    if rfit.fit is None or not rfit.fit.claims:
        return []
    return [claim.sentence() for claim in rfit.fit.claims]


def _findings(tables: StudyTables, rfit: ReportFit) -> list[str]:
    out_claims = _claims(rfit)
    t = tables.trials
    decays = sorted(t["decay"].unique())
    ns = sorted(t["n_params"].unique())
    tpps = sorted(t["tpp"].round(6).unique())
    seeds = t.groupby(["cell", "decay"]).size()
    n_cells = t["cell"].nunique()
    sizes = f"N from {human(ns[0])} to {human(ns[-1])} ({len(ns)} sizes)" if len(ns) > 1 else f"N = {human(ns[0])}"
    out = [
        f"{len(t)} trials in {n_cells} cell{'s' if n_cells > 1 else ''}: {sizes} at "
        f"{', '.join(f'{x:.3g}' for x in tpps)} tokens per parameter; "
        f"{len(decays)} decays searched from {decays[0]:.3g} to {decays[-1]:.3g}, {_count_text(seeds)} per decay."
    ]
    out = out_claims + out
    if tables.failed is not None and len(tables.failed):
        kinds = tables.failed["fail_kind"].value_counts() if "fail_kind" in tables.failed.columns else pd.Series(dtype=int)
        detail = f" ({', '.join(f'{v} {k}' for k, v in kinds.items())})" if len(kinds) else ""
        decay_list = ""
        if "decay" in tables.failed.columns:
            decay_list = "; at decay " + ", ".join(f"{d:.3g}" for d in sorted(tables.failed["decay"].dropna().unique()))
        out.append(f"{len(tables.failed)} planned trials failed{detail}{decay_list}; they are not in the figures.")

    ratios = decay_ratios(rfit)
    if not ratios.empty:
        good = ratios[ratios["both_bracketed"] & np.isfinite(ratios["ratio"])]
        basis = "both optima bracketed"
        if good.empty:
            good = ratios[np.isfinite(ratios["ratio"])]
            basis = "best searched decays: the optima are not bracketed, so this is rough"
        if not good.empty:
            med = float(np.median(good["ratio"]))
            spread = (f"; per cell from {good['ratio'].min():.2g}x to {good['ratio'].max():.2g}x" if len(good) > 1 else "")
            out.append(
                f"Point estimates: the plasticity-optimal decay is {ratio_phrase(med, 'the loss-optimal one')} at these "
                f"sizes (median over {len(good)} cell{'s' if len(good) > 1 else ''}, {basis}{spread}); whether that "
                "is more than noise is the first claim's test above."
            )
    plastic = plasticity_name(rfit)
    if tables.has(plastic):
        direction = rfit.plasticity_direction or "max"
        trade = tradeoff(t, plastic, direction)
        what = what_plasticity_measures(plastic)
        if not trade.empty:
            cost, change = float(np.median(trade["loss_cost"])), float(np.median(trade["plastic_change"]))
            if cost > 0 or (change < 0 if direction == "min" else change > 0):
                out.append(
                    f"Choosing the decay with the best {what} instead of the one with the best base loss "
                    f"costs {cost:+.3g} nats/token of base val_loss and changes {plastic} by {change:+.3g} "
                    f"({'lower' if direction == 'min' else 'higher'} is better; medians over {len(trade)} cells, "
                    "per-decay means of the trials)."
                )
            else:
                where = "In the only cell" if len(trade) == 1 else f"In all {len(trade)} cells"
                out.append(f"{where} the same decay gives the best base loss and the best {what}.")
    for objective in ("val_loss", plastic):
        law = rfit.law(objective)
        if law is not None:
            out.append(_law_sentence(law))
    return out


def _count_text(seeds: pd.Series) -> str:
    lo, hi = int(seeds.min()), int(seeds.max())
    return f"{lo} trial" + ("s" if lo > 1 else "") if lo == hi else f"{lo} to {hi} trials"


def _law_sentence(law: DecayLaw) -> str:
    name = "loss-optimal" if law.objective == "val_loss" else f"plasticity-optimal ({law.objective})"
    terms = {"ln_n": "N", "ln_d": "D", "ln_tpp": "TPP"}
    parts, words = [], []
    for c in law.coefficients:
        if c.term == "const":
            continue
        var = terms.get(c.term, c.term)
        parts.append(f"{var}^{c.value:.2g} ({round(100 * law.ci_level)}% CI {c.low:.2g} to {c.high:.2g})")
        if c.low > 0:
            words.append(f"grows with {var}")
        elif c.high < 0:
            words.append(f"shrinks with {var}")
        else:
            words.append(f"has no clear trend with {var}")
    return (f"Across {law.n_cells} cells the {name} decay* scales as {' x '.join(parts)}: it "
            f"{' and '.join(words)} ({law.formula}).")  # fmt: skip


def _recommendation(rfit: ReportFit) -> list[str]:
    rec, budget = rfit.recommendation, rfit.next_budget
    if rec is None:
        return [f"No recommendation for the {budget.describe()}: no decay law could be fitted."]
    chosen = [c for c in (rec.decay_loss_opt, rec.decay_plastic_opt) if c is not None]
    if all(c.value is None for c in chosen):
        return [f"No recommendation for the {budget.describe()}: no decay law could be fitted; "
                + "; ".join(f"{c.objective}: {c.reason}" for c in chosen) + "."]  # fmt: skip
    out = [f"For the {budget.describe()}:"]
    plastic_name = f"plasticity-optimal ({rec.plasticity})" if rec.plasticity else "plasticity-optimal"
    for name, choice in (("loss-optimal", rec.decay_loss_opt), (plastic_name, rec.decay_plastic_opt)):
        if choice is None:
            out.append(f"{name} decay: no law.")
            continue
        if choice.value is None:
            out.append(f"{name} decay: no law; {choice.reason}.")
            continue
        loss = (f"; expected base val_loss {choice.expected_val_loss:.4g}"
                if choice.expected_val_loss is not None and math.isfinite(choice.expected_val_loss) else "")  # fmt: skip
        out.append(
            f"{name} decay {choice.value:.3g} ({round(100 * choice.level)}% prediction interval "
            f"{choice.low:.3g} to {choice.high:.3g}, a factor of {choice.high / choice.low:.3g} wide){loss}; "
            f"{'backtested' if choice.label == 'backtested' else 'a GUESS: its law could not be backtested'}"
            f"{'' if choice.estimand == 'optimum' else f' (estimand: {choice.estimand}; {choice.reason})'}."
        )
    if rec.loss_cost is not None and math.isfinite(rec.loss_cost):
        out.append(f"Pretraining at the plasticity-optimal decay is expected to cost {rec.loss_cost:+.3g} nats/token "
                   "of base loss.")  # fmt: skip
    return out


def _caveat_groups(tables: StudyTables, rfit: ReportFit) -> list[tuple[str, list[str]]]:
    """Caveats grouped by what they qualify. Every warning the fits raised appears verbatim;
    lines here only add what the fits do not say (extrapolation, backtest numbers, wide intervals)."""
    about_rec: list[str] = []
    rec = rfit.recommendation
    fit_text = " ".join(rfit.warnings)
    if rec is not None:
        ex = rec.extrapolation
        if ex.is_extrapolation:
            about_rec.append("It is an extrapolation: " + "; ".join(ex.notes) + ".")
        for bt in rec.backtests:
            if bt.available:
                what = RESPONSES.get(bt.response, bt.response)
                about_rec.append(
                    f"Backtest of the {bt.objective} {what} law (largest N = {human(bt.held_out_n_params)} held out, "
                    f"refit on {bt.n_train_cells} cells): predicted {what} off by x{math.exp(bt.mean_abs_log_error):.2f} "
                    f"on average (worst x{bt.max_factor:.2f}); {bt.n_inside} of {len(bt.cases)} realised values inside "
                    f"the {round(100 * bt.level)}% prediction interval."
                )
            elif f"{bt.objective}: no backtest" not in fit_text:
                about_rec.append(f"No backtest of the {bt.objective} law: {bt.reason}.")
        # "... is a guess: <backtest reason>" repeats the fit's no-backtest warning
        about_rec += [w for w in rec.warnings if " is a guess: " not in w and w not in rfit.warnings]
        for choice in (rec.decay_loss_opt, rec.decay_plastic_opt):
            if choice is not None and choice.low > 0 and math.isfinite(choice.high) and choice.high / choice.low > 10:
                about_rec.append(f"The {choice.objective} recommendation's interval spans a factor of "
                                 f"{choice.high / choice.low:.3g}: the study pins it down poorly.")  # fmt: skip
    about_fits = list(rfit.problems) + list(rfit.warnings)
    about_fits += [f"{o.objective} optimum in {o.cell} is censored: {o.reason}" for o in rfit.optima if not o.bracketed]
    about_data = list(tables.notes)
    seeds = tables.trials.groupby(["cell", "decay"]).size()
    if int(seeds.max()) == 1:
        about_data.append("One trial per (cell, decay): the per-cell intervals rest on the response model's smoothness "
                          "(noise measured as what the model leaves unexplained), not on seed replicates.")
    groups = [("The recommendation", about_rec), ("The fits", about_fits), ("The data", about_data)]
    return [(name, list(dict.fromkeys(items))) for name, items in groups if items]


def missing_parts(tables: StudyTables, rfit: ReportFit) -> list[str]:
    out = []
    if not tables.has(plasticity_name(rfit)):
        out.append(f"No fine-tuning results ({plasticity_name(rfit)}): the fine-tuning figures, the Pareto fronts "
                   "and the plasticity-optimal decay are left out.")  # fmt: skip
    elif not tables.tasks:
        out.append("No per-task columns (ft_<task>_after): the per-task figure is left out.")
    if not any(tables.has(c) for c in MECHANISMS):
        out.append(f"No mechanism columns ({', '.join(MECHANISMS)}): the mechanisms figure is left out.")
    if tables.curves is None:
        out.append("No curves.csv: the training curves are left out.")
    if rfit.fit is None or rfit.fit.surface is None:
        out.append(f"The loss surface could not be fitted ({surface_reason(rfit)}): its figure is left out.")
    if tables.trials["cell"].nunique() == 1:
        out.append("A single (N, D) cell: no decay law, no recommendation; only this cell's optima are shown.")
    return out


def surface_reason(rfit: ReportFit) -> str:
    """Why there is no loss surface, in the fitter's words when it gave any."""
    for w in (*rfit.warnings, *rfit.problems):
        if w.startswith("loss surface not fitted: "):
            return w.removeprefix("loss surface not fitted: ").removeprefix("loss surface: ")
    return "it needs per-cell fits at 6 or more cells, with 2 or more values of both N and D"
