"""Many independent L-BFGS minimisations run in lock-step, vectorised over the starts.

Fitting the loss surface from the full 4,500-point initialisation grid means 4,500 small,
independent problems. Looping `scipy.optimize.minimize` over them spends nearly all its time in
Python overhead; here every start is a row of one array, the objective and its gradient are
evaluated for all active rows at once, and a row leaves the active set when it meets the same
stopping rules scipy's L-BFGS-B uses by default (projected-gradient and relative-decrease
tolerances). The search direction is the standard two-loop recursion (Nocedal & Wright,
*Numerical Optimization*, alg. 7.4) and the step a backtracking Armijo line search with
safeguarded quadratic interpolation (ibid., section 3.5).

This is an unconstrained optimiser: the surface fit has no bounds, so L-BFGS-B reduces to L-BFGS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
    f, g = fun(x, np.arange(n_starts))
    f = np.where(np.isfinite(f), f, np.inf)
    n_evals = n_starts
    n_iter = np.zeros(n_starts, dtype=int)
    converged = np.isfinite(f) & np.all(np.isfinite(g), axis=1) & (np.max(np.abs(g), axis=1) <= gtol)

    # The working set: rows still running, with their own history arrays. It is compacted when a
    # quarter of it has finished, so each iteration touches contiguous arrays instead of
    # gathering every row's history (which dominates the time on small tables).
    # History slots are shared by all rows (slot = iteration % memory), so the two-loop recursion
    # works on plain slices; a row that skips an update (curvature condition) leaves its slot
    # empty (rho = 0), and an empty slot drops out of the recursion by itself.
    ws = np.flatnonzero(np.isfinite(f) & np.all(np.isfinite(g), axis=1) & ~converged)
    xw, fw, gw = x[ws], f[ws], g[ws]
    s_hist = np.zeros((memory, ws.size, dim))  # slot-major: s_hist[j] is contiguous
    y_hist = np.zeros((memory, ws.size, dim))
    rho = np.zeros((memory, ws.size))
    live = np.ones(ws.size, dtype=bool)

    for it in range(max_iter):
        if not live.any():
            break
        if live.sum() < 0.75 * live.size:
            x[ws], f[ws], g[ws] = xw, fw, gw
            ws, xw, fw, gw = ws[live], xw[live], fw[live], gw[live]
            s_hist, y_hist, rho = s_hist[:, live], y_hist[:, live], rho[:, live]
            live = live[live]
        rows = np.flatnonzero(live)
        everyone = rows.size == live.size
        order = [(it - 1 - j) % memory for j in range(memory)]  # newest first
        with np.errstate(invalid="ignore", over="ignore"):  # a non-finite d falls back to -g below
            d = _two_loop(gw, s_hist, y_hist, rho, order)
        if not everyone:
            d = d[rows]
        xa, fa, ga = (xw, fw, gw) if everyone else (xw[rows], fw[rows], gw[rows])
        slope = np.einsum("ij,ij->i", ga, d)
        bad = ~(slope < 0) | ~np.all(np.isfinite(d), axis=1)
        if np.any(bad):  # not a descent direction: forget the history, use steepest descent
            d[bad] = -ga[bad]
            slope[bad] = -np.einsum("ij,ij->i", ga[bad], ga[bad])
            rho[:, rows[bad]] = 0.0
        # Empty history: scipy's rule, a first trial step of unit length along -g.
        step = np.ones(rows.size)
        fresh = ~np.any(rho[:, rows] != 0.0, axis=0)
        step[fresh] = 1.0 / np.maximum(np.linalg.norm(d[fresh], axis=1), 1e-300)

        x_new, f_new, g_new, ok, evals = _backtrack(fun, ws[rows], xa, fa, d, slope, step, max_backtracks)
        n_evals += evals
        n_iter[ws[rows]] += 1

        s_vec = x_new - xa
        y_vec = g_new - ga
        sy = np.einsum("ij,ij->i", s_vec, y_vec)
        keep = ok & (sy > 1e-10 * np.einsum("ij,ij->i", y_vec, y_vec))  # curvature condition
        slot = it % memory
        s_hist[slot, rows] = s_vec
        y_hist[slot, rows] = y_vec
        with np.errstate(over="ignore"):  # a tiny s.y on a flat valley: the pair is still kept, rho huge
            rho[slot, rows] = np.where(keep, 1.0 / np.where(keep, sy, 1.0), 0.0)

        upd = rows[ok]
        f_old = fa[ok]
        xw[upd], fw[upd], gw[upd] = x_new[ok], f_new[ok], g_new[ok]
        rel = (f_old - fw[upd]) / np.maximum(np.maximum(np.abs(f_old), np.abs(fw[upd])), 1.0)
        done = (rel <= ftol) | (np.max(np.abs(gw[upd]), axis=1) <= gtol)
        finished = np.concatenate([upd[done], rows[~ok]])  # ~ok: no decrease found, stalled
        converged[ws[finished]] = True
        live[finished] = False

    x[ws], f[ws], g[ws] = xw, fw, gw
    return BatchResult(x=x, fun=f, converged=converged, n_iter=n_iter, n_evals=n_evals)


def _two_loop(
    g: np.ndarray, s_hist: np.ndarray, y_hist: np.ndarray, rho: np.ndarray, order: list[int]
) -> np.ndarray:
    """-H g for every row from its stored pairs (slot-major arrays), visited newest first."""
    q = g.copy()
    alphas = []
    for j in order:
        a = rho[j] * np.einsum("ij,ij->i", s_hist[j], q)
        q -= a[:, None] * y_hist[j]
        alphas.append(a)
    # Initial Hessian scaling gamma = s.y / y.y from each row's newest stored pair.
    stored = rho[order] != 0.0  # (memory, rows), newest first
    newest = np.asarray(order)[np.argmax(stored, axis=0)]
    idx = np.arange(g.shape[0])
    y_new = y_hist[newest, idx]
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        gamma = 1.0 / (rho[newest, idx] * np.einsum("ij,ij->i", y_new, y_new))
    gamma = np.where(stored.any(axis=0) & np.isfinite(gamma) & (gamma > 0), gamma, 1.0)
    r = gamma[:, None] * q
    for j, a in zip(reversed(order), reversed(alphas)):
        b = rho[j] * np.einsum("ij,ij->i", y_hist[j], r)
        r += (a - b)[:, None] * s_hist[j]
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
        # Next trial: the minimum of the quadratic through f(0), f'(0) and f(t), kept within
        # [0.1 t, 0.5 t] (plain halving where f(t) is not finite).
        t, f_t, f_0, sl = step[todo[~good]], ft[~good], f[todo[~good]], slope[todo[~good]]
        todo = todo[~good]
        if todo.size == 0:
            break
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            t_quad = -sl * t * t / (2.0 * (f_t - f_0 - sl * t))
        step[todo] = np.where(np.isfinite(t_quad), np.clip(t_quad, 0.1 * t, 0.5 * t), 0.5 * t)
    return x_new, f_new, g_new, ok, evals
