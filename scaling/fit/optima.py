"""Per-cell estimands: where in one (N, D) cell each objective is best, and what the data support.

Each (cell, objective) is fitted with the response model of scaling.fit.response (a curve in
ln tau that can be flat on the tau = inf side and steep on the other; seeds as block effects).
From the fitted curve, three estimands, each with an interval at `level`:

- decay*: the curve's minimiser over decay in [0, inf). `kind` says what the data support:
  "interior" (inside the searched positive decays: a value with an interval), "censored_below"
  (below the smallest positive decay searched: only the upper bound `high` is informative) or
  "censored_above" (above the largest: only `low` is). `evidence` gives the numbers behind a bound.
- decay_tol: the largest decay in the searched range whose expected objective is within `delta`
  of the curve's best there. It exists even on a plateau (where decay* is not identified), which
  is why laws and recommendations can fall back on it. delta is in the objective's units.

Uncertainty: a residual bootstrap at the measured noise. Residuals (scaled by sqrt(n / df) for
the fitted parameters) are pooled over the cells of an objective, then added to each cell's
fitted curve and refitted. A trial's residuals for all objectives are drawn together, so the
loss-optimal and plasticity-optimal draws are paired (the delta test uses that). With one seed
per decay the noise is what the response model leaves unexplained, so the intervals rest on the
model's smoothness; `interval_basis` says which. An interval is opened to 0 or inf on a side
where the bootstrap often puts the optimum beyond the grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import norm

from scaling.errors import DataError, FitError
from scaling.fit import response
from scaling.fit.table import cell_label

WALL_CUT: float | None = 10.0  # drop decays higher up the wall than this many noise sd above the best
MIN_DECAYS = 4  # distinct decays a cell needs: the response model has 4 shape parameters
MIN_LOG_SD = 0.01  # floor on a cell's sd of ln decay* (keeps law weights finite)
DEFAULT_DELTA = 0.01  # tolerance in the objective's units (nats/token for val_loss, score for ft_score)
KINDS = ("interior", "censored_below", "censored_above")
BASIS_SEEDS = "seed replicates"
BASIS_MODEL = "response-model smoothness (one seed per decay)"
BASIS_NONE = "none: no cell has more trials than the model's parameters, so the noise is not measured"


@dataclass(frozen=True)
class CellOptimum:
    """decay* and decay_tol for one objective in one (n_params, n_tokens) cell."""

    cell: str
    n_params: float
    n_tokens: float
    tpp: float
    objective: str
    direction: str  # "min" or "max"
    kind: str  # KINDS
    decay_opt: float  # interior: the estimate; censored: the grid edge it lies beyond (0 if the curve is lowest at 0)
    low: float  # interval for decay* (0 or inf on an uninformative side)
    high: float
    log_sd: float  # sd of ln decay* (interior only; NaN otherwise)
    decay_tol: float  # largest decay within delta of the best
    tol_kind: str  # KINDS, for decay_tol
    tol_low: float
    tol_high: float
    tol_log_sd: float
    delta: float
    n_trials: int
    n_seeds: int
    best_observed_decay: float
    value_at_opt: float  # fitted curve at decay_opt
    curvature: float  # d^2 objective / d(ln decay)^2 / 2 at an interior decay* (NaN otherwise)
    lr: float
    batch_tokens: float
    tau_opt: float  # B / (lr * decay* * D); inf at decay 0
    decays_searched: tuple[float, ...]
    level: float
    noise_sd: float  # per-trial sd the intervals were drawn at (pooled over cells)
    interval_basis: str
    evidence: str  # numbers behind the kind
    shape: tuple[float, float, float, float, float]  # (r, c0, c1, c2, decay_ref) of the fitted curve
    reason: str | None = None  # why decay* is not interior (compatibility with the report)
    draws: np.ndarray = field(default=None, repr=False, compare=False)  # bootstrap ln decay* (+-inf censored)
    tol_draws: np.ndarray = field(default=None, repr=False, compare=False)

    @property
    def bracketed(self) -> bool:
        return self.kind == "interior"

    @property
    def log_value(self) -> float:
        return math.log(self.decay_opt) if self.decay_opt > 0 else -math.inf

    def curve(self, decays) -> np.ndarray:
        """The fitted objective at `decays` (an average seed)."""
        r, c0, c1, c2, ref = self.shape
        d = np.asarray(decays, dtype=float)
        z = np.where(d > 0, (np.where(d > 0, d, 1.0) / ref) ** r, 0.0)
        sign = 1.0 if self.direction == "min" else -1.0
        return sign * (c0 + c1 * z + c2 * z * z)

    def to_dict(self) -> dict:
        out = {}
        for key, value in self.__dict__.items():
            if key in ("draws", "tol_draws"):
                continue
            if isinstance(value, tuple):
                out[key] = [_num(v) for v in value]
            elif isinstance(value, float):
                out[key] = _num(value)
            else:
                out[key] = value
        out["bracketed"] = self.bracketed
        return out


def cell_optima(
    df: pd.DataFrame,
    objective: str,
    direction: str,
    *,
    n_bootstrap: int = 200,
    level: float = 0.9,
    seed: int = 0,
    delta: float = DEFAULT_DELTA,
) -> tuple[CellOptimum, ...]:
    """decay* and decay_tol for `objective` in every cell of a prepared table, sorted by (N, D)."""
    result = cell_estimates(df, {objective: direction}, n_bootstrap=n_bootstrap, level=level, seed=seed,
                            deltas={objective: delta})  # fmt: skip
    return result.optima.get(objective, ())


def cell_optimum(trials: pd.DataFrame, objective: str, direction: str, **options) -> CellOptimum:
    """decay* for one cell's trials."""
    optima = cell_optima(trials.assign(cell="cell") if "cell" not in trials.columns else trials, objective,
                         direction, **options)  # fmt: skip
    if len(optima) != 1:
        raise FitError(f"{objective}: expected one cell, found {len(optima)}")
    return optima[0]


@dataclass(frozen=True)
class CellEstimates:
    optima: dict[str, tuple[CellOptimum, ...]]  # objective -> per-cell results
    skipped: tuple[tuple[str, str], ...]  # (cell, reason) cells that could not be fitted
    noise: dict[str, tuple[float, int]]  # objective -> (pooled residual sd, its degrees of freedom)


def cell_estimates(
    df: pd.DataFrame,
    objectives: Mapping[str, str],
    *,
    n_bootstrap: int = 200,
    level: float = 0.9,
    seed: int = 0,
    deltas: Mapping[str, float] | None = None,
) -> CellEstimates:
    """Fit every (cell, objective), with bootstrap draws paired across objectives."""
    for objective, direction in objectives.items():
        if direction not in ("min", "max"):
            raise FitError(f"objective {objective!r}: direction must be 'min' or 'max', got {direction!r}")
        for col in ("n_params", "n_tokens", "decay", objective):
            if col not in df.columns:
                raise DataError(f"trials table: missing column {col!r} (needed for per-cell optima of {objective})")
    if not 0 < level < 1:
        raise FitError(f"level must be between 0 and 1, got {level}")
    deltas = {obj: float((deltas or {}).get(obj, DEFAULT_DELTA)) for obj in objectives}
    for obj, value in deltas.items():
        if not (math.isfinite(value) and value > 0):
            raise FitError(f"{obj}: tolerance delta must be a positive number, got {value!r}")
    rng = np.random.default_rng(seed)
    cells, skipped = _cells(df, objectives)

    # 1. point fits, per cell and objective; then again without the wall's upper part (see _trim)
    fits = _point_fits(cells, objectives, None)
    noise = _pooled_noise(fits, objectives)
    if WALL_CUT is not None and noise:
        fits = _point_fits(cells, objectives, {obj: WALL_CUT * sd for obj, (sd, _) in noise.items()})
        noise = _pooled_noise(fits, objectives)
    pools: dict[str, np.ndarray] = {}
    # 2. pooled residuals, one row per trial, all objectives side by side (NaN where missing)
    n_rows = len(df)
    resid = np.full((n_rows, len(objectives)), np.nan)
    for j, objective in enumerate(objectives):
        for (i, o), (rows, des, y, point) in fits.items():
            if o == objective and des.df_resid > 0:
                scale = math.sqrt(y.size / des.df_resid)
                resid[cells[i]["index"][rows], j] = (y - point.fitted[0]) * scale
    complete = np.flatnonzero(np.isfinite(resid).all(axis=1))
    for j, objective in enumerate(objectives):
        own = np.flatnonzero(np.isfinite(resid[:, j]))
        pools[objective] = own
    joint = complete.size >= 5

    # 3. bootstrap and estimands
    out: dict[str, list[CellOptimum]] = {obj: [] for obj in objectives}
    for i, cell in enumerate(cells):
        draws_index = None
        for j, (objective, direction) in enumerate(objectives.items()):
            key = (i, objective)
            if key not in fits:
                continue
            rows, des, y, point = fits[key]
            boot = None
            if n_bootstrap > 0 and objective in noise:
                if joint:
                    if draws_index is None or draws_index.shape[1] != rows.size:
                        draws_index = complete[rng.integers(0, complete.size, (n_bootstrap, rows.size))]
                    e = resid[draws_index, j]
                else:
                    pool = pools[objective]
                    e = resid[pool[rng.integers(0, pool.size, (n_bootstrap, rows.size))], j]
                boot = response.fit_many(des, point.fitted[0][None, :] + e)
            out[objective].append(_estimate(cell, rows, des, point, boot, objective, direction, level,
                                            deltas[objective], noise.get(objective, (math.nan, 0))[0]))  # fmt: skip
    for objective, direction in objectives.items():
        for cell in cells:
            n_dec = np.unique(cell["decay"][np.isfinite(cell["values"][objective])]).size
            if n_dec < MIN_DECAYS:
                skipped.append((cell["label"], f"{objective}: {n_dec} distinct decays with a value; the response "
                                               f"model needs {MIN_DECAYS}"))  # fmt: skip
    return CellEstimates({k: tuple(v) for k, v in out.items()}, tuple(skipped), noise)


def _point_fits(cells, objectives, cuts) -> dict[tuple[int, str], tuple]:
    fits: dict[tuple[int, str], tuple] = {}
    for i, cell in enumerate(cells):
        for objective, direction in objectives.items():
            sign = 1.0 if direction == "min" else -1.0
            rows = cell["rows"][np.isfinite(cell["values"][objective])]
            if cuts is not None and objective in cuts:
                rows = _trim(cell["decay"][rows], sign * cell["values"][objective][rows], rows, cuts[objective])
            if np.unique(cell["decay"][rows]).size < MIN_DECAYS:
                continue
            des = response.design(cell["decay"][rows], cell["block"][rows])
            y = sign * cell["values"][objective][rows]
            fits[(i, objective)] = (rows, des, y, response.fit_many(des, y[None, :]))
    return fits


def _trim(decay: np.ndarray, y: np.ndarray, rows: np.ndarray, cut: float) -> np.ndarray:
    """Drop the decays high up the wall: beyond the first decay (past the best) whose mean is more
    than `cut` above the best mean. Keeps MIN_DECAYS decays at least."""
    grid = np.unique(decay)
    means = np.array([y[decay == g].mean() for g in grid])
    k = int(np.argmin(means))
    high = np.flatnonzero((means > means[k] + cut) & (np.arange(grid.size) > k))
    if not high.size:
        return rows
    keep_to = max(int(high[0]), MIN_DECAYS - 1)
    return rows[decay <= grid[min(keep_to, grid.size - 1)]]


def _pooled_noise(fits, objectives) -> dict[str, tuple[float, int]]:
    noise = {}
    for objective in objectives:
        rss = sum(float(f[3].rss[0]) for (i, o), f in fits.items() if o == objective and f[1].df_resid > 0)
        dof = sum(f[1].df_resid for (i, o), f in fits.items() if o == objective and f[1].df_resid > 0)
        if dof > 0:
            noise[objective] = (math.sqrt(rss / dof), dof)
    return noise


def _cells(df: pd.DataFrame, objectives: Mapping[str, str]) -> tuple[list[dict], list[tuple[str, str]]]:
    key = df["cell"].astype(str) if "cell" in df.columns else df["n_params"].astype(str) + "|" + df["n_tokens"].astype(str)
    codes, _ = pd.factorize(key)
    cols = {c: _column(df, c) for c in ("n_params", "n_tokens", "decay", "lr", "batch_tokens")}
    values = {obj: _column(df, obj) for obj in objectives}
    seeds = df["seed"].astype(str).to_numpy() if "seed" in df.columns else np.zeros(len(df), dtype=str)
    cells = []
    for code in range(codes.max() + 1 if codes.size else 0):
        idx = np.flatnonzero(codes == code)
        n_params = float(np.median(cols["n_params"][idx]))
        n_tokens = float(np.median(cols["n_tokens"][idx]))
        label = str(df["cell"].iloc[idx[0]]) if "cell" in df.columns else cell_label(n_params, n_tokens / n_params)
        _, block = np.unique(seeds[idx], return_inverse=True)
        cells.append(dict(label=label, n_params=n_params, n_tokens=n_tokens, index=idx, rows=np.arange(idx.size),
                          decay=cols["decay"][idx], block=block, lr=cols["lr"][idx], batch=cols["batch_tokens"][idx],
                          values={obj: v[idx] for obj, v in values.items()}))  # fmt: skip
    cells.sort(key=lambda c: (c["n_params"], c["n_tokens"]))
    return cells, []


def _column(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)


def _estimate(cell, rows, des, point, boot, objective, direction, level, delta, noise_sd) -> CellOptimum:
    sign = 1.0 if direction == "min" else -1.0
    ln_min, ln_max = math.log(des.d_min), math.log(des.d_max)
    log_opt = float(response.log_optimum(des, point)[0])
    log_tol = float(response.log_tolerance(des, point, delta)[0][0])
    kind = _kind(log_opt, ln_min, ln_max)
    tol_kind = "censored_above" if log_tol >= ln_max - 1e-9 else _kind(log_tol, ln_min, ln_max)
    if boot is not None:
        draws = response.log_optimum(des, boot)
        tol = response.log_tolerance(des, boot, delta)[0]
        tol_draws = np.where(tol >= ln_max - 1e-9, np.inf, tol)
    else:
        draws = tol_draws = np.array([])
    low, high, log_sd = _interval(draws, kind, level, ln_min, ln_max, log_opt)
    tol_low, tol_high, tol_sd = _interval(tol_draws, tol_kind, level, ln_min, ln_max, log_tol)
    if kind == "interior":
        decay_opt = math.exp(log_opt)
    elif kind == "censored_below":
        decay_opt = 0.0 if log_opt == -math.inf else des.d_min
    else:
        decay_opt = des.d_max
    decay_tol = math.exp(log_tol) if math.isfinite(log_tol) else 0.0
    means = pd.Series(cell["values"][objective][rows]).groupby(des.decay).mean()
    best_observed = float(means.idxmin() if direction == "min" else means.idxmax())
    at = response.evaluate(des, point, np.array([decay_opt]))[0, 0]
    curvature = float(response.second_derivative(des, point, np.array([log_opt]))[0]) / 2.0 if kind == "interior" else math.nan
    at_best = des.decay == (decay_opt if decay_opt in des.grid else best_observed)
    lr = _setting(cell["lr"][rows], at_best)
    batch = _setting(cell["batch"][rows], at_best)
    tau_opt = batch / (lr * decay_opt * cell["n_tokens"]) if decay_opt > 0 else math.inf
    evidence = _evidence(kind, log_opt, draws, des, best_observed)
    r, (c0, c1, c2) = float(point.r[0]), point.coef[0]
    return CellOptimum(
        cell=cell["label"], n_params=cell["n_params"], n_tokens=cell["n_tokens"],
        tpp=cell["n_tokens"] / cell["n_params"], objective=objective, direction=direction, kind=kind,
        decay_opt=float(decay_opt), low=low, high=high, log_sd=log_sd if kind == "interior" else math.nan,
        decay_tol=float(decay_tol), tol_kind=tol_kind, tol_low=tol_low, tol_high=tol_high, tol_log_sd=tol_sd,
        delta=delta, n_trials=int(rows.size), n_seeds=des.n_blocks, best_observed_decay=best_observed,
        value_at_opt=float(sign * at), curvature=float(sign * curvature), lr=lr, batch_tokens=batch,
        tau_opt=float(tau_opt), decays_searched=tuple(float(v) for v in des.grid), level=level,
        noise_sd=noise_sd, interval_basis=_basis(des, noise_sd), evidence=evidence,
        shape=(r, float(c0), float(c1), float(c2), des.decay_ref),
        reason=None if kind == "interior" else evidence, draws=draws, tol_draws=tol_draws,
    )  # fmt: skip


def _basis(des, noise_sd: float) -> str:
    if not math.isfinite(noise_sd):
        return BASIS_NONE
    return BASIS_SEEDS if des.n_blocks > 1 else BASIS_MODEL


def _kind(log_value: float, ln_min: float, ln_max: float) -> str:
    if log_value < ln_min - 1e-9:
        return "censored_below"
    if log_value > ln_max + 1e-9:
        return "censored_above"
    return "interior"


def quantile(draws: np.ndarray, q: float) -> float:
    """Order-statistic quantile that keeps +-inf (no interpolation between them)."""
    s = np.sort(draws[~np.isnan(draws)])
    if not s.size:
        return math.nan
    return float(s[min(max(int(math.floor(q * s.size)), 0), s.size - 1)])


def _interval(draws: np.ndarray, kind: str, level: float, ln_min: float, ln_max: float, centre: float):
    """(low, high, sd of ln) on the natural scale. Interior: centre +- z sd, sd the bootstrap sd of
    ln (draws beyond the grid clipped one e-fold past its edge), opened to 0 / inf on a side where
    more than the tail share of draws is censored (percentile intervals of this skewed, heavy-tailed
    estimator cover too little in simulation: docs/fitting.md). Censored: the one-sided bound."""
    if not draws.size:
        return math.nan, math.nan, math.nan
    tail = (1.0 - level) / 2.0
    clipped = np.clip(draws, ln_min - 1.0, ln_max + 1.0)
    sd = max(float(np.std(clipped, ddof=1)), MIN_LOG_SD)
    if kind == "interior":
        half = norm.ppf(1.0 - tail) * sd
        lo, hi = centre - half, centre + half
        if np.mean(draws < ln_min - 1e-9) > tail:
            lo = -math.inf
        if np.mean(draws > ln_max + 1e-9) > tail:
            hi = math.inf
    elif kind == "censored_below":
        lo, hi = -math.inf, quantile(draws, level)
    else:
        lo, hi = quantile(draws, 1.0 - level), math.inf
    return _exp(lo), _exp(hi), sd


def _exp(x: float) -> float:
    if x == -math.inf:
        return 0.0
    return math.exp(x) if x < 700 else math.inf


def _evidence(kind: str, log_opt: float, draws: np.ndarray, des, best_observed: float) -> str:
    seen = f"best observed decay is {best_observed:.3g}" if best_observed > 0 else "best observed decay is 0"
    share_below = float(np.mean(draws < math.log(des.d_min) - 1e-9)) if draws.size else math.nan
    share_above = float(np.mean(draws > math.log(des.d_max) + 1e-9)) if draws.size else math.nan
    shares = (f"; {100 * share_below:.0f}% of bootstrap draws below {des.d_min:.3g}, {100 * share_above:.0f}% above "
              f"{des.d_max:.3g}") if draws.size else ""  # fmt: skip
    if kind == "censored_below":
        where = "lowest at decay 0" if log_opt == -math.inf else f"lowest at {math.exp(log_opt):.3g}"
        return (f"decay* below the smallest positive decay searched ({des.d_min:.3g}): fitted curve {where}; "
                f"{seen}{shares}")  # fmt: skip
    if kind == "censored_above":
        where = "still falling there" if log_opt == math.inf else f"lowest at {math.exp(log_opt):.3g}"
        return f"decay* above the largest decay searched ({des.d_max:.3g}): fitted curve {where}; {seen}{shares}"
    return f"interior: fitted curve lowest at {math.exp(log_opt):.3g}; {seen}{shares}"


def _setting(values: np.ndarray, at_best: np.ndarray) -> float:
    """A per-cell setting (lr, batch_tokens): the median over the trials at the chosen decay."""
    chosen = values[at_best] if at_best.any() and np.isfinite(values[at_best]).any() else values
    chosen = chosen[np.isfinite(chosen)]
    return float(np.median(chosen)) if chosen.size else math.nan


def _num(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
