"""Per-cell optima: the decay that is best for one objective inside one (N, D) cell.

Within a cell, each objective is treated as a smooth function of log decay near its best
observed point: a quadratic in ln(decay), fitted by least squares to the trials at the best
observed decay and up to two searched decays on either side (a local window, so the far tails
of the grid, where training degrades, do not bend the fit). The vertex is decay*.

Honesty rules (design.md section 4.2): decay* is `bracketed` only if the best observed decay has
a searched neighbour on each side in log space, the quadratic opens the right way and its vertex
lies inside the window of decays it was fitted on. Otherwise the result is the best observed
decay, `bracketed` is False and `reason` says why; nothing is extrapolated. decay = 0 (no weight
decay, tau = inf) is a searched value but cannot sit on a log axis: it may be the best observed
point (then the optimum is unbracketed on the low side) and it never enters the quadratic; the
smallest positive decay is then the low edge of the log axis.

Uncertainty: a bootstrap over the cell's trials. When every searched decay has at least two
trials (seeds), trials are resampled within each decay, after spreading each decay's values by
sqrt(n/(n-1)) about their mean (with 2-3 seeds the plain bootstrap is far too narrow); otherwise
trials are resampled as pairs (decay, value), which is cruder but still moves the optimum by
dropping points. All resamples are located at once (`locate_many`) by the same rules; an
unbracketed resample contributes its best observed decay. In simulation the 90% intervals cover
the true optimum in 85-90% of cells (tests/test_fit_optima.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scaling.errors import DataError, FitError
from scaling.fit.table import cell_label

HALF_WINDOW = 2  # searched decays on each side of the best observed one used by the quadratic
MIN_LOG_SD = 0.01  # floor on a cell's bootstrap sd of ln decay* (keeps law weights finite)


@dataclass(frozen=True)
class CellOptimum:
    """decay* for one objective in one (n_params, n_tokens) cell."""

    cell: str
    n_params: float
    n_tokens: float
    tpp: float
    objective: str
    direction: str  # "min" or "max"
    decay_opt: float  # vertex of the quadratic if bracketed, else the best observed decay
    low: float  # bootstrap interval for decay* (NaN when unbracketed)
    high: float
    log_sd: float  # bootstrap sd of ln decay* (NaN when unbracketed)
    bracketed: bool
    n_trials: int
    best_observed_decay: float
    value_at_opt: float  # quadratic at its vertex, or the best observed mean
    curvature: float  # d^2 objective / d(ln decay)^2 / 2 of the local quadratic (NaN if none)
    lr: float
    batch_tokens: float
    tau_opt: float  # B / (lr * decay* * D), the EMA timescale as a fraction of the run
    decays_searched: tuple[float, ...]
    level: float  # coverage of [low, high]
    reason: str | None = None  # why it is not bracketed

    def to_dict(self) -> dict:
        out = {}
        for key, value in self.__dict__.items():
            if isinstance(value, tuple):
                out[key] = [_num(v) for v in value]
            elif isinstance(value, float):
                out[key] = _num(value)
            else:
                out[key] = value
        return out


@dataclass(frozen=True)
class _Located:
    log_opt: float  # ln decay* (vertex or best observed)
    best_decay: float
    value: float
    curvature: float
    bracketed: bool
    reason: str | None


def cell_optima(
    df: pd.DataFrame,
    objective: str,
    direction: str,
    *,
    n_bootstrap: int = 200,
    level: float = 0.9,
    seed: int = 0,
) -> tuple[CellOptimum, ...]:
    """decay* for `objective` in every cell of a prepared table (see table.prepare_table),
    sorted by (N, D); cells are grouped by the `cell` label when the table has one."""
    if direction not in ("min", "max"):
        raise FitError(f"objective {objective!r}: direction must be 'min' or 'max', got {direction!r}")
    for col in ("n_params", "n_tokens", "decay", objective):
        if col not in df.columns:
            raise DataError(f"trials table: missing column {col!r} (needed for per-cell optima of {objective})")
    rng = np.random.default_rng(seed)
    value = pd.to_numeric(df[objective], errors="coerce").to_numpy(dtype=float)
    rows = df[np.isfinite(value)]
    if rows.empty:
        return ()
    key = rows["cell"].astype(str) if "cell" in rows.columns else rows["n_params"].astype(str) + "|" + rows["n_tokens"].astype(str)
    codes, _ = pd.factorize(key)
    arrays = {col: _column(rows, col) for col in ("n_params", "n_tokens", "decay", "lr", "batch_tokens")}
    arrays["value"] = rows[objective].to_numpy(dtype=float)
    labels = rows["cell"].astype(str).to_numpy() if "cell" in rows.columns else None
    cells = []
    for code in range(codes.max() + 1):
        idx = np.flatnonzero(codes == code)
        cells.append((float(np.median(arrays["n_params"][idx])), float(np.median(arrays["n_tokens"][idx])), idx))
    cells.sort(key=lambda c: (c[0], c[1]))
    out = []
    for n_params, n_tokens, idx in cells:
        label = str(labels[idx[0]]) if labels is not None else cell_label(n_params, n_tokens / n_params)
        out.append(
            _cell(label, n_params, n_tokens, {k: v[idx] for k, v in arrays.items()}, objective, direction,
                  n_bootstrap, level, rng)
        )  # fmt: skip
    return tuple(out)


def cell_optimum(
    trials: pd.DataFrame,
    objective: str,
    direction: str,
    *,
    n_bootstrap: int = 200,
    level: float = 0.9,
    rng: np.random.Generator | None = None,
) -> CellOptimum:
    """decay* for one cell's trials (rows with a missing objective value are ignored)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    trials = trials[np.isfinite(pd.to_numeric(trials[objective], errors="coerce").to_numpy(dtype=float))]
    if trials.empty:
        raise FitError(f"{objective}: the cell has no trial with a finite value")
    arrays = {col: _column(trials, col) for col in ("n_params", "n_tokens", "decay", "lr", "batch_tokens")}
    arrays["value"] = pd.to_numeric(trials[objective]).to_numpy(dtype=float)
    n_params = float(np.median(arrays["n_params"]))
    n_tokens = float(np.median(arrays["n_tokens"]))
    label = str(trials["cell"].iloc[0]) if "cell" in trials.columns else cell_label(n_params, n_tokens / n_params)
    return _cell(label, n_params, n_tokens, arrays, objective, direction, n_bootstrap, level, rng)


def _column(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)


def _cell(label, n_params, n_tokens, arrays, objective, direction, n_bootstrap, level, rng) -> CellOptimum:
    decay = arrays["decay"]
    sign = 1.0 if direction == "min" else -1.0
    value = sign * arrays["value"]
    grid, inverse = np.unique(decay, return_inverse=True)
    point = _locate(grid, inverse, value)
    low = high = log_sd = math.nan
    if point.bracketed and n_bootstrap > 0:
        boots = _bootstrap(grid, inverse, value, n_bootstrap, rng)
        if boots.size >= 2:
            q = (1.0 - level) / 2.0
            low, high = (float(math.exp(v)) for v in np.quantile(boots, [q, 1.0 - q]))
            log_sd = max(float(np.std(boots, ddof=1)), MIN_LOG_SD)
    decay_opt = math.exp(point.log_opt) if point.bracketed else point.best_decay
    at_best = decay == point.best_decay
    lr = _setting(arrays["lr"], at_best)
    batch_tokens = _setting(arrays["batch_tokens"], at_best)
    tau_opt = batch_tokens / (lr * decay_opt * n_tokens) if decay_opt > 0 else math.inf
    return CellOptimum(
        cell=label,
        n_params=n_params,
        n_tokens=n_tokens,
        tpp=n_tokens / n_params,
        objective=objective,
        direction=direction,
        decay_opt=float(decay_opt),
        low=low,
        high=high,
        log_sd=log_sd,
        bracketed=point.bracketed,
        n_trials=int(decay.size),
        best_observed_decay=float(point.best_decay),
        value_at_opt=float(sign * point.value),
        curvature=float(sign * point.curvature),
        lr=lr,
        batch_tokens=batch_tokens,
        tau_opt=float(tau_opt),
        decays_searched=tuple(float(v) for v in grid),
        level=level,
        reason=point.reason,
    )


def _setting(values: np.ndarray, at_best: np.ndarray) -> float:
    """A per-cell setting (lr, batch_tokens): the median over the trials at the best decay."""
    chosen = values[at_best] if np.isfinite(values[at_best]).any() else values
    chosen = chosen[np.isfinite(chosen)]
    return float(np.median(chosen)) if chosen.size else math.nan


def locate(decay: np.ndarray, value: np.ndarray) -> _Located:
    """Locate the minimum of `value` over `decay` (maximisation: pass the negated values)."""
    grid, inverse = np.unique(decay, return_inverse=True)
    return _locate(grid, inverse, value)


def _locate(grid: np.ndarray, inverse: np.ndarray, value: np.ndarray) -> _Located:
    """`locate` on trials already indexed into a sorted grid (decays absent from this sample of
    trials are skipped), so bootstrap resamples need no re-sorting."""
    counts = np.bincount(inverse, minlength=grid.size)
    present = counts > 0
    grid = grid[present]
    counts = counts[present]
    means = np.bincount(inverse, weights=value, minlength=present.size)[present] / counts
    k = int(np.argmin(means))
    best = float(grid[k])
    positive = np.flatnonzero(grid > 0)

    def edge(reason: str) -> _Located:
        log_best = math.log(best) if best > 0 else (math.log(grid[positive[0]]) if positive.size else -math.inf)
        return _Located(log_best, best, float(means[k]), math.nan, False, reason)

    if best == 0:
        return edge("best observed decay is 0 (no weight decay): the optimum is at or below the smallest searched decay")
    if k == positive[0]:
        low_edge = "smallest positive" if grid[0] == 0 else "smallest"
        return edge(f"best observed decay {best:.3g} is the {low_edge} searched value")
    if k == grid.size - 1:
        return edge(f"best observed decay {best:.3g} is the largest searched value")

    lo = max(k - HALF_WINDOW, int(positive[0]))
    hi = min(k + HALF_WINDOW, grid.size - 1)
    # Least squares on the trials = least squares on per-decay means weighted by trial counts.
    x = np.log(grid[lo : hi + 1])
    c0, c1, c2 = _quadratic(x, counts[lo : hi + 1].astype(float), means[lo : hi + 1])
    if not c2 > 0:
        return edge(f"quadratic in ln decay opens the wrong way around best observed decay {best:.3g}")
    vertex = -c1 / (2.0 * c2)
    if not x[0] <= vertex <= x[-1]:
        return edge(
            f"quadratic vertex {math.exp(vertex):.3g} falls outside the fitted decays "
            f"{grid[lo]:.3g}..{grid[hi]:.3g}"
        )
    value_at = c0 + c1 * vertex + c2 * vertex * vertex
    return _Located(float(vertex), best, float(value_at), float(c2), True, None)


def _quadratic(x: np.ndarray, w: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Weighted least-squares y = c0 + c1 x + c2 x^2 (normal equations, centred for stability)."""
    xm = float(np.dot(w, x) / w.sum())
    u = x - xm
    u2 = u * u
    s0, s1, s2, s3, s4 = w.sum(), np.dot(w, u), np.dot(w, u2), np.dot(w, u2 * u), np.dot(w, u2 * u2)
    t0, t1, t2 = np.dot(w, y), np.dot(w, y * u), np.dot(w, y * u2)
    det = s0 * (s2 * s4 - s3 * s3) - s1 * (s1 * s4 - s3 * s2) + s2 * (s1 * s3 - s2 * s2)
    if det == 0.0:
        return math.nan, math.nan, math.nan
    b0 = (t0 * (s2 * s4 - s3 * s3) - s1 * (t1 * s4 - s3 * t2) + s2 * (t1 * s3 - s2 * t2)) / det
    b1 = (s0 * (t1 * s4 - s3 * t2) - t0 * (s1 * s4 - s3 * s2) + s2 * (s1 * t2 - t1 * s2)) / det
    b2 = (s0 * (s2 * t2 - t1 * s3) - s1 * (s1 * t2 - t1 * s2) + t0 * (s1 * s3 - s2 * s2)) / det
    # back from u = x - xm to x
    return float(b0 - b1 * xm + b2 * xm * xm), float(b1 - 2.0 * b2 * xm), float(b2)


def _bootstrap(
    grid: np.ndarray, inverse: np.ndarray, value: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """ln decay* located on resampled trials (within-decay when every decay has >= 2 trials)."""
    counts = np.bincount(inverse, minlength=grid.size)
    n = inverse.size
    if np.all(counts >= 2):
        # Resampling n_j values understates the variance of their mean by (n_j - 1) / n_j, a lot
        # for 2-3 seeds: spread each decay's values about their mean by sqrt(n_j / (n_j - 1))
        # first (the rescaled bootstrap), so the interval is not too narrow.
        means = np.bincount(inverse, weights=value) / counts
        value = means[inverse] + (value - means[inverse]) * np.sqrt(counts / (counts - 1.0))[inverse]
        order = np.argsort(inverse, kind="stable")  # trials grouped by decay
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        group = inverse[order]
        samples = order[starts[group] + np.floor(rng.random((n_boot, n)) * counts[group]).astype(int)]
    else:
        samples = rng.integers(0, n, (n_boot, n))
    flat = (inverse[samples] + grid.size * np.arange(n_boot)[:, None]).ravel()
    size = n_boot * grid.size
    boot_counts = np.bincount(flat, minlength=size).reshape(n_boot, grid.size)
    boot_sums = np.bincount(flat, weights=value[samples].ravel(), minlength=size).reshape(n_boot, grid.size)
    out = locate_many(grid, boot_counts, boot_sums)
    return out[np.isfinite(out)]


def locate_many(grid: np.ndarray, counts: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """ln decay* for many samples at once, by the rules of `_locate` (which also gives reasons).

    counts, sums: (R, G) trial counts and value sums per searched decay (a decay with count 0 is
    absent from that sample). Unbracketed samples give ln of their best observed decay (decay 0:
    the smallest positive decay present); samples with no positive decay give NaN.
    """
    present = counts > 0
    positive = present & (grid > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        means = np.where(present, sums / np.maximum(counts, 1), np.inf)
        log_grid = np.where(grid > 0, np.log(np.where(grid > 0, grid, 1.0)), 0.0)
    rows = np.arange(counts.shape[0])
    k = np.argmin(means, axis=1)
    first_pos = np.argmax(positive, axis=1)
    last = grid.size - 1 - np.argmax(present[:, ::-1], axis=1)
    has_pos = positive.any(axis=1)
    edge = (grid[k] <= 0) | (k == first_pos) | (k == last)

    rank = np.cumsum(present, axis=1)  # rank among present decays
    window = positive & (np.abs(rank - rank[rows, k][:, None]) <= HALF_WINDOW)
    w = np.where(window, counts, 0).astype(float)
    sw = np.maximum(w.sum(axis=1), 1e-300)
    xm = (w * log_grid).sum(axis=1) / sw
    u = np.where(window, log_grid - xm[:, None], 0.0)
    y = np.where(window, means, 0.0)
    u2 = u * u
    s0, s1, s2 = w.sum(axis=1), (w * u).sum(axis=1), (w * u2).sum(axis=1)
    s3, s4 = (w * u2 * u).sum(axis=1), (w * u2 * u2).sum(axis=1)
    t0, t1, t2 = (w * y).sum(axis=1), (w * y * u).sum(axis=1), (w * y * u2).sum(axis=1)
    det = s0 * (s2 * s4 - s3 * s3) - s1 * (s1 * s4 - s3 * s2) + s2 * (s1 * s3 - s2 * s2)
    with np.errstate(divide="ignore", invalid="ignore"):
        b1 = (s0 * (t1 * s4 - s3 * t2) - t0 * (s1 * s4 - s3 * s2) + s2 * (s1 * t2 - t1 * s2)) / det
        b2 = (s0 * (s2 * t2 - t1 * s3) - s1 * (s1 * t2 - t1 * s2) + t0 * (s1 * s3 - s2 * s2)) / det
        vertex = xm - b1 / (2.0 * b2)
    x_lo = np.where(window, log_grid, np.inf).min(axis=1)
    x_hi = np.where(window, log_grid, -np.inf).max(axis=1)
    bracketed = ~edge & (b2 > 0) & (vertex >= x_lo) & (vertex <= x_hi)
    fallback = np.where(grid[k] > 0, log_grid[k], log_grid[first_pos])
    out = np.where(bracketed, vertex, fallback)
    return np.where(has_pos, out, np.nan)


def _num(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
