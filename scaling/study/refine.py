"""Adaptive refinement: the rule, fixed in advance, that adds trials after a cell's planned grid.

`propose(table, objectives, budget)` is pure: completed trials in, (cell, decay, seed) proposals
out. Per cell and objective it finds the best decay from seed-adjusted means (seed is a block
shared across a cell's decays), then proposes, in this order of priority:

  1. edge      one grid step beyond the edge, only when the best is the edge decay and the
               objective still improves there (the edge beats its inner neighbour); decay 0
               (tau = inf) is an edge nothing lies beyond
  2. neighbour tau * sqrt(2) and tau / sqrt(2) around the best (decay / sqrt(2), decay * sqrt(2))
               that lie inside the searched range; around decay 0, the smallest positive decay /
               sqrt(2); each at the seeds the best was run with, unless the cell already has a
               decay within a factor 2**(1/4)
  3. seed      one new seed at the best decay and at its neighbours on either side

The objectives' proposals are interleaved by priority, and at most `budget` trials per cell are
taken. In a cell tau = B / (lr * decay * D), so tau * sqrt(2) is decay / sqrt(2); a proposal's
tau is derived from the cell's recorded (tau, decay) pairs when the table has a `tau` column.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

STEP = math.sqrt(2.0)
_NEAR = math.log(2.0) / 4  # |ln ratio| under which two decays count as the same point


@dataclass(frozen=True)
class Proposal:
    """A trial the rule asks for, and why."""

    cell: str
    decay: float
    seed: int
    tau: float | None
    objective: str
    reason: str  # "edge" | "neighbour" | "seed"

    @property
    def key(self) -> str:
        """The plan key of the trial (round added by the caller)."""
        return f"decay={self.decay!r}/seed={self.seed}"


def seed_adjusted_means(decays: np.ndarray, seeds: np.ndarray, values: np.ndarray,
                        iterations: int = 50) -> dict[float, float]:
    """Per-decay means from the additive model value = m[decay] + b[seed] (least squares by
    alternating means), so a seed run at only some decays does not bias those decays."""
    levels = sorted(set(decays.tolist()))
    blocks = sorted(set(seeds.tolist()))
    d_idx = np.array([levels.index(d) for d in decays])
    s_idx = np.array([blocks.index(s) for s in seeds])
    m = np.array([values[d_idx == i].mean() for i in range(len(levels))])
    b = np.zeros(len(blocks))
    for _ in range(iterations):
        b = np.array([(values[s_idx == j] - m[d_idx[s_idx == j]]).mean() for j in range(len(blocks))])
        b -= b.mean()
        m = np.array([(values[d_idx == i] - b[s_idx[d_idx == i]]).mean() for i in range(len(levels))])
    return dict(zip(levels, m.tolist()))


def _has_near(decay: float, existing: list[float]) -> bool:
    if decay == 0:
        return 0.0 in existing
    return any(e > 0 and abs(math.log(decay / e)) < _NEAR for e in existing)


def _cell_candidates(rows: pd.DataFrame, column: str, direction: str) -> list[list[tuple[float, int, str]]]:
    """(decay, seed, reason) candidates of one cell and objective, grouped by priority."""
    rows = rows[np.isfinite(rows[column].to_numpy(dtype=float))]
    if rows.empty:
        return [[], [], []]
    decays = rows["decay"].to_numpy(dtype=float)
    seeds = rows["seed"].to_numpy(dtype=int)
    means = seed_adjusted_means(decays, seeds, rows[column].to_numpy(dtype=float))
    levels = sorted(means)
    sign = 1.0 if direction == "min" else -1.0
    best = min(levels, key=lambda d: (sign * means[d], d))
    i = levels.index(best)
    best_seeds = sorted(set(seeds[decays == best].tolist()))
    edge: list[tuple[float, int, str]] = []
    if len(levels) >= 2 and best > 0 and i in (0, len(levels) - 1):
        inner = levels[1] if i == 0 else levels[-2]
        if sign * means[best] < sign * means[inner] and inner > 0:  # still improving towards the edge
            beyond = best * best / inner  # one step of the grid's own spacing at that edge
            edge = [(beyond, s, "edge") for s in best_seeds]
    positive = [d for d in levels if d > 0]
    around = [best / STEP, best * STEP] if best > 0 else ([positive[0] / STEP] if positive else [])
    inside = [d for d in around if levels[0] <= d <= levels[-1]]  # beyond the edge only by rule 1
    neighbour = [(d, s, "neighbour") for d in inside if not _has_near(d, levels) for s in best_seeds]
    new_seed = int(seeds.max()) + 1
    side = [levels[j] for j in (i - 1, i + 1) if 0 <= j < len(levels)]
    seed = [(d, new_seed, "seed") for d in [best, *side]]
    return [edge, neighbour, seed]


def propose(table: pd.DataFrame, objectives: list[tuple[str, str]], budget: int) -> list[Proposal]:
    """Refinement trials for every cell of `table` (completed trials: cell, decay, seed, the
    objective columns, optionally tau); `objectives` are (column, "min" | "max"); at most
    `budget` proposals per cell, in priority order (see the module docstring)."""
    if budget <= 0 or table.empty:
        return []
    out: list[Proposal] = []
    for cell in sorted(table["cell"].unique()):
        rows = table[table["cell"] == cell]
        k = _tau_constant(rows)
        per_objective = {col: _cell_candidates(rows, col, d) for col, d in objectives if col in rows.columns}
        done = {(float(d), int(s)) for d, s in zip(rows["decay"], rows["seed"])}
        chosen: list[Proposal] = []
        for level in range(3):
            lists = [[(col, *c) for c in per_objective[col][level]] for col, _ in objectives if col in per_objective]
            for col, decay, seed, reason in _interleave(lists):  # objectives take turns
                if len(chosen) >= budget:
                    break
                if (decay, seed) in done:
                    continue
                done.add((decay, seed))
                tau = math.inf if decay == 0 else (k / decay if k is not None else None)
                chosen.append(Proposal(str(cell), float(decay), int(seed), tau, col, reason))
        out.extend(chosen)
    return out


def _interleave(lists: list[list]) -> list:
    """[a1, b1, a2, b2, ...] from [[a1, a2, ...], [b1, b2, ...]]."""
    return [x for group in itertools.zip_longest(*lists) for x in group if x is not None]


def _tau_constant(rows: pd.DataFrame) -> float | None:
    """tau * decay of a cell (the same for every decay of it), or None without a tau column."""
    if "tau" not in rows.columns:
        return None
    positive = rows[(rows["decay"] > 0) & np.isfinite(rows["tau"].to_numpy(dtype=float))]
    if positive.empty:
        return None
    return float((positive["tau"] * positive["decay"]).median())
