"""Many independent L-BFGS minimisations run in lock-step, vectorised over the starts.

Fitting the loss surface from the full 4,500-point initialisation grid means 4,500 small,
independent problems. Looping `scipy.optimize.minimize` over them spends nearly all its time in
Python overhead; here every start is a row of one array, the objective and its gradient are
evaluated for all active rows at once, and a row leaves the active set when it meets the same
stopping rules scipy's L-BFGS-B uses by default (projected-gradient and relative-decrease
tolerances). The search direction is the standard two-loop recursion (Nocedal & Wright,
*Numerical Optimization*, alg. 7.4) and the step a backtracking Armijo line search.

This is an unconstrained optimiser: the surface fit has no bounds, so L-BFGS-B reduces to L-BFGS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# fun(X, rows) -> (f, G): X is (k, p), rows the indices (into the batch) of those k rows, so an
# objective with per-start data (e.g. bootstrap weights) can pick its own.
BatchObjective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

# scipy's L-BFGS-B defaults: factr = 1e7 (ftol = factr * machine eps) and pgtol = 1e-5.
FTOL = 1e7 * np.finfo(float).eps
GTOL = 1e-5


@dataclass(frozen=True)
class BatchResult:
    x: np.ndarray  # (S, p) final points
    fun: np.ndarray  # (S,) final objective values
    converged: np.ndarray  # (S,) bool: stopped by a tolerance, not by the iteration cap
    n_iter: np.ndarray  # (S,) iterations used
    n_evals: int  # row-evaluations of the objective, summed over rows


def minimize_batch(
    fun: BatchObjective,
    x0: np.ndarray,
    *,
    memory: int = 10,
    max_iter: int = 1000,
    ftol: float = FTOL,
    gtol: float = GTOL,
    max_backtracks: int = 30,
) -> BatchResult:
    """Minimise S independent problems from the S rows of `x0`."""
    x = np.array(x0, dtype=float, copy=True)
    n_starts, dim = x.shape
    rows_all = np.arange(n_starts)
    f, g = fun(x, rows_all)
    f = np.where(np.isfinite(f), f, np.inf)
    n_evals = n_starts

    # History slots are shared by all rows (slot = iteration % memory), so the two-loop recursion
    # works on plain slices; a row that skips an update (curvature condition) leaves its slot
    # empty (rho = 0), and an empty slot drops out of the recursion by itself.
    s_hist = np.zeros((n_starts, memory, dim))
    y_hist = np.zeros((n_starts, memory, dim))
    rho = np.zeros((n_starts, memory))
    n_iter = np.zeros(n_starts, dtype=int)
    active = np.isfinite(f) & np.all(np.isfinite(g), axis=1)
    converged = active & (np.max(np.abs(g), axis=1) <= gtol)
    active &= ~converged

    for it in range(max_iter):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        xa, fa, ga = x[rows], f[rows], g[rows]
        order = [(it - 1 - j) % memory for j in range(memory)]  # newest first
        d = _two_loop(ga, s_hist[rows], y_hist[rows], rho[rows], order)
        slope = np.einsum("ij,ij->i", ga, d)
        bad = ~(slope < 0) | ~np.all(np.isfinite(d), axis=1)
        if np.any(bad):  # not a descent direction: forget the history, use steepest descent
            d[bad] = -ga[bad]
            slope[bad] = -np.einsum("ij,ij->i", ga[bad], ga[bad])
            rho[rows[bad]] = 0.0
        # Empty history: scipy's rule, a first trial step of unit length along -g.
        step = np.ones(rows.size)
        fresh = ~np.any(rho[rows] != 0.0, axis=1)
        step[fresh] = 1.0 / np.maximum(np.linalg.norm(d[fresh], axis=1), 1e-300)

        x_new, f_new, g_new, ok, evals = _backtrack(fun, rows, xa, fa, d, slope, step, max_backtracks)
        n_evals += evals
        n_iter[rows] += 1

        s_vec = x_new - xa
        y_vec = g_new - ga
        sy = np.einsum("ij,ij->i", s_vec, y_vec)
        keep = ok & (sy > 1e-10 * np.einsum("ij,ij->i", y_vec, y_vec))  # curvature condition
        slot = it % memory
        s_hist[rows, slot] = s_vec
        y_hist[rows, slot] = y_vec
        rho[rows, slot] = np.where(keep, 1.0 / np.where(keep, sy, 1.0), 0.0)

        upd = rows[ok]
        f_old = fa[ok]
        x[upd], f[upd], g[upd] = x_new[ok], f_new[ok], g_new[ok]
        rel = (f_old - f[upd]) / np.maximum(np.maximum(np.abs(f_old), np.abs(f[upd])), 1.0)
        done = (rel <= ftol) | (np.max(np.abs(g[upd]), axis=1) <= gtol)
        finished = np.concatenate([upd[done], rows[~ok]])  # ~ok: no decrease found, stalled
        converged[finished] = True
        active[finished] = False

    return BatchResult(x=x, fun=f, converged=converged, n_iter=n_iter, n_evals=n_evals)


def _two_loop(
    g: np.ndarray, s_hist: np.ndarray, y_hist: np.ndarray, rho: np.ndarray, order: list[int]
) -> np.ndarray:
    """-H g for every row from its stored pairs, visited newest first."""
    q = g.copy()
    alphas = []
    for j in order:
        a = rho[:, j] * np.einsum("ij,ij->i", s_hist[:, j], q)
        q -= a[:, None] * y_hist[:, j]
        alphas.append(a)
    # Initial Hessian scaling gamma = s.y / y.y from each row's newest stored pair.
    gamma = np.ones(g.shape[0])
    unset = np.ones(g.shape[0], dtype=bool)
    for j in order:
        has = unset & (rho[:, j] != 0.0)
        if np.any(has):
            yy = np.einsum("ij,ij->i", y_hist[has, j], y_hist[has, j])
            with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                scale = 1.0 / (rho[has, j] * yy)
            gamma[has] = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
            unset &= ~has
        if not np.any(unset):
            break
    r = gamma[:, None] * q
    for j, a in zip(reversed(order), reversed(alphas)):
        b = rho[:, j] * np.einsum("ij,ij->i", y_hist[:, j], r)
        r += (a - b)[:, None] * s_hist[:, j]
    return -r


def _backtrack(
    fun: BatchObjective,
    rows: np.ndarray,
    x: np.ndarray,
    f: np.ndarray,
    d: np.ndarray,
    slope: np.ndarray,
    step: np.ndarray,
    max_backtracks: int,
    c1: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Armijo backtracking for every row; only rows still searching are re-evaluated."""
    x_new = x.copy()
    f_new = f.copy()
    g_new = np.zeros_like(x)
    ok = np.zeros(rows.size, dtype=bool)
    todo = np.arange(rows.size)
    evals = 0
    for _ in range(max_backtracks):
        trial = x[todo] + step[todo, None] * d[todo]
        ft, gt = fun(trial, rows[todo])
        evals += todo.size
        good = np.isfinite(ft) & np.all(np.isfinite(gt), axis=1)
        good &= ft <= f[todo] + c1 * step[todo] * slope[todo]
        hit = todo[good]
        x_new[hit], f_new[hit], g_new[hit] = trial[good], ft[good], gt[good]
        ok[hit] = True
        todo = todo[~good]
        if todo.size == 0:
            break
        step[todo] *= 0.5
    return x_new, f_new, g_new, ok, evals
