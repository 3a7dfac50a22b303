"""The paper's question as tests, from the paired per-cell bootstrap draws.

1. "The plasticity-optimal decay is larger than the loss-optimal one":
   delta = ln decay*_plastic - ln decay*_loss, per cell and pooled (mean over cells).
2. "Both optima fall as TPP grows": per objective, the slope of ln decay* against ln TPP between
   cells of one N at neighbouring TPPs, per pair and pooled (mean over pairs).

decay* is each objective's own optimum (the minimum of val_loss or ft_nll, the maximum of
ft_score), so the claims hold for either plasticity objective unchanged.
The draws of both objectives come from the same resampled trials (scaling.fit.optima), so a
cell's delta keeps the pairing. A draw beyond the grid is clipped to the grid's edge, so a row
with a censored optimum is a bound, flagged `censored`; pooled values use only rows whose point
optima are all interior. Each interval is value +- z sd of the draws (as per-cell intervals).
Verdict: "supports" when the interval lies above 0 for claim 1 (below 0 for claim 2),
"does not support" when it lies on the other side of 0, else "cannot tell".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from scaling.fit.text import json_number
from scaling.fit.optima import CellOptimum

SUPPORTS, AGAINST, UNSURE = "supports", "does not support", "cannot tell"


@dataclass(frozen=True)
class ClaimRow:
    label: str
    value: float
    low: float
    high: float
    censored: bool  # a censored optimum entered: the value is a bound
    verdict: str

    def to_dict(self) -> dict:
        return {"label": self.label, "value": json_number(self.value), "low": json_number(self.low), "high": json_number(self.high),
                "censored": self.censored, "verdict": self.verdict}  # fmt: skip


@dataclass(frozen=True)
class Claim:
    name: str
    statement: str
    rows: tuple[ClaimRow, ...]
    pooled: tuple[ClaimRow, ...]  # one per pooled quantity
    verdict: str
    level: float
    note: str

    def to_dict(self) -> dict:
        return {"name": self.name, "statement": self.statement, "verdict": self.verdict, "level": self.level,
                "note": self.note, "pooled": [r.to_dict() for r in self.pooled],
                "rows": [r.to_dict() for r in self.rows]}  # fmt: skip

    def sentence(self) -> str:
        parts = "; ".join(f"{r.label} {r.value:+.2f} [{r.low:+.2f}, {r.high:+.2f}]" for r in self.pooled
                          if math.isfinite(r.value))  # fmt: skip
        numbers = f" ({parts}, {round(100 * self.level)}% intervals)" if parts else ""
        verb = {AGAINST: "do not support", "supports": "support"}.get(self.verdict, self.verdict)
        return f"{self.statement}: the data {verb} it{numbers}. {self.note}".strip()


def _clipped(o: CellOptimum) -> tuple[float, np.ndarray, bool]:
    lo = math.log(min(d for d in o.decays_searched if d > 0))
    hi = math.log(max(o.decays_searched))
    point = min(max(o.log_value, lo), hi)
    return point, np.clip(o.draws, lo, hi), o.kind != "interior"


def _row(label: str, point: float, draws: np.ndarray, censored: bool, level: float, sign: float) -> ClaimRow:
    half = norm.ppf(0.5 + level / 2.0) * float(np.std(draws, ddof=1)) if draws.size > 1 else math.nan
    low, high = point - half, point + half
    return ClaimRow(label, point, low, high, censored, verdict(low, high, sign))


def verdict(low: float, high: float, sign: float) -> str:
    """sign +1: the claim says > 0; -1: < 0."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return UNSURE
    if sign * low > 0 and sign * high > 0:
        return SUPPORTS
    if sign * low < 0 and sign * high < 0:
        return AGAINST
    return UNSURE


def plastic_above_loss(loss: Sequence[CellOptimum], plastic: Sequence[CellOptimum], level: float = 0.9,
                       objective: str | None = None) -> Claim:
    """Claim 1, per cell present in both objectives and pooled over cells with both optima interior.
    objective: the plasticity objective's column, named in the statement (default: plastic's own)."""
    objective = objective or next((o.objective for o in plastic), "plasticity")
    by_cell = {o.cell: o for o in plastic}
    rows, pooled_points, pooled_draws = [], [], []
    for lo in loss:
        pl = by_cell.get(lo.cell)
        if pl is None or lo.draws is None or pl.draws is None or not lo.draws.size or lo.draws.size != pl.draws.size:
            continue
        pl_point, pl_draws, pl_cens = _clipped(pl)
        lo_point, lo_draws, lo_cens = _clipped(lo)
        rows.append(_row(lo.cell, pl_point - lo_point, pl_draws - lo_draws, pl_cens or lo_cens, level, +1.0))
        if not (pl_cens or lo_cens):
            pooled_points.append(pl_point - lo_point)
            pooled_draws.append(pl_draws - lo_draws)
    pooled, note = _pool("pooled delta", pooled_points, pooled_draws, level, +1.0, "cells with both optima interior")
    return Claim("plastic_above_loss", "Claim 'plasticity wants more decay than base loss' "
                 f"(delta = ln decay*_plastic - ln decay*_loss > 0; plasticity objective {objective})", tuple(rows), (pooled,), pooled.verdict, level,
                 note)  # fmt: skip


def optima_fall_with_tpp(optima_by_objective: dict[str, Sequence[CellOptimum]], level: float = 0.9) -> Claim:
    """Claim 2: per objective, slopes of ln decay* in ln TPP between neighbouring TPPs of one N."""
    rows, pooled, notes = [], [], []
    for objective, optima in optima_by_objective.items():
        by_n: dict[float, list[CellOptimum]] = {}
        for o in optima:
            if o.draws is not None and o.draws.size:
                by_n.setdefault(o.n_params, []).append(o)
        points, draws = [], []
        for cells in by_n.values():
            cells = sorted(cells, key=lambda o: o.tpp)
            for a, b in zip(cells, cells[1:]):
                if a.draws.size != b.draws.size or not b.tpp > a.tpp:
                    continue
                pa, da, ca = _clipped(a)
                pb, db, cb = _clipped(b)
                step = math.log(b.tpp / a.tpp)
                rows.append(_row(f"{objective} {a.cell} -> {b.cell}", (pb - pa) / step, (db - da) / step, ca or cb,
                                 level, -1.0))  # fmt: skip
                if not (ca or cb):
                    points.append((pb - pa) / step)
                    draws.append((db - da) / step)
        row, note = _pool(f"{objective} pooled slope", points, draws, level, -1.0, "pairs with both optima interior")
        pooled.append(row)
        notes.append(f"{objective}: {note}")
    verdicts = [r.verdict for r in pooled]
    overall = SUPPORTS if verdicts and all(v == SUPPORTS for v in verdicts) else (
        AGAINST if AGAINST in verdicts else UNSURE)  # fmt: skip
    return Claim("optima_fall_with_tpp", "Claim 'both optima fall as TPP grows' (slope of ln decay* in ln TPP < 0 "
                 "for each objective)", tuple(rows), tuple(pooled), overall, level,
                 " ".join(n for n in notes if n))  # fmt: skip


def _pool(label, points, draws, level, sign, what) -> tuple[ClaimRow, str]:
    if not points:
        return ClaimRow(label, math.nan, math.nan, math.nan, False, UNSURE), f"No {what}, so no pooled value."
    row = _row(label, float(np.mean(points)), np.mean(draws, axis=0), False, level, sign)
    return row, f"Pooled over {len(points)} {what}."
