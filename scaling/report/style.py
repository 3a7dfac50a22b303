"""Shared visual vocabulary of the report: one colour per model size, one dash per token budget,
one colour per objective, a colour scale for decay, a log decay axis that can show decay = 0, and
a log timescale axis that can show tau = inf (the same decay 0)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from plotly.colors import sample_colorscale

from scaling.fit.table import human

# ft_score and ft_nll are the two plasticity objectives (a study's `plasticity` chooses one)
OBJECTIVE_COLOURS = {"val_loss": "#1f63b4", "ft_score": "#c0392b", "ft_nll": "#c0392b"}
OBJECTIVE_NAMES = {"val_loss": "loss-optimal", "ft_score": "plasticity-optimal", "ft_nll": "plasticity-optimal"}
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
DECAY_SCALE = "Viridis"
FONT = dict(family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif", size=12)
PANEL_HEIGHT = 340


def size_colours(n_values: Iterable[float]) -> dict[float, str]:
    """Sizes ordered small -> large, dark purple -> green (Viridis without its pale yellow end)."""
    ns = sorted(set(float(n) for n in n_values))
    if len(ns) == 1:
        return {ns[0]: sample_colorscale(DECAY_SCALE, [0.35])[0]}
    return dict(zip(ns, sample_colorscale(DECAY_SCALE, list(np.linspace(0.0, 0.8, len(ns))))))


def tpp_dashes(tpps: Iterable[float]) -> dict[float, str]:
    ts = sorted(set(float(t) for t in tpps))
    return {t: DASHES[i % len(DASHES)] for i, t in enumerate(ts)}


def tpp_colours(tpps: Iterable[float]) -> dict[float, str]:
    ts = sorted(set(float(t) for t in tpps))
    if len(ts) == 1:
        return {ts[0]: "#444444"}
    return dict(zip(ts, sample_colorscale("Plasma", list(np.linspace(0.0, 0.75, len(ts))))))


def size_label(n: float) -> str:
    return f"N = {human(n)}"


def tpp_label(t: float) -> str:
    return f"{t:.3g} TPP"


class DecayAxis:
    """A log decay axis. decay = 0 (no weight decay) has no place on a log axis, so it is drawn a
    decade below the smallest positive decay searched and labelled '0'."""

    def __init__(self, decays: Iterable[float]):
        values = np.asarray([float(d) for d in decays if math.isfinite(float(d))], dtype=float)
        positive = values[values > 0]
        self.has_zero = bool((values == 0).any())
        self.low = float(positive.min()) if positive.size else 1e-3
        self.high = float(positive.max()) if positive.size else 1.0
        self.zero_at = self.low / 10.0

    def x(self, decay) -> np.ndarray:
        d = np.asarray(decay, dtype=float)
        return np.where(d > 0, d, self.zero_at)

    def log10(self, decay) -> np.ndarray:
        return np.log10(self.x(decay))

    def label(self, decay: float) -> str:
        return "0" if decay <= 0 else f"{decay:.3g}"

    def ticks(self, low: float | None = None, high: float | None = None) -> dict:
        """tickvals/ticktext for a log axis over [low, high] (default: the searched decays): powers
        of ten (1-2-5 steps when the range spans less than two decades), plus '0' where decay 0 sits."""
        vals = _decade_ticks(low if low else self.low, high if high else self.high)
        vals = [v for v in vals if v > (self.zero_at if self.has_zero else 0) * 1.5]
        text = [_tick(v) for v in vals]
        if self.has_zero:
            vals, text = [self.zero_at, *vals], ["0", *text]
        return dict(tickvals=vals, ticktext=text)

    def colour_ticks(self) -> dict:
        """Colour-bar ticks for log10 decay."""
        t = self.ticks()
        return dict(tickvals=[math.log10(v) for v in t["tickvals"]], ticktext=t["ticktext"])


class TauAxis:
    """A log axis of the timescale tau = B/(lr decay D) (B batch tokens, lr the peak learning rate,
    D the run's tokens: the AdamW EMA timescale as a fraction of the run, Bergsma et al. 2025,
    "Power Lines"). Cells of one token budget whose decays differ line up at equal tau. decay = 0
    is tau = inf, which has no place on a log axis: it is drawn a decade beyond the largest finite
    tau and labelled '∞'. tau grows to the right, so more decay is to the left."""

    TITLE = "tau = B/(lr·decay·D), more decay ←"

    def __init__(self, taus: Iterable[float]):
        values = np.asarray([float(t) for t in taus if not math.isnan(float(t))], dtype=float)
        finite = values[np.isfinite(values) & (values > 0)]
        self.has_inf = bool(np.isposinf(values).any())
        self.low = float(finite.min()) if finite.size else 0.1
        self.high = float(finite.max()) if finite.size else 10.0
        self.inf_at = self.high * 10.0

    def x(self, tau) -> np.ndarray:
        t = np.asarray(tau, dtype=float)
        return np.where(np.isposinf(t), self.inf_at, t)

    def label(self, tau: float) -> str:
        return "∞" if math.isinf(tau) and tau > 0 else f"{tau:.3g}"

    def ticks(self, low: float | None = None, high: float | None = None) -> dict:
        """tickvals/ticktext as DecayAxis.ticks, with '∞' where tau = inf sits."""
        vals = _decade_ticks(low if low else self.low, high if high else self.high)
        if self.has_inf:
            vals = [v for v in vals if v < self.inf_at / 1.5]
        text = [_tick(v) for v in vals]
        if self.has_inf:
            vals, text = [*vals, self.inf_at], [*text, "∞"]
        return dict(tickvals=vals, ticktext=text)


def _decade_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten over [lo, hi], or 1-2-5 steps near it when it spans less than two decades."""
    k0, k1 = math.floor(math.log10(lo) - 1e-9), math.ceil(math.log10(hi) + 1e-9)
    steps = (1,) if math.log10(hi / lo) >= 2 else (1, 2, 5)
    vals = [m * 10.0**k for k in range(k0, k1 + 1) for m in steps]
    if steps != (1,):
        vals = [v for v in vals if lo / 2.5 <= v <= hi * 2.5]
    return vals


def _tick(v: float) -> str:
    k = math.floor(math.log10(v) + 1e-9)
    if -2 <= k <= 2:
        return f"{v:g}"
    m = round(v / 10.0**k)
    return f"1e{k}" if m == 1 else f"{m}e{k}"


def log_ticks(low: float, high: float) -> dict:
    """Readable ticks for a log axis of sizes, token ratios or timescales: powers of ten when the
    range spans two decades or more, else 1-2-5 steps, labelled like '30k'."""
    if not (low > 0 and high > 0 and math.isfinite(low) and math.isfinite(high)):
        return {}
    k0, k1 = math.floor(math.log10(low)), math.ceil(math.log10(high))
    steps = (1,) if k1 - k0 > 2 else (1, 2, 5)
    vals = [m * 10.0**k for k in range(k0, k1 + 1) for m in steps]
    vals = [v for v in vals if low <= v <= high]
    if len(vals) < 2:
        vals = [m * 10.0**k for k in range(k0, k1 + 1) for m in (1, 2, 3, 5)]
        vals = [v for v in vals if low <= v <= high] or [low, high]
    return dict(tickvals=vals, ticktext=[human(v) for v in vals])


def base_layout(title: str | None = None, height: int = PANEL_HEIGHT, **extra) -> dict:
    layout = dict(
        template="plotly_white",
        font=FONT,
        height=height,
        margin=dict(l=60, r=20, t=70 if title else 40, b=50),
        legend=dict(font=dict(size=11), tracegroupgap=2),
        hoverlabel=dict(font_size=11),
    )
    if title:
        layout["title"] = dict(text=title, x=0.0, xanchor="left", font=dict(size=14))
    layout.update(extra)
    return layout
