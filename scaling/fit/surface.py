"""The loss surface L(N, D) = E + A N^-alpha + B D^-beta (Chinchilla approach 3).

Fitted the way Epoch AI's replication did (Besiroglu et al. 2024, arXiv 2404.10102, following
Hoffmann et al. 2022 appendix D.2): in log space with the log-sum-exp form, Huber loss
(delta = 1e-3) on log residuals summed over points, L-BFGS from every start of the grid
alpha, beta in {0, .5, ..., 2}, e in {-1, -.5, ..., 1}, a, b in {0, 5, ..., 25} (4,500 starts),
keeping the best. All starts run together (scaling.fit.lbfgs) with the analytic gradient; the
few best end points are then polished by scipy's L-BFGS-B.

Stopping rule: scipy's defaults except the relative-decrease tolerance, 1e-12 instead of 2.2e-9,
and at most 600 iterations per start.
scipy measures the decrease relative to max(|f|, 1), and the summed Huber objective is small
(about 1e-3 on Chinchilla's points, 1e-5 on a well-fitting study): under the default rule a start
stops while still improving, the loss-scale trap Besiroglu et al. found in Hoffmann et al.'s fit.
On Chinchilla's points both rules give the same optimum (objective equal to 1e-11); on a
smaller-loss table the default rule can leave every one of 40 starts far above the optimum that
the tighter rule reaches (tests/test_fit_surface.py). The bootstrap needs it most: refits start
at the point fit, and a loose rule stops them early, near it, which shrinks the intervals (with
1e-10 the bootstrap sd of alpha on Chinchilla's points drops from 0.015 to 0.012). Starts that
hit the iteration cap (counted in `n_converged`) are ones creeping along a flat valley.

Confidence intervals come from a nonparametric bootstrap over points. Each bootstrap refit
starts from the point fit plus the two grid starts that reached the best distinct optima in the
point fit (not the full grid: a resample moves the optimum only a little), all refits in one
batch.

Compute-optimal allocation for C = 6 N D (Hoffmann et al. 2022, eq. 4):
    G = (alpha A / (beta B))^(1/(alpha+beta)),
    N*(C) = G (C/6)^(beta/(alpha+beta)),  D*(C) = G^-1 (C/6)^(alpha/(alpha+beta)).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from scaling.errors import FitError
from scaling.fit.huber_lse import DELTA, huber_lse
from scaling.fit.lbfgs import minimize_batch

PARAMS = ("E", "A", "B", "alpha", "beta")
MIN_POINTS = 6  # five parameters, plus at least one point of slack
FTOL = 1e-12  # relative-decrease tolerance (see the module docstring)
MAX_ITER = 600


def init_grid() -> np.ndarray:
    """The 4,500 starts (rows of a, b, e, alpha, beta) of Hoffmann et al. / Epoch AI."""
    exps = np.arange(0.0, 2.01, 0.5)
    es = np.arange(-1.0, 1.01, 0.5)
    abs_ = np.arange(0.0, 25.01, 5.0)
    return np.array([(a, b, e, al, be) for a, b, e, al, be in itertools.product(abs_, abs_, es, exps, exps)])


@dataclass(frozen=True)
class ComputeOptimal:
    """The compute-optimal (N, D) for a FLOP budget C = 6 N D, and the loss the surface expects."""

    compute: float
    n_params: float
    n_tokens: float
    tpp: float
    loss: float

    def to_dict(self) -> dict:
        return {k: _num(getattr(self, k)) for k in ("compute", "n_params", "n_tokens", "tpp", "loss")}


@dataclass(frozen=True)
class LossSurface:
    """A fitted L(N, D) = E + A N^-alpha + B D^-beta with bootstrap intervals."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float  # summed Huber loss at the optimum
    n_points: int
    n_starts: int
    n_converged: int  # starts that met the stopping rule (the rest hit the iteration cap)
    n_bootstrap: int
    ci_level: float
    intervals: tuple[tuple[str, float, float], ...]  # (name, low, high); empty without bootstrap
    # bootstrap standard errors, robust: half the central 68.3% range (= the sd for a normal
    # spread; with few points some refits run off to huge A or B and the plain sd means nothing)
    std_errors: tuple[tuple[str, float], ...]
    std_devs: tuple[tuple[str, float], ...]  # plain bootstrap sd, comparable with Epoch AI's table
    n_range: tuple[float, float]
    d_range: tuple[float, float]

    def params(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in PARAMS}

    def interval(self, name: str) -> tuple[float, float]:
        for key, low, high in self.intervals:
            if key == name:
                return low, high
        raise KeyError(f"no interval for {name!r} (fit had n_bootstrap={self.n_bootstrap})")

    def predict(self, n_params, n_tokens) -> np.ndarray:
        n = np.asarray(n_params, dtype=float)
        d = np.asarray(n_tokens, dtype=float)
        return self.E + self.A * n ** -self.alpha + self.B * d ** -self.beta

    def compute_optimal(self, compute: float) -> ComputeOptimal:
        """N*, D* minimising the surface at C = 6 N D (closed form, Hoffmann et al. eq. 4)."""
        if not (compute > 0 and math.isfinite(compute)):
            raise FitError(f"compute budget must be a positive FLOP count, got {compute!r}")
        if self.alpha <= 0 or self.beta <= 0:
            raise FitError(
                f"loss surface has alpha={self.alpha:.3g}, beta={self.beta:.3g}: with a non-positive "
                "exponent there is no compute-optimal allocation"
            )
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        n = g * (compute / 6.0) ** (self.beta / (self.alpha + self.beta))
        d = (compute / 6.0) / n
        return ComputeOptimal(compute=compute, n_params=n, n_tokens=d, tpp=d / n, loss=float(self.predict(n, d)))

    def to_dict(self) -> dict:
        ci = {name: [_num(lo), _num(hi)] for name, lo, hi in self.intervals}
        return {
            "formula": "L(N, D) = E + A * N^-alpha + B * D^-beta",
            "params": {k: _num(v) for k, v in self.params().items()},
            "ci": ci,
            "se": {name: _num(v) for name, v in self.std_errors},
            "sd": {name: _num(v) for name, v in self.std_devs},
            "ci_level": self.ci_level,
            "n_points": self.n_points,
            "n_starts": self.n_starts,
            "n_converged": self.n_converged,
            "n_bootstrap": self.n_bootstrap,
            "objective": _num(self.objective),
            "huber_delta": DELTA,
            "n_range": [_num(x) for x in self.n_range],
            "d_range": [_num(x) for x in self.d_range],
            # N* ~ C^a_exp, D* ~ C^b_exp: the exponents of the compute-optimal allocation
            "allocation_exponents": {
                "n_params": _num(self.beta / (self.alpha + self.beta)) if self.alpha + self.beta > 0 else None,
                "n_tokens": _num(self.alpha / (self.alpha + self.beta)) if self.alpha + self.beta > 0 else None,
            },
        }


def fit_loss_surface(
    n_params,
    n_tokens,
    loss,
    *,
    n_bootstrap: int = 0,
    ci_level: float = 0.95,
    seed: int = 0,
    bootstrap_starts: int = 2,
    grid: np.ndarray | None = None,
) -> LossSurface:
    """Fit the surface to points (N_i, D_i, L_i). FitError if the points cannot determine it."""
    n = np.asarray(n_params, dtype=float).ravel()
    d = np.asarray(n_tokens, dtype=float).ravel()
    y = np.asarray(loss, dtype=float).ravel()
    if not (n.size == d.size == y.size):
        raise FitError("loss surface: n_params, n_tokens and loss must have the same length")
    keep = np.isfinite(n) & np.isfinite(d) & np.isfinite(y)
    n, d, y = n[keep], d[keep], y[keep]
    if n.size < MIN_POINTS:
        raise FitError(f"loss surface: {n.size} points with a finite loss; need at least {MIN_POINTS} for 5 parameters")
    if np.any(n <= 0) or np.any(d <= 0) or np.any(y <= 0):
        raise FitError("loss surface: n_params, n_tokens and loss must all be > 0")
    if np.unique(n).size < 2 or np.unique(d).size < 2:
        raise FitError("loss surface: need at least 2 distinct n_params and 2 distinct n_tokens values")
    log_n, log_d, log_y = np.log(n), np.log(d), np.log(y)
    starts = init_grid() if grid is None else np.asarray(grid, dtype=float)

    def batch(theta: np.ndarray, rows: np.ndarray):
        return huber_lse(theta, log_n, log_d, log_y)

    run = minimize_batch(batch, starts, ftol=FTOL, max_iter=MAX_ITER)
    theta = _polish(run.x, run.fun, log_n, log_d, log_y)
    obj = float(huber_lse(theta, log_n, log_d, log_y)[0][0])

    intervals: tuple = ()
    std_errors: tuple = ()
    std_devs: tuple = ()
    if n_bootstrap > 0:
        boot = _bootstrap(theta, run, starts, log_n, log_d, log_y, n_bootstrap, seed, bootstrap_starts)
        q = (1.0 - ci_level) / 2.0
        lows = np.quantile(boot, q, axis=0)
        highs = np.quantile(boot, 1.0 - q, axis=0)
        lo68, hi68 = np.quantile(boot, [0.158655, 0.841345], axis=0)
        sds = (hi68 - lo68) / 2.0
        intervals = tuple((p, float(lo), float(hi)) for p, lo, hi in zip(PARAMS, lows, highs))
        std_errors = tuple((p, float(s)) for p, s in zip(PARAMS, sds))
        std_devs = tuple((p, float(s)) for p, s in zip(PARAMS, np.std(boot, axis=0, ddof=1)))

    E, A, B, alpha, beta = _natural(theta)
    return LossSurface(
        E=E, A=A, B=B, alpha=alpha, beta=beta,
        objective=obj,
        n_points=int(n.size),
        n_starts=int(starts.shape[0]),
        n_converged=int(run.converged.sum()),
        n_bootstrap=int(n_bootstrap),
        ci_level=ci_level,
        intervals=intervals,
        std_errors=std_errors,
        std_devs=std_devs,
        n_range=(float(n.min()), float(n.max())),
        d_range=(float(d.min()), float(d.max())),
    )  # fmt: skip


def _natural(theta: np.ndarray) -> tuple[float, float, float, float, float]:
    """(a, b, e, alpha, beta) -> (E, A, B, alpha, beta)."""
    a, b, e, alpha, beta = (float(v) for v in theta)
    return math.exp(e), math.exp(a), math.exp(b), alpha, beta


def _polish(x: np.ndarray, f: np.ndarray, log_n, log_d, log_y, k: int = 5) -> np.ndarray:
    """Re-run scipy's L-BFGS-B (analytic gradient) from the k best batch end points; keep the best."""
    best_x, best_f = None, math.inf
    for i in np.argsort(f)[:k]:
        if not np.isfinite(f[i]):
            continue
        res = minimize(
            lambda t: tuple(v[0] for v in huber_lse(t, log_n, log_d, log_y)),
            x[i], jac=True, method="L-BFGS-B", options={"ftol": FTOL},
        )  # fmt: skip
        cand_x, cand_f = (res.x, res.fun) if res.fun <= f[i] else (x[i], f[i])
        if cand_f < best_f:
            best_x, best_f = cand_x, cand_f
    if best_x is None:
        raise FitError("loss surface: no start reached a finite objective")
    return np.asarray(best_x, dtype=float)


def _distinct_best_starts(run, starts: np.ndarray, k: int) -> np.ndarray:
    """Grid starts that led to the k best distinct end points of the point fit."""
    chosen: list[int] = []
    for i in np.argsort(run.fun):
        if len(chosen) >= k or not np.isfinite(run.fun[i]):
            break
        if all(np.max(np.abs(run.x[i] - run.x[j])) > 1e-2 for j in chosen):
            chosen.append(int(i))
    return starts[chosen]


def _bootstrap(theta, run, starts, log_n, log_d, log_y, n_boot, seed, k) -> np.ndarray:
    """(n_boot, 5) natural-scale parameters refitted on point resamples, all in one batch."""
    rng = np.random.default_rng(seed)
    n = log_n.size
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    per = np.vstack([theta[None, :], _distinct_best_starts(run, starts, k)])
    x0 = np.tile(per, (n_boot, 1))
    weights = np.repeat(counts, per.shape[0], axis=0)

    def batch(th: np.ndarray, rows: np.ndarray):
        return huber_lse(th, log_n, log_d, log_y, weights=weights[rows])

    res = minimize_batch(batch, x0, ftol=FTOL, max_iter=MAX_ITER)
    fun = np.where(np.isfinite(res.fun), res.fun, np.inf).reshape(n_boot, per.shape[0])
    best = res.x.reshape(n_boot, per.shape[0], 5)[np.arange(n_boot), np.argmin(fun, axis=1)]
    return np.array([_natural(t) for t in best])


def _num(x) -> float | None:
    """JSON-safe float: NaN and infinities become None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
