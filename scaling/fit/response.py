"""The per-cell response model: an objective as a smooth function of weight decay in one cell.

    f(decay) = c0 + c1 z + c2 z^2 + seed_j,     z = (decay / decay_ref)^r,  r > 0

(to minimise; a maximised objective is negated first). Within a cell tau = B / (lr decay D), so
z = (tau_ref / tau)^r: decay 0 is z = 0, the tau = inf end, where the curve is flat (a plateau
in ln tau, since z falls off exponentially in ln tau); large decay is the wall, rising like
decay^(2r). c2 > 0 and c1 < 0 give an interior minimum at z* = -c1 / (2 c2); c1 >= 0 makes the
curve rise from decay 0 (optimum at or below the smallest positive decay searched). As r -> 0,
z ~ 1 + r ln(decay / decay_ref), so the family contains the parabola in ln decay as a limit. The
exponent r is profiled over R_GRID (least squares is linear for fixed r); seeds enter as fixed
block effects shared across the cell's decays, so a seed's offset never moves the optimum.
docs/fitting.md gives the measurements this family was chosen by.

All functions here are vectorised over many response vectors at once (the bootstrap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

R_GRID = np.geomspace(0.05, 2.0, 30)  # candidate exponents r of z = (decay / decay_ref)^r (wall up to decay^4)
CURVE_POINTS = 481  # decays (plus decay 0) on which the tolerance estimand is located


@dataclass(frozen=True)
class CellDesign:
    """The trials of one cell, as the response model sees them."""

    decay: np.ndarray  # per trial
    block: np.ndarray  # per trial: seed index 0..n_blocks-1
    n_blocks: int
    decay_ref: float  # geometric mean of the positive decays searched
    grid: np.ndarray  # sorted distinct decays searched (0 allowed)

    @property
    def n_params(self) -> int:
        return 3 + (self.n_blocks - 1) + 1  # quadratic, seed offsets, r

    @property
    def df_resid(self) -> int:
        return self.decay.size - self.n_params

    @property
    def d_min(self) -> float:
        return float(self.grid[self.grid > 0].min())

    @property
    def d_max(self) -> float:
        return float(self.grid.max())


def design(decay: np.ndarray, block: np.ndarray) -> CellDesign:
    decay = np.asarray(decay, dtype=float)
    _, block = np.unique(np.asarray(block), return_inverse=True)
    grid = np.unique(decay)
    positive = grid[grid > 0]
    ref = float(np.exp(np.mean(np.log(positive)))) if positive.size else 1.0
    return CellDesign(decay, block, int(block.max()) + 1 if block.size else 0, ref, grid)


def _matrix(d: CellDesign, r: float) -> np.ndarray:
    z = np.where(d.decay > 0, (np.where(d.decay > 0, d.decay, 1.0) / d.decay_ref) ** r, 0.0)
    cols = [np.ones_like(z), z, z * z]
    cols += [(d.block == j).astype(float) for j in range(1, d.n_blocks)]
    return np.column_stack(cols)


@dataclass(frozen=True)
class Fits:
    """Least-squares fits of many response vectors (rows) on one cell design."""

    r: np.ndarray  # (B,)
    coef: np.ndarray  # (B, 3): c0, c1, c2 of the quadratic in z (c0: an average seed's level)
    rss: np.ndarray  # (B,)
    fitted: np.ndarray  # (B, n)


def fit_many(d: CellDesign, y: np.ndarray) -> Fits:
    """Profile least squares over R_GRID for each row of y (B, n) (to be minimised)."""
    y = np.atleast_2d(y)
    best_rss = np.full(y.shape[0], np.inf)
    best_r = np.full(y.shape[0], np.nan)
    best_coef = np.full((y.shape[0], 3), np.nan)
    best_fit = np.full(y.shape, np.nan)
    share = np.bincount(d.block, minlength=d.n_blocks)[1:] / d.block.size
    for r in R_GRID:
        x = _matrix(d, float(r))
        beta, fitted = _least_squares(x, y)
        # shape constraint: convex in z (one minimum, a wall that does not turn back down);
        # where the free fit bends the other way, the best convex fit has c2 = 0
        concave = beta[:, 2] < 0
        if concave.any():
            lin_beta, lin_fitted = _least_squares(np.delete(x, 2, axis=1), y[concave])
            beta[concave] = np.insert(lin_beta, 2, 0.0, axis=1)
            fitted[concave] = lin_fitted
        rss = np.sum((y - fitted) ** 2, axis=1)
        better = rss < best_rss - 1e-15
        best_rss = np.where(better, rss, best_rss)
        best_r = np.where(better, r, best_r)
        coef = beta[:, :3].copy()
        if d.n_blocks > 1:  # c0 of an average seed: seed 0's level plus the mean seed offset
            coef[:, 0] += beta[:, 3:] @ share
        best_coef[better] = coef[better]
        best_fit[better] = fitted[better]
    return Fits(best_r, best_coef, best_rss, best_fit)


def _least_squares(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    beta = y @ np.linalg.pinv(x).T
    return beta, beta @ x.T


def evaluate(d: CellDesign, fits: Fits, decays: np.ndarray) -> np.ndarray:
    """f at `decays` for every fit: (B, len(decays)), seed offsets left out."""
    decays = np.asarray(decays, dtype=float)
    pos = decays > 0
    z = np.zeros((fits.r.size, decays.size))
    z[:, pos] = (decays[pos][None, :] / d.decay_ref) ** fits.r[:, None]
    c = fits.coef
    return c[:, :1] + c[:, 1:2] * z + c[:, 2:3] * z * z


def log_optimum(d: CellDesign, fits: Fits) -> np.ndarray:
    """ln decay* of the fitted curve over decay in [0, inf): -inf when the curve is lowest at
    decay 0, +inf when it keeps falling past the largest decay searched."""
    c0, c1, c2 = fits.coef.T
    r = fits.r
    out = np.full(r.size, -np.inf)
    convex = c2 > 0
    interior = convex & (c1 < 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        zs = -c1 / (2.0 * c2)
        out = np.where(interior, math.log(d.decay_ref) + np.log(np.where(interior, zs, 1.0)) / r, out)
    # concave or linear: lowest at one end; compare decay 0 with the largest decay searched
    z_max = (d.d_max / d.decay_ref) ** r
    at_max = c1 * z_max + c2 * z_max * z_max
    falling = ~convex & (at_max < 0)
    out = np.where(falling, np.inf, out)
    return np.where(np.isfinite(c0), out, np.nan)


def log_tolerance(d: CellDesign, fits: Fits, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """(ln decay_tol, f_best): decay_tol is the largest searched-range decay whose fitted value is
    within `delta` of the curve's best over the searched range [0, d_max]. -inf when only decay 0
    qualifies (the curve rises within delta before the smallest positive decay)."""
    curve_decays = np.concatenate([[0.0], np.geomspace(d.d_min, d.d_max, CURVE_POINTS)])
    values = evaluate(d, fits, curve_decays)
    best = values.min(axis=1)
    ok = values <= best[:, None] + delta
    last = curve_decays.size - 1 - np.argmax(ok[:, ::-1], axis=1)
    # the set {f <= best + delta} is an interval for a convex curve; for a concave one take its
    # largest member too
    with np.errstate(divide="ignore"):
        out = np.log(curve_decays[last])
    below_first = (last == 0) & ~ok[:, 1]
    out = np.where(below_first, -np.inf, np.where(last == 0, math.log(d.d_min), out))
    return out, best


def second_derivative(d: CellDesign, fits: Fits, log_decay: np.ndarray) -> np.ndarray:
    """d^2 f / d(ln decay)^2 at ln decay (NaN where not finite)."""
    r = fits.r
    _, c1, c2 = fits.coef.T
    with np.errstate(over="ignore", invalid="ignore"):
        z = np.exp(r * (log_decay - math.log(d.decay_ref)))
        out = c1 * r * r * z + 4.0 * c2 * r * r * z * z
    return np.where(np.isfinite(log_decay), out, np.nan)
