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

Constraints (`Constraints`): alpha = beta tied, and any of E, A, B, alpha, beta fixed. The
optimiser then works on the free parameters only (theta = z M + c, gradient g M^T); the start
grid is the full grid's distinct projections onto them, and every bootstrap refit keeps the
same constraints.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from scaling.errors import FitError
from scaling.fit.text import json_number
from scaling.fit.huber_lse import DELTA, huber_lse
from scaling.fit.lbfgs import minimize_batch

PARAMS = ("E", "A", "B", "alpha", "beta")
MIN_POINTS = 6  # five parameters, plus at least one point of slack (fewer with constraints)
FTOL = 1e-12  # relative-decrease tolerance (see the module docstring)
MAX_ITER = 600
# Default bootstrap refits for the surface: with this many, two seeds give 95% intervals for E,
# alpha and beta that agree to 2 significant digits on Epoch AI's Chinchilla points; A's and B's
# upper tails are too heavy for that at any affordable count (measured: docs/surface.md).
DEFAULT_BOOTSTRAP = 2000
STABILITY_CHECKED = ("E", "alpha", "beta")
EXPONENT_RANGE = (0.0, 2.0)  # the start grid's exponents; a fit ending at or past an edge is flagged
_THETA_INDEX = {"A": 0, "B": 1, "E": 2, "alpha": 3, "beta": 4}  # natural name -> index in (a, b, e, alpha, beta)
_LOG_SCALE = {"A", "B", "E"}


def init_grid() -> np.ndarray:
    """The 4,500 starts (rows of a, b, e, alpha, beta) of Hoffmann et al. / Epoch AI."""
    exps = np.arange(0.0, 2.01, 0.5)
    es = np.arange(-1.0, 1.01, 0.5)
    abs_ = np.arange(0.0, 25.01, 5.0)
    return np.array([(a, b, e, al, be) for a, b, e, al, be in itertools.product(abs_, abs_, es, exps, exps)])


@dataclass(frozen=True)
class Constraints:
    """Which surface parameters are tied (alpha = beta) or fixed to a value."""

    tie_exponents: bool = False
    fixed: tuple[tuple[str, float], ...] = ()  # (name, value), names from PARAMS

    @classmethod
    def make(cls, tie: bool | str | None = None, fix: Mapping[str, float] | None = None) -> Constraints:
        """tie: True or "alpha=beta"; fix: {name: value}. FitError on anything else."""
        if isinstance(tie, str):
            left, _, right = (x.strip() for x in tie.partition("="))
            if {left, right} != {"alpha", "beta"}:
                raise FitError(f"tie: only alpha=beta can be tied, got {tie!r}")
            tie = True
        fixed: dict[str, float] = {}
        for name, value in (fix or {}).items():
            if name not in PARAMS:
                raise FitError(f"fix: unknown parameter {name!r} (expected one of {', '.join(PARAMS)})")
            value = float(value)
            if not (math.isfinite(value) and value > 0):
                raise FitError(f"fix: {name} must be a finite number > 0, got {_plain(value)}")
            fixed[name] = value
        if tie and "alpha" in fixed and "beta" in fixed and fixed["alpha"] != fixed["beta"]:
            raise FitError(
                f"tie alpha=beta contradicts fix alpha={_plain(fixed['alpha'])}, beta={_plain(fixed['beta'])}"
            )
        if tie and ("alpha" in fixed) != ("beta" in fixed):  # a tied pair is fixed together
            value = fixed.get("alpha", fixed.get("beta"))
            fixed["alpha"] = fixed["beta"] = value
        return cls(tie_exponents=bool(tie), fixed=tuple((k, fixed[k]) for k in PARAMS if k in fixed))

    def free(self) -> tuple[str, ...]:
        """Names of the parameters the optimiser moves (beta is alpha's twin when tied)."""
        fixed = dict(self.fixed)
        return tuple(p for p in PARAMS if p not in fixed and not (self.tie_exponents and p == "beta"))

    def is_empty(self) -> bool:
        return not self.tie_exponents and not self.fixed

    def linear_map(self) -> tuple[np.ndarray, np.ndarray]:
        """(M, c) with theta = z M + c: z the free parameters (in `free()` order) in theta scale."""
        free = self.free()
        m = np.zeros((len(free), 5))
        for j, name in enumerate(free):
            m[j, _THETA_INDEX[name]] = 1.0
            if self.tie_exponents and name == "alpha":
                m[j, _THETA_INDEX["beta"]] = 1.0
        c = np.zeros(5)
        for name, value in self.fixed:
            c[_THETA_INDEX[name]] = math.log(value) if name in _LOG_SCALE else value
        return m, c

    def starts(self, grid: np.ndarray) -> np.ndarray:
        """The distinct projections of a full (S, 5) grid onto the free parameters."""
        cols = [_THETA_INDEX[name] for name in self.free()]
        return np.unique(np.asarray(grid, dtype=float)[:, cols], axis=0)

    def describe(self) -> str:
        parts = (["alpha = beta"] if self.tie_exponents else []) + [f"{k} = {_plain(v)}" for k, v in self.fixed]
        return ", ".join(parts) if parts else "none"

    def to_dict(self) -> dict:
        return {"tie": ["alpha=beta"] if self.tie_exponents else [], "fix": {k: v for k, v in self.fixed}}

    @classmethod
    def from_dict(cls, d: Mapping | None) -> Constraints:
        d = d or {}
        return cls.make(tie=bool(d.get("tie")), fix=d.get("fix") or {})


@dataclass(frozen=True)
class ComputeOptimal:
    """The compute-optimal (N, D) for a FLOP budget C = 6 N D, and the loss the surface expects."""

    compute: float
    n_params: float
    n_tokens: float
    tpp: float
    loss: float

    def to_dict(self) -> dict:
        return {k: json_number(getattr(self, k)) for k in ("compute", "n_params", "n_tokens", "tpp", "loss")}


@dataclass(frozen=True)
class LossSurface:
    """A fitted L(N, D) = E + A N^-alpha + B D^-beta with bootstrap intervals and diagnostics."""

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
    constraints: Constraints = Constraints()
    seed: int = 0
    rms_log_residual: float = math.nan  # sqrt(mean (ln L - ln L_hat)^2) over the fitted points
    max_log_residual: float = math.nan  # max |ln L - ln L_hat|
    min_loss: float = math.nan  # lowest observed loss among the fitted points
    warnings: tuple[str, ...] = ()
    # (n_bootstrap, 5) refitted (E, A, B, alpha, beta), and the fitted points' log residuals:
    # what predictions with intervals need (scaling.fit.predict)
    draws: np.ndarray | None = field(default=None, compare=False, repr=False)
    log_residuals: np.ndarray | None = field(default=None, compare=False, repr=False)

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
            raise FitError(f"compute budget must be a positive FLOP count, got {_plain(compute)}")
        if self.alpha <= 0 or self.beta <= 0:
            raise FitError(
                f"loss surface has alpha={self.alpha:.3g}, beta={self.beta:.3g}: with a non-positive "
                "exponent there is no compute-optimal allocation"
            )
        n, d = allocation(np.array(self.params_vector())[None, :], compute)
        n, d = float(n[0]), float(d[0])
        return ComputeOptimal(compute=compute, n_params=n, n_tokens=d, tpp=d / n, loss=float(self.predict(n, d)))

    def params_vector(self) -> tuple[float, float, float, float, float]:
        return (self.E, self.A, self.B, self.alpha, self.beta)

    def to_dict(self) -> dict:
        ci = {name: [json_number(lo), json_number(hi)] for name, lo, hi in self.intervals}
        return {
            "formula": "L(N, D) = E + A * N^-alpha + B * D^-beta",
            "params": {k: json_number(v) for k, v in self.params().items()},
            "ci": ci,
            "se": {name: json_number(v) for name, v in self.std_errors},
            "sd": {name: json_number(v) for name, v in self.std_devs},
            "ci_level": self.ci_level,
            "n_points": self.n_points,
            "n_starts": self.n_starts,
            "n_converged": self.n_converged,
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
            "objective": json_number(self.objective),
            "huber_delta": DELTA,
            "n_range": [json_number(x) for x in self.n_range],
            "d_range": [json_number(x) for x in self.d_range],
            "constraints": self.constraints.to_dict(),
            # N* ~ C^a_exp, D* ~ C^b_exp: the exponents of the compute-optimal allocation
            "allocation_exponents": {
                "n_params": json_number(self.beta / (self.alpha + self.beta)) if self.alpha + self.beta > 0 else None,
                "n_tokens": json_number(self.alpha / (self.alpha + self.beta)) if self.alpha + self.beta > 0 else None,
            },
            "diagnostics": {
                "rms_log_residual": json_number(self.rms_log_residual),
                "max_log_residual": json_number(self.max_log_residual),
                "min_loss": json_number(self.min_loss),
                "warnings": list(self.warnings),
            },
            "log_residuals": [] if self.log_residuals is None else [json_number(r) for r in self.log_residuals],
            "draws": {
                "columns": list(PARAMS),
                "values": [] if self.draws is None else [[json_number(v) for v in row] for row in self.draws],
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> LossSurface:
        """Rebuild a surface from `to_dict()` output (fits.json); FitError if it is not one."""
        try:
            params = {k: float(d["params"][k]) for k in PARAMS}
            ci = d.get("ci") or {}
            draws_d = (d.get("draws") or {}).get("values") or []
            diag = d.get("diagnostics") or {}
            resid = d.get("log_residuals") or []
            return cls(
                **params,
                objective=_float(d.get("objective")),
                n_points=int(d["n_points"]),
                n_starts=int(d.get("n_starts", 0)),
                n_converged=int(d.get("n_converged", 0)),
                n_bootstrap=int(d.get("n_bootstrap", 0)),
                ci_level=float(d.get("ci_level", 0.95)),
                intervals=tuple((k, _float(ci[k][0]), _float(ci[k][1])) for k in PARAMS if k in ci),
                std_errors=tuple((k, _float(v)) for k, v in (d.get("se") or {}).items()),
                std_devs=tuple((k, _float(v)) for k, v in (d.get("sd") or {}).items()),
                n_range=tuple(float(x) for x in d["n_range"]),
                d_range=tuple(float(x) for x in d["d_range"]),
                constraints=Constraints.from_dict(d.get("constraints")),
                seed=int(d.get("seed", 0)),
                rms_log_residual=_float(diag.get("rms_log_residual")),
                max_log_residual=_float(diag.get("max_log_residual")),
                min_loss=_float(diag.get("min_loss")),
                warnings=tuple(diag.get("warnings") or ()),
                draws=np.array([[_float(v) for v in row] for row in draws_d]).reshape(-1, 5) if draws_d else None,
                log_residuals=np.array([_float(r) for r in resid]) if resid else None,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise FitError(f"not a loss-surface fit ({type(exc).__name__}: {exc})") from None


def allocation(params: np.ndarray, compute: float) -> tuple[np.ndarray, np.ndarray]:
    """N*, D* at C = 6 N D for rows of (E, A, B, alpha, beta) (Hoffmann et al. eq. 4)."""
    _, a, b, alpha, beta = np.asarray(params, dtype=float).T
    with np.errstate(all="ignore"):
        g = (alpha * a / (beta * b)) ** (1.0 / (alpha + beta))
        n = g * (compute / 6.0) ** (beta / (alpha + beta))
    return n, (compute / 6.0) / n


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
    tie: bool | str | None = None,
    fix: Mapping[str, float] | None = None,
    constraints: Constraints | None = None,
) -> LossSurface:
    """Fit the surface to points (N_i, D_i, L_i). FitError if the points cannot determine it.

    Points with a non-finite value are left out (`n_points` counts those used); tables go through
    scaling.fit.surfacefit, which names such rows instead.
    tie: "alpha=beta" (or True) fits one exponent for both; fix: {name: value} holds parameters
    (E, A, B, alpha, beta) at a value. The bootstrap refits keep the same constraints.
    """
    if constraints is None:
        constraints = Constraints.make(tie=tie, fix=fix)
    if not 0 < ci_level < 1:
        raise FitError(f"loss surface: ci_level must be between 0 and 1, got {_plain(ci_level)}")
    n = np.asarray(n_params, dtype=float).ravel()
    d = np.asarray(n_tokens, dtype=float).ravel()
    y = np.asarray(loss, dtype=float).ravel()
    if not (n.size == d.size == y.size):
        raise FitError("loss surface: n_params, n_tokens and loss must have the same length")
    keep = np.isfinite(n) & np.isfinite(d) & np.isfinite(y)  # callers that must not drop points check first
    n, d, y = n[keep], d[keep], y[keep]
    bad = (n <= 0) | (d <= 0) | (y <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FitError(
            f"loss surface: a point has n_params={_plain(n[i])}, n_tokens={_plain(d[i])}, loss={_plain(y[i])}; "
            "all must be > 0"
        )
    free = constraints.free()
    need = max(len(free) + 1, 2)
    if n.size < need:
        raise FitError(f"loss surface: {n.size} points; need at least {need} for {len(free)} free parameters")
    if ("alpha" in free and np.unique(n).size < 2) or (not constraints.tie_exponents and "beta" in free
                                                        and np.unique(d).size < 2):  # fmt: skip
        raise FitError("loss surface: need at least 2 distinct n_params and 2 distinct n_tokens values")
    log_n, log_d, log_y = np.log(n), np.log(d), np.log(y)
    m, c = constraints.linear_map()
    starts = constraints.starts(init_grid() if grid is None else grid)

    def expand(z: np.ndarray) -> np.ndarray:
        return np.atleast_2d(z) @ m + c

    def objective(weights=None):
        def batch(z: np.ndarray, rows: np.ndarray):
            w = weights if weights is None or weights.ndim == 1 else weights[rows]
            f, g = huber_lse(expand(z), log_n, log_d, log_y, weights=w)
            with np.errstate(invalid="ignore", over="ignore"):
                return f, g @ m.T

        return batch

    run = minimize_batch(objective(), starts, ftol=FTOL, max_iter=MAX_ITER)
    z = _polish(run.x, run.fun, objective())
    theta = expand(z)[0]
    obj = float(huber_lse(theta, log_n, log_d, log_y)[0][0])
    E, A, B, alpha, beta = _natural(theta)
    resid = log_y - np.log(E + A * n**-alpha + B * d**-beta)

    intervals: tuple = ()
    std_errors: tuple = ()
    std_devs: tuple = ()
    boot = None
    if n_bootstrap > 0:
        boot = _bootstrap(z, run, starts, objective, expand, n.size, n_bootstrap, seed, bootstrap_starts)
        lows, highs = quantile_interval(boot, ci_level)
        lo68, hi68 = np.quantile(boot, [0.158655, 0.841345], axis=0)
        sds = (hi68 - lo68) / 2.0
        intervals = tuple((p, float(lo), float(hi)) for p, lo, hi in zip(PARAMS, lows, highs))
        std_errors = tuple((p, float(s)) for p, s in zip(PARAMS, sds))
        std_devs = tuple((p, float(s)) for p, s in zip(PARAMS, np.std(boot, axis=0, ddof=1)))

    fitted = dict(E=E, A=A, B=B, alpha=alpha, beta=beta)
    return LossSurface(
        **fitted,
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
        constraints=constraints,
        seed=int(seed),
        rms_log_residual=float(np.sqrt(np.mean(resid**2))),
        max_log_residual=float(np.max(np.abs(resid))),
        min_loss=float(y.min()),
        warnings=tuple(surface_warnings(fitted, float(y.min()), constraints, boot, ci_level)),
        draws=boot,
        log_residuals=resid,
    )  # fmt: skip


def quantile_interval(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Central `level` percentile interval of bootstrap draws, column by column."""
    q = (1.0 - level) / 2.0
    return np.quantile(draws, q, axis=0), np.quantile(draws, 1.0 - q, axis=0)


def agree_to_digits(x: float, y: float, digits: int = 2) -> bool:
    """True when x and y differ by at most half a unit in their `digits`-th significant digit."""
    scale = max(abs(x), abs(y))
    if scale == 0 or not (math.isfinite(x) and math.isfinite(y)):
        return x == y
    return abs(x - y) <= 0.5 * 10 ** (math.floor(math.log10(scale)) - digits + 1)


def surface_warnings(fitted: Mapping[str, float], min_loss: float, constraints: Constraints,
                     draws: np.ndarray | None, level: float) -> list[str]:  # fmt: skip
    """What a reader of the fit must know: E above the data, exponents at the grid's edge, and
    bootstrap intervals (E, alpha, beta) whose two halves suggest two seeds would disagree at the
    second significant digit."""
    out = []
    if fitted["E"] > min_loss:
        out.append(
            f"E = {fitted['E']:.4g} exceeds the lowest observed loss {min_loss:.4g}: the surface's floor is above "
            "data it was fitted to (a poor fit, or E not determined; consider --tie alpha=beta or --fix E=...)"
        )
    fixed = dict(constraints.fixed)
    lo, hi = EXPONENT_RANGE
    for name in ("alpha", "beta"):
        value = fitted[name]
        if name not in fixed and (value <= lo + 0.01 or value >= hi - 0.01):
            out.append(f"{name} = {value:.4g} is at or past the edge of the searched range [{lo:g}, {hi:g}]: "
                       "these points do not determine it")  # fmt: skip
    if draws is not None and len(draws) >= 20:
        lows, highs = quantile_interval(draws, level)
        lows1, highs1 = quantile_interval(draws[0::2], level)
        lows2, highs2 = quantile_interval(draws[1::2], level)
        # Each half's endpoint has twice the Monte Carlo variance of the full sample's, so two
        # full-size runs with different seeds are expected to differ by |half1 - half2| / sqrt(2).
        unstable = [
            name for j, name in enumerate(PARAMS) if name in STABILITY_CHECKED and name not in fixed and not (
                agree_to_digits(lows[j], lows[j] + abs(lows1[j] - lows2[j]) / math.sqrt(2))
                and agree_to_digits(highs[j], highs[j] + abs(highs1[j] - highs2[j]) / math.sqrt(2)))
        ]  # fmt: skip
        if unstable:
            out.append(
                f"bootstrap intervals unstable for {', '.join(unstable)} ({len(draws)} refits): their Monte Carlo "
                "error reaches the second significant digit; use more --bootstrap refits"
            )
    return out


def _natural(theta: np.ndarray) -> tuple[float, float, float, float, float]:
    """(a, b, e, alpha, beta) -> (E, A, B, alpha, beta)."""
    a, b, e, alpha, beta = (float(v) for v in theta)
    return _exp(e), _exp(a), _exp(b), alpha, beta


def _exp(x: float) -> float:
    """exp that gives inf instead of OverflowError: a bootstrap refit of a few points can run a
    coefficient off to infinity (its interval end is then honestly unbounded)."""
    return math.exp(x) if x < 709.0 else math.inf


def _polish(x: np.ndarray, f: np.ndarray, batch, k: int = 5) -> np.ndarray:
    """Re-run scipy's L-BFGS-B (analytic gradient) from the k best batch end points; keep the best."""
    best_x, best_f = None, math.inf
    rows = np.zeros(1, dtype=int)
    for i in np.argsort(f)[:k]:
        if not np.isfinite(f[i]):
            continue
        res = minimize(
            lambda t: tuple(v[0] for v in batch(t[None, :], rows)),
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


def _bootstrap(z, run, starts, objective, expand, n, n_boot, seed, k) -> np.ndarray:
    """(n_boot, 5) natural-scale parameters refitted on point resamples, all in one batch."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    per = np.vstack([z[None, :], _distinct_best_starts(run, starts, k)])
    x0 = np.tile(per, (n_boot, 1))
    weights = np.repeat(counts, per.shape[0], axis=0)
    res = minimize_batch(objective(weights), x0, ftol=FTOL, max_iter=MAX_ITER)
    fun = np.where(np.isfinite(res.fun), res.fun, np.inf).reshape(n_boot, per.shape[0])
    best = res.x.reshape(n_boot, per.shape[0], -1)[np.arange(n_boot), np.argmin(fun, axis=1)]
    return np.array([_natural(t) for t in expand(best)])




def _float(x) -> float:
    """None (JSON null) -> NaN."""
    return math.nan if x is None else float(x)


def _plain(x) -> str:
    """A number as a person writes it: 1e+09, -1, 0.5, nan (never a numpy repr)."""
    try:
        return f"{float(x):.6g}"
    except (TypeError, ValueError):
        return repr(x)
