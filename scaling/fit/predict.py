"""Predictions from a fitted loss surface, with intervals from its bootstrap draws.

    from scaling.fit.predict import load_surface, predict_loss, predict_allocation
    surface = load_surface("fits.json")
    predict_loss(surface, 7e10, 1.4e12, level=0.9)   # val_loss at (N, D)
    predict_allocation(surface, 5.76e23)               # N*, D*, a = beta / (alpha + beta) at C = 6 N D

Two intervals for a loss: `ci`, where the fitted surface itself lies (quantiles of the surface
refitted on bootstrap resamples), and `pi`, where a new run's loss is expected (each refit's
prediction times the exponential of a fitted point's log residual, inflated by sqrt(n / (n - p))
for the p free parameters, drawn at random with the fit's seed): the second is the one to compare
with a run. Anything outside the fitted N or D
range is flagged as an extrapolation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaling.errors import DataError, FitError
from scaling.fit.surface import LossSurface, allocation, quantile_interval
from scaling.fit.table import human


@dataclass(frozen=True)
class LossPrediction:
    n_params: float
    n_tokens: float
    loss: float
    ci: tuple[float, float]  # the surface at (N, D)
    pi: tuple[float, float]  # a new run at (N, D)
    level: float
    extrapolation: str | None  # why, or None inside the fitted ranges

    def to_dict(self) -> dict:
        return {"n_params": self.n_params, "n_tokens": self.n_tokens, "tpp": self.n_tokens / self.n_params,
                "val_loss": self.loss, "ci": list(self.ci), "pi": list(self.pi), "level": self.level,
                "extrapolation": self.extrapolation}  # fmt: skip


@dataclass(frozen=True)
class AllocationPrediction:
    compute: float
    n_params: float
    n_tokens: float
    exponent: float  # a = beta / (alpha + beta): N* ~ C^a, D* ~ C^(1 - a)
    loss: float
    n_params_ci: tuple[float, float]
    n_tokens_ci: tuple[float, float]
    exponent_ci: tuple[float, float]
    loss_ci: tuple[float, float]
    level: float
    extrapolation: str | None

    def to_dict(self) -> dict:
        return {"compute": self.compute, "n_params": self.n_params, "n_tokens": self.n_tokens,
                "tpp": self.n_tokens / self.n_params, "allocation_exponent": self.exponent, "val_loss": self.loss,
                "n_params_ci": list(self.n_params_ci), "n_tokens_ci": list(self.n_tokens_ci),
                "allocation_exponent_ci": list(self.exponent_ci), "val_loss_ci": list(self.loss_ci),
                "level": self.level, "extrapolation": self.extrapolation}  # fmt: skip


def load_surface(source: str | Path | Mapping) -> LossSurface:
    """The surface in a fits.json (surface-only or study fit), a path or its parsed dict."""
    if isinstance(source, Mapping):
        payload, name = source, "fits"
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{path}: no such file (expected fits.json written by `scaling fit`)")
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not JSON ({exc})") from None
        name = str(path)
    surface = payload.get("surface") if isinstance(payload, Mapping) else None
    if not surface:
        raise FitError(f"{name}: has no loss surface (fit a table with n_params, n_tokens and val_loss)")
    try:
        return LossSurface.from_dict(surface)
    except FitError as exc:
        raise FitError(f"{name}: {exc}") from None


def predict_loss(surface: LossSurface, n_params: float, n_tokens: float, *, level: float | None = None,
                 seed: int | None = None) -> LossPrediction:  # fmt: skip
    """val_loss the surface expects at (N, D), with its interval and a new run's."""
    _positive(n_params=n_params, n_tokens=n_tokens)
    level = _level(surface, level)
    draws = _draws(surface)
    preds = draws[:, 0] + draws[:, 1] * n_params ** -draws[:, 3] + draws[:, 2] * n_tokens ** -draws[:, 4]
    ci = quantile_interval(preds[:, None], level)
    resid = surface.log_residuals
    if resid is not None and resid.size > len(surface.constraints.free()):
        # fitted residuals are smaller than a new run's deviation: the usual sqrt(n / (n - p)) correction
        resid = resid * math.sqrt(resid.size / (resid.size - len(surface.constraints.free())))
    rng = np.random.default_rng(surface.seed if seed is None else seed)
    noisy = preds * np.exp(rng.choice(resid, size=preds.size)) if resid is not None and resid.size else preds
    pi = quantile_interval(noisy[:, None], level)
    return LossPrediction(
        n_params=float(n_params), n_tokens=float(n_tokens), loss=float(surface.predict(n_params, n_tokens)),
        ci=(float(ci[0][0]), float(ci[1][0])), pi=(float(pi[0][0]), float(pi[1][0])), level=level,
        extrapolation=extrapolation(surface, n_params, n_tokens),
    )  # fmt: skip


def predict_allocation(surface: LossSurface, compute: float, *, level: float | None = None) -> AllocationPrediction:
    """The compute-optimal N*, D* at C = 6 N D, the exponent a = beta / (alpha + beta), intervals."""
    _positive(compute=compute)
    level = _level(surface, level)
    opt = surface.compute_optimal(compute)
    draws = _draws(surface)
    ok = (draws[:, 3] > 0) & (draws[:, 4] > 0)
    if ok.sum() < 2:
        raise FitError("too few bootstrap refits with positive exponents for allocation intervals")
    n, d = allocation(draws[ok], compute)
    exps = draws[ok, 4] / (draws[ok, 3] + draws[ok, 4])
    losses = draws[ok, 0] + draws[ok, 1] * n ** -draws[ok, 3] + draws[ok, 2] * d ** -draws[ok, 4]
    lows, highs = quantile_interval(np.column_stack([n, d, exps, losses]), level)
    ci = [(float(lo), float(hi)) for lo, hi in zip(lows, highs)]
    return AllocationPrediction(
        compute=float(compute), n_params=opt.n_params, n_tokens=opt.n_tokens,
        exponent=surface.beta / (surface.alpha + surface.beta), loss=opt.loss,
        n_params_ci=ci[0], n_tokens_ci=ci[1], exponent_ci=ci[2], loss_ci=ci[3], level=level,
        extrapolation=extrapolation(surface, opt.n_params, opt.n_tokens),
    )  # fmt: skip


def extrapolation(surface: LossSurface, n_params: float, n_tokens: float) -> str | None:
    """Why (N, D) is outside the fitted ranges, or None."""
    notes = []
    for label, value, (lo, hi) in (("N", n_params, surface.n_range), ("D", n_tokens, surface.d_range)):
        if value > hi * (1 + 1e-9):
            notes.append(f"{label} = {human(value)} is {value / hi:.3g}x the largest fitted ({human(hi)})")
        elif value < lo * (1 - 1e-9):
            notes.append(f"{label} = {human(value)} is below the smallest fitted ({human(lo)})")
    return "; ".join(notes) if notes else None


def _draws(surface: LossSurface) -> np.ndarray:
    if surface.draws is None or len(surface.draws) < 2:
        raise FitError("the fit has no bootstrap draws to give intervals; refit with --bootstrap K (K > 1)")
    draws = np.asarray(surface.draws, dtype=float)
    return draws[np.all(np.isfinite(draws), axis=1)]


def _level(surface: LossSurface, level: float | None) -> float:
    level = surface.ci_level if level is None else float(level)
    if not 0 < level < 1:
        raise FitError(f"level: expected a coverage between 0 and 1, got {level:g}")
    return level


def _positive(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise FitError(f"{name}: expected a positive number, got {value!r}")
