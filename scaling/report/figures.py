"""One function per figure of the report. Each takes the checked tables (and the fits) and
returns a plotly Figure; deciding *whether* a figure can be drawn is the page's job
(`scaling.report.page`), so these functions assume the columns they draw exist."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from scaling.fit import CellOptimum
from scaling.fit.table import direction_of, human
from scaling.report.analysis import ReportFit
from scaling.report.data import MECHANISMS, StudyTables, curves_with_decay, timescale_constants, timescales
from scaling.report.style import (
    DECAY_SCALE,
    OBJECTIVE_COLOURS,
    OBJECTIVE_NAMES,
    PANEL_HEIGHT,
    DecayAxis,
    TauAxis,
    base_layout,
    size_colours,
    size_label,
    tpp_colours,
    tpp_dashes,
    tpp_label,
    log_ticks,
)

LABELS = {
    "val_loss": "val_loss (nats/token)",
    "train_loss": "train_loss (nats/token)",
    "ft_score": "ft_score (mean over tasks)",
    "ft_gain": "ft_gain (after - before)",
    "ft_nll": "ft_nll (held-out NLL after fine-tuning)",
    "ft_nll_gain": "ft_nll_gain (NLL before - after)",
    "probe_acc": "probe_acc (linear probe)",
    "qk_rank": "qk_rank (effective rank of W_Q W_K^T)",
    "gap": "gap = val_loss - train_loss",
}


# ----------------------------------------------------------------------------- helpers


def _tpps(trials: pd.DataFrame) -> list[float]:
    return sorted(float(t) for t in trials["tpp"].round(6).unique())


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _pos(i: int, cols: int) -> tuple[int, int]:
    return i // cols + 1, i % cols + 1


def _means(trials: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per (cell, decay): mean, sd and count of `column`, with the cell's N and TPP."""
    rows = trials[np.isfinite(trials[column].to_numpy(dtype=float))]
    g = rows.groupby(["cell", "decay"], sort=True)
    out = g[column].agg(["mean", "std", "count"]).reset_index()
    meta = rows.groupby("cell")[["n_params", "tpp"]].median()
    return out.join(meta, on="cell").sort_values(["n_params", "tpp", "decay"])


def _cell_best(trials: pd.DataFrame, column: str) -> dict[str, float]:
    """Each cell's best per-decay mean of `column` (lowest for a loss, highest otherwise)."""
    means = _means(trials, column)
    agg = "min" if direction_of(column) == "min" else "max"
    return means.groupby("cell")["mean"].agg(agg).to_dict()


class _Views:
    """Two views of a figure's y values, switched by buttons: as measured, and relative to each
    cell's best per-decay mean (the shape of the decay dependence without the size-to-size offset,
    which otherwise flattens every curve)."""

    def __init__(self) -> None:
        self.index: list[int] = []
        self.absolute: list[np.ndarray] = []
        self.relative: list[np.ndarray] = []

    def add(self, fig: go.Figure, y, offset: float) -> None:
        y = np.asarray(y, dtype=float)
        self.index.append(len(fig.data) - 1)
        self.absolute.append(y)
        self.relative.append(y - offset)

    def install(self, fig: go.Figure, titles: dict[str, tuple[str, str]], relative: bool) -> None:
        """titles: {layout y-axis name: (absolute title, relative title)}; `relative`: start so."""
        if relative:
            for i, y in zip(self.index, self.relative):
                fig.data[i].y = y
            for axis, (_, rel) in titles.items():
                fig.layout[axis].title.text = rel

        def view(ys, k):
            return [{"y": [list(y) for y in ys]}, {f"{a}.title.text": t[k] for a, t in titles.items()}, self.index]

        fig.update_layout(updatemenus=[dict(
            type="buttons", direction="right", x=1.0, xanchor="right", y=1.0, yanchor="bottom", pad=dict(b=28),
            showactive=True, active=1 if relative else 0, font=dict(size=11),
            buttons=[dict(label="as measured", method="update", args=view(self.absolute, 0)),
                     dict(label="relative to each cell's best", method="update", args=view(self.relative, 1))],
        )])  # fmt: skip


class XScale:
    """Where a cell's decay lands on a per-cell curve figure's x axis. When every trial records a
    finite positive lr, batch_tokens and n_tokens: at its timescale tau = k / decay on a TauAxis,
    k = B/(lr D) of the cell (the median over its trials; one peak lr and batch per cell in every
    spec), so the sizes of one token budget line up; otherwise at decay on a DecayAxis."""

    def __init__(self, trials: pd.DataFrame):
        k = timescale_constants(trials)
        self.k: dict[str, float] | None = None if k is None else k.groupby(trials["cell"]).median().to_dict()
        if self.k is None:
            self.axis: DecayAxis | TauAxis = DecayAxis(trials["decay"])
        else:
            self.axis = TauAxis(self.value(trials["cell"], trials["decay"]))

    @property
    def is_tau(self) -> bool:
        return self.k is not None

    @property
    def title(self) -> str:
        return TauAxis.TITLE if self.is_tau else "decay"

    @property
    def versus(self) -> str:
        """Words for figure titles: what the curves are drawn against."""
        return "timescale tau" if self.is_tau else "weight decay"

    def value(self, cell, decay) -> np.ndarray:
        """tau of `decay` in `cell` (cells: one label, or one per decay), or decay itself."""
        d = np.asarray(decay, dtype=float)
        if self.k is None:
            return d
        cells = np.broadcast_to(np.asarray(cell, dtype=object), d.shape)
        return timescales([self.k.get(str(c), math.nan) for c in cells.ravel()], d.ravel()).reshape(d.shape)

    def x(self, cell, decay) -> np.ndarray:
        return self.axis.x(self.value(cell, decay))

    def label(self, cell: str, decay: float) -> str:
        """'tau 0.25 (decay 0.012)', 'tau ∞ (decay 0)', or 'decay 0.012'."""
        d = "0" if decay <= 0 else f"{decay:.3g}"
        if not self.is_tau:
            return f"decay {d}"
        return f"tau {self.axis.label(float(self.value(cell, decay)))} (decay {d})"

    def interval(self, cell: str, low: float, high: float) -> tuple[float, float]:
        """A decay interval [low, high] in axis units, ends ordered: in tau the ends flip,
        tau_low = B/(lr high D)."""
        a, b = (float(v) for v in self.value(cell, [low, high]))
        return (b, a) if self.is_tau else (a, b)

    def position(self, v: float) -> float | None:
        """Where axis value `v` (tau or decay) is drawn; None where the axis cannot show it (tau 0,
        decay inf, NaN, or the decay-0 end of an axis without decay 0 searched)."""
        if self.is_tau:
            ok = v > 0 and (math.isfinite(v) or (v == math.inf and self.axis.has_inf))
        else:
            ok = math.isfinite(v) and (v > 0 or (v == 0 and self.axis.has_zero))
        return float(self.axis.x(v)) if ok else None

    def bar(self, cell: str, at: float, low: float, high: float, **style) -> dict | None:
        """A horizontal error bar from the decay interval [low, high] around position `at`; a side
        the axis cannot show is left out (the hover text gives the interval in words)."""
        lo, hi = (self.position(v) for v in self.interval(cell, low, high))
        if lo is None and hi is None:
            return None
        return dict(type="data", symmetric=False, array=[max(hi - at, 0.0) if hi is not None else 0.0],
                    arrayminus=[max(at - lo, 0.0) if lo is not None else 0.0], **style)  # fmt: skip

    def update(self, fig: go.Figure, row: int, col: int, title: bool = True) -> None:
        fig.update_xaxes(type="log", title_text=self.title if title else None, row=row, col=col, **self.axis.ticks())


def _hover(cell: str, column: str) -> str:
    return f"{cell}<br>%{{customdata[0]}}<br>{column} %{{y:.4g}}<br>%{{customdata[1]}}<extra></extra>"


def _draw_metric(
    fig: go.Figure,
    trials: pd.DataFrame,
    column: str,
    xs: XScale,
    row: int,
    col: int,
    *,
    colour_of,
    dash_of=lambda cell_rows: "solid",
    name_of,
    shown: set,
    views: _Views | None = None,
) -> None:
    """Lines of per-decay means, one per cell, plus each trial as a faint dot."""
    means = _means(trials, column)
    best = _cell_best(trials, column) if views is not None else {}
    for cell, m in means.groupby("cell", sort=False):
        m = m.iloc[np.argsort(xs.x(cell, m["decay"]), kind="stable")]  # left to right (tau flips decay's order)
        colour, name = colour_of(m), name_of(m)
        seeds = m["count"].to_numpy()
        sd = m["std"].fillna(0).to_numpy() if (seeds > 1).any() else None
        fig.add_trace(go.Scatter(
            x=xs.x(cell, m["decay"]), y=m["mean"], mode="lines+markers", name=name, legendgroup=name,
            showlegend=name not in shown, line=dict(color=colour, dash=dash_of(m), width=2),
            marker=dict(size=5, color=colour),
            error_y=dict(type="data", array=sd, thickness=1, width=2, color=colour) if sd is not None else None,
            customdata=np.column_stack([[xs.label(cell, d) for d in m["decay"]], [f"{c} trials" for c in seeds]]),
            hovertemplate=_hover(cell, f"mean {column}"),
        ), row=row, col=col)  # fmt: skip
        shown.add(name)
        if views is not None:
            views.add(fig, m["mean"], best[cell])
        raw = trials[(trials["cell"] == cell) & np.isfinite(trials[column].to_numpy(dtype=float))]
        if (seeds > 1).any():
            fig.add_trace(go.Scatter(
                x=xs.x(cell, raw["decay"]), y=raw[column], mode="markers", showlegend=False, legendgroup=name,
                marker=dict(size=4, color=colour, opacity=0.35), hoverinfo="skip",
            ), row=row, col=col)  # fmt: skip
            if views is not None:
                views.add(fig, raw[column], best[cell])


def _draw_optima(fig, optima: list[CellOptimum], xs: XScale, row, col, colour_of, shown: set, label: str,
                 views: _Views | None = None, best: dict[str, float] | None = None):
    """Each cell's estimands on its curve: decay* as a star with its interval as a horizontal bar
    (hollow and at the grid edge when censored: a bound, not an estimate), decay_tol as a diamond
    with its interval, and the fitted response curve (dotted) over the searched decays. On a tau
    axis decay* is drawn at tau* = B/(lr decay* D) and decay_tol, the largest decay within delta of
    the best, at the smallest tau within delta."""
    best = best or {}
    star = "tau*" if xs.is_tau else "decay*"
    tol = "tau_tol" if xs.is_tau else "decay_tol"
    for o in optima:
        if not math.isfinite(o.value_at_opt):
            continue
        colour = colour_of(o)
        pct = round(100 * o.level)
        name = f"{label} {star} ({pct}% interval)"
        x = float(xs.x(o.cell, o.decay_opt))
        err = xs.bar(o.cell, x, o.low, o.high, thickness=2, width=5, color=colour) if o.bracketed else None
        note = (f"{star} {_interval_words(xs, o.cell, o.decay_opt, o.low, o.high)}" if o.bracketed
                else f"CENSORED: {_bound_words(xs, o)}<br>{o.reason}")  # fmt: skip
        fig.add_trace(go.Scatter(
            x=[x], y=[o.value_at_opt], mode="markers", name=name, legendgroup=name, showlegend=name not in shown,
            marker=dict(symbol="star" if o.bracketed else "star-open", size=14, color=colour,
                        line=dict(color="black", width=1)),
            error_x=err, hovertemplate=f"{o.cell}: {label}<br>{note}<extra></extra>",
        ), row=row, col=col)  # fmt: skip
        shown.add(name)
        if views is not None:
            views.add(fig, [o.value_at_opt], best.get(o.cell, math.nan))
        _draw_tolerance(fig, o, xs, row, col, colour, f"{label} {tol} (within delta of the best, {pct}% interval)",
                        shown, views, best)  # fmt: skip
        curve_x, ys = local_quadratic(o)
        fig.add_trace(go.Scatter(
            x=xs.x(o.cell, curve_x), y=ys, mode="lines", showlegend=False, legendgroup=name, hoverinfo="skip",
            line=dict(color=colour, width=1.5, dash="dot"),
        ), row=row, col=col)  # fmt: skip
        if views is not None:
            views.add(fig, ys, best.get(o.cell, math.nan))


def _draw_tolerance(fig, o: CellOptimum, xs: XScale, row, col, colour, name, shown: set, views, best) -> None:
    """decay_tol on the fitted curve: a diamond (hollow when censored) with its interval."""
    y = float(o.curve([o.decay_tol])[0])
    if not (math.isfinite(o.decay_tol) and math.isfinite(y)):
        return
    x = float(xs.x(o.cell, o.decay_tol))
    interior = o.tol_kind == "interior"
    err = xs.bar(o.cell, x, o.tol_low, o.tol_high, thickness=1.5, width=4, color=colour)
    words = _interval_words(xs, o.cell, o.decay_tol, o.tol_low, o.tol_high)
    if o.tol_kind == "censored_above":
        words += " (censored: even the largest decay searched is within delta)"
    elif o.tol_kind == "censored_below":
        words += " (censored: only decay 0 is within delta)"
    what = "smallest tau" if xs.is_tau else "largest decay"
    fig.add_trace(go.Scatter(
        x=[x], y=[y], mode="markers", name=name, legendgroup=name, showlegend=name not in shown,
        marker=dict(symbol="diamond" if interior else "diamond-open", size=10, color=colour,
                    line=dict(color="black", width=1)),
        error_x=err,
        hovertemplate=(f"{o.cell}: {what} within delta = {o.delta:g} of the best<br>"
                       f"{'tau_tol' if xs.is_tau else 'decay_tol'} {words}<extra></extra>"),
    ), row=row, col=col)  # fmt: skip
    shown.add(name)
    if views is not None:
        views.add(fig, [y], best.get(o.cell, math.nan))


def _fmt(v: float) -> str:
    return "∞" if v == math.inf else f"{v:.3g}"


def _interval_words(xs: XScale, cell: str, value: float, low: float, high: float) -> str:
    """'0.25 [0.1, 0.5] (decay 0.012 [0.006, 0.03])' on a tau axis; '0.012 [0.006, 0.03]' on decay."""
    decay = f"{_fmt(value)} [{_fmt(low)}, {_fmt(high)}]"
    if not xs.is_tau:
        return decay
    t = float(xs.value(cell, value))
    t_low, t_high = xs.interval(cell, low, high)
    return f"{_fmt(t)} [{_fmt(t_low)}, {_fmt(t_high)}] (decay {decay})"


def _bound_words(xs: XScale, o: CellOptimum) -> str:
    """The one-sided bound of a censored decay*, in the axis's terms: censored below the smallest
    positive decay searched is tau* above its tau, and the other way round."""
    grid = [d for d in o.decays_searched if d > 0]
    if o.kind == "censored_below":
        bound = o.high if math.isfinite(o.high) and o.high > 0 else min(grid, default=math.nan)
        below = True
    else:
        bound = o.low if math.isfinite(o.low) and o.low > 0 else max(grid, default=math.nan)
        below = False
    decay = f"decay* {'<' if below else '>'} {_fmt(bound)}"
    if not xs.is_tau:
        return decay
    return f"tau* {'>' if below else '<'} {_fmt(float(xs.value(o.cell, bound)))} ({decay})"


def local_quadratic(o: CellOptimum, points: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """The fitted response curve (scaling.fit.response) over the searched positive decays."""
    grid = np.array([d for d in o.decays_searched if d > 0])
    xs = np.geomspace(grid.min(), grid.max(), points)
    return xs, o.curve(xs)


# ----------------------------------------------------------------------------- figures


def loss_vs_decay(tables: StudyTables, rfit: ReportFit) -> go.Figure:
    """Base val_loss vs timescale tau (vs decay for tables without lr and batch_tokens): one panel
    per token budget (TPP), one line per size, decay*_loss and decay_tol marked. Opens relative to
    each cell's best loss: sizes differ far more than decays do."""
    return _objective_vs_decay(tables, rfit, ["val_loss"], "Base model: val_loss vs {x}", relative=True)


def plasticity_columns(rfit: ReportFit) -> tuple[str, str]:
    """(objective, gain) the fine-tuning figures draw: (ft_nll, ft_nll_gain) when the fit's
    plasticity objective is ft_nll, else (ft_score, ft_gain)."""
    return ("ft_nll", "ft_nll_gain") if rfit.plasticity == "ft_nll" else ("ft_score", "ft_gain")


def finetune_vs_decay(tables: StudyTables, rfit: ReportFit) -> go.Figure:
    """The plasticity objective (ft_score or ft_nll) and its gain vs timescale tau (or decay), per
    token budget, one line per size; decay*_plastic and decay_tol marked."""
    columns = [c for c in plasticity_columns(rfit) if tables.has(c)]
    what = "held-out NLL" if columns and columns[0].startswith("ft_nll") else "score"
    return _objective_vs_decay(tables, rfit, columns, f"After fine-tuning: {what} and gain vs {{x}}",
                               relative=False)  # fmt: skip


def _objective_vs_decay(tables: StudyTables, rfit: ReportFit, columns: list[str], title: str, relative: bool) -> go.Figure:
    """`title` names the x axis as {x}."""
    trials = tables.trials
    tpps = _tpps(trials)
    xs = XScale(trials)
    colours = size_colours(trials["n_params"])
    rows, cols = len(columns), len(tpps)
    titles = [f"{c} @ {tpp_label(t)}" if rows > 1 else tpp_label(t) for c in columns for t in tpps]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_xaxes=True,
                        horizontal_spacing=0.06, vertical_spacing=0.12 if rows > 1 else 0.0)  # fmt: skip
    shown: set = set()
    views = _Views()
    titles: dict[str, tuple[str, str]] = {}
    for r, column in enumerate(columns, start=1):
        best = _cell_best(trials, column)
        for c, tpp in enumerate(tpps, start=1):
            sub = trials[np.isclose(trials["tpp"], tpp)]
            _draw_metric(fig, sub, column, xs, r, c, colour_of=lambda m: colours[float(m["n_params"].iloc[0])],
                         name_of=lambda m: size_label(float(m["n_params"].iloc[0])), shown=shown, views=views)  # fmt: skip
            if column in ("val_loss", rfit.plasticity):
                opts = [o for o in rfit.optima_for(column) if np.isclose(o.tpp, tpp, rtol=0.02)]
                _draw_optima(fig, opts, xs, r, c, lambda o: colours.get(o.n_params, "black"), shown,
                             OBJECTIVE_NAMES.get(column, "plasticity-optimal"), views, best)  # fmt: skip
            xs.update(fig, r, c, title=r == rows)
        rel = f"{column} {'above' if direction_of(column) == 'min' else 'minus'} the cell's best"
        titles[fig.get_subplot(r, 1).yaxis.plotly_name] = (LABELS.get(column, column), rel)
        fig.update_yaxes(title_text=LABELS.get(column, column), row=r, col=1)
    fig.update_layout(**base_layout(title.format(x=xs.versus), height=PANEL_HEIGHT * rows + 40))
    views.install(fig, titles, relative)
    return fig


def tasks_vs_decay(tables: StudyTables, rfit: ReportFit) -> go.Figure:
    """Per task: the score after fine-tuning and the gain (after - before) vs timescale tau (or
    decay), one line per cell."""
    trials = tables.trials.copy()
    tasks = list(tables.tasks)
    xs = XScale(trials)
    colours = size_colours(trials["n_params"])
    dashes = tpp_dashes(trials["tpp"])
    has_before = {t: f"ft_{t}_before" in trials.columns for t in tasks}
    titles = []
    for t in tasks:
        titles += [f"{t}: score after fine-tuning", f"{t}: gain (after - before)" if has_before[t] else f"{t}: no before score"]
    fig = make_subplots(rows=len(tasks), cols=2, subplot_titles=titles, horizontal_spacing=0.08,
                        vertical_spacing=min(0.12, 0.3 / max(len(tasks) - 1, 1)))  # fmt: skip
    shown: set = set()
    style = dict(colour_of=lambda m: colours[float(m["n_params"].iloc[0])],
                 dash_of=lambda m: dashes[float(m["tpp"].iloc[0])], name_of=lambda m: str(m["cell"].iloc[0]))  # fmt: skip
    for r, task in enumerate(tasks, start=1):
        after = f"ft_{task}_after"
        _draw_metric(fig, trials, after, xs, r, 1, shown=shown, **style)
        fig.update_yaxes(title_text=f"{task} after", row=r, col=1)
        if has_before[task]:
            trials[f"_gain_{task}"] = trials[after] - trials[f"ft_{task}_before"]
            _draw_metric(fig, trials, f"_gain_{task}", xs, r, 2, shown=shown, **style)
            fig.update_yaxes(title_text=f"{task} gain", row=r, col=2)
        for c in (1, 2):
            xs.update(fig, r, c, title=r == len(tasks))
    fig.update_layout(**base_layout(f"Per task: score after fine-tuning and its gain vs {xs.versus}",
                                    height=PANEL_HEIGHT * len(tasks) + 40))  # fmt: skip
    return fig


def pareto_fronts(tables: StudyTables, rfit: ReportFit) -> go.Figure:
    """Per cell: every trial in (val_loss, plasticity objective: ft_score or ft_nll), coloured by
    decay; the non-dominated front (lower loss, better plasticity) joined; the loss-optimal and
    plasticity-optimal trials circled."""
    trials = tables.trials
    plastic = plasticity_columns(rfit)[0]
    lower = direction_of(plastic) == "min"
    sign = -1.0 if lower else 1.0  # pareto_front maximises its second objective
    cells = list(tables.cells)
    axis = DecayAxis(trials["decay"])
    rows, cols = _grid(len(cells), 3)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=cells, horizontal_spacing=0.07,
                        vertical_spacing=min(0.14, 0.35 / max(rows - 1, 1)))  # fmt: skip
    shown: set = set()
    for i, cell in enumerate(cells):
        r, c = _pos(i, cols)
        t = trials[(trials["cell"] == cell)]
        t = t[np.isfinite(t["val_loss"].to_numpy(dtype=float)) & np.isfinite(t[plastic].to_numpy(dtype=float))]
        if t.empty:
            continue
        front = t.iloc[pareto_front(t["val_loss"].to_numpy(), sign * t[plastic].to_numpy())].sort_values("val_loss")
        fig.add_trace(go.Scatter(
            x=front["val_loss"], y=front[plastic], mode="lines", name="Pareto front", legendgroup="front",
            showlegend="front" not in shown, line=dict(color="#888", width=1.5, dash="dot"), hoverinfo="skip",
        ), row=r, col=c)  # fmt: skip
        shown.add("front")
        fig.add_trace(go.Scatter(
            x=t["val_loss"], y=t[plastic], mode="markers", showlegend=False,
            marker=dict(size=8, color=axis.log10(t["decay"]), coloraxis="coloraxis", line=dict(width=0.5, color="#333")),
            customdata=np.column_stack([[axis.label(d) for d in t["decay"]], t["trial_number"]]),
            hovertemplate=f"{cell}, trial %{{customdata[1]}}<br>decay %{{customdata[0]}}<br>"
                          f"val_loss %{{x:.4g}}<br>{plastic} %{{y:.4g}}<extra></extra>",
        ), row=r, col=c)  # fmt: skip
        # the circle is drawn larger than the diamond so both show when one trial is both optima
        for key, idx, symbol, size in (("val_loss", t["val_loss"].idxmin(), "circle-open", 24),
                                       (plastic, t[plastic].idxmin() if lower else t[plastic].idxmax(),
                                        "diamond-open", 15)):  # fmt: skip
            name = f"{OBJECTIVE_NAMES[key]} trial"
            p = t.loc[idx]
            fig.add_trace(go.Scatter(
                x=[p["val_loss"]], y=[p[plastic]], mode="markers", name=name, legendgroup=name,
                showlegend=name not in shown,
                marker=dict(symbol=symbol, size=size, color=OBJECTIVE_COLOURS[key], line=dict(width=2.5)),
                hovertemplate=f"{name}: decay {axis.label(p['decay'])}<extra></extra>",
            ), row=r, col=c)  # fmt: skip
            shown.add(name)
        fig.update_xaxes(title_text="val_loss (lower is better)", row=r, col=c)
        if c == 1:
            fig.update_yaxes(title_text=f"{plastic} ({'lower' if lower else 'higher'} is better)", row=r, col=c)
    fig.update_layout(**base_layout(
        f"Two objectives per cell: base loss vs {'held-out NLL' if lower else 'score'} after fine-tuning", height=PANEL_HEIGHT * rows + 40,
        coloraxis=dict(colorscale=DECAY_SCALE, colorbar=dict(title="decay", thickness=12, **axis.colour_ticks())),
        legend=_foot_legend(), margin=dict(l=60, r=20, t=70, b=100),
    ))  # fmt: skip
    return fig


def pareto_front(loss: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Indices of the trials no other trial beats on both objectives (lower loss AND higher score,
    at least one strictly)."""
    loss, score = np.asarray(loss, float), np.asarray(score, float)
    keep = []
    for i in range(loss.size):
        dominated = (loss <= loss[i]) & (score >= score[i]) & ((loss < loss[i]) | (score > score[i]))
        if not dominated.any():
            keep.append(i)
    return np.asarray(keep, dtype=int)


def decay_laws(tables: StudyTables, rfit: ReportFit) -> go.Figure:
    """decay* vs N and vs TPP for both objectives with the fitted laws and their prediction bands,
    the Power Lines timescale law, and the recommendation for the next budget (an extrapolation)."""
    trials = tables.trials
    budget = rfit.next_budget
    rec = rfit.recommendation
    objectives = [o for o in ("val_loss", rfit.plasticity) if o and rfit.optima_for(o)]
    n_cells = sorted({o.n_params for o in rfit.optima})
    tpps = _tpps(trials)
    pct = f"{round(100 * rfit.level)}%"
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08, subplot_titles=[
        "decay* vs N", "decay* vs TPP", "tau* vs TPP (Power Lines)"])  # fmt: skip
    all_decays = [o.decay_opt for o in rfit.optima] + list(trials["decay"])
    axis = DecayAxis(all_decays)
    dashes = tpp_dashes(tpps)
    n_grid = np.geomspace(min(n_cells) / 1.5, budget.n_params * 1.5, 15)  # laws are straight in log-log
    t_grid = np.geomspace(min(tpps) / 1.5, max(tpps) * 1.5, 15)
    shown: set = set()
    y_values: list[float] = []
    for objective in objectives:
        colour = OBJECTIVE_COLOURS.get(objective, OBJECTIVE_COLOURS["ft_score"])
        name = OBJECTIVE_NAMES.get(objective, "plasticity-optimal")
        law = rfit.law(objective)
        if law is not None:
            for tpp in tpps:
                preds = [law.predict(n, n * tpp, level=rfit.level) for n in n_grid]
                band = np.isclose(tpp, budget.tpp)
                _law_line(fig, n_grid, preds, colour, dashes[tpp], f"{name} law", shown, 1, 1, band,
                          f"{law.formula}<br>at {tpp:.3g} TPP")  # fmt: skip
                if band:
                    y_values += [p.low for p in preds] + [p.high for p in preds]
            for j, n in enumerate(n_cells):
                preds = [law.predict(n, n * t, level=rfit.level) for t in t_grid]
                band = j == len(n_cells) - 1
                opacity = 0.35 + 0.65 * (j + 1) / len(n_cells)
                _law_line(fig, t_grid, preds, colour, "solid", f"{name} law", shown, 1, 2, band,
                          f"{law.formula}<br>at N = {human(n)}", opacity=opacity)  # fmt: skip
        optima = rfit.optima_for(objective)
        _optima_points(fig, optima, "n_params", "decay_opt", axis, colour, f"{name} decay* per cell", shown, 1, 1)
        _optima_points(fig, optima, "tpp", "decay_opt", axis, colour, f"{name} decay* per cell", shown, 1, 2)
        y_values += [v for o in optima for v in (o.decay_opt, o.low, o.high) if math.isfinite(v) and v > 0]
        choice = None
        if rec is not None:
            choice = rec.decay_loss_opt if objective == "val_loss" else rec.decay_plastic_opt
        if choice is not None and choice.value is not None and math.isfinite(choice.high):
            label = f"recommended ({name}) for the next budget"
            for col, x in ((1, budget.n_params), (2, budget.tpp)):
                fig.add_trace(go.Scatter(
                    x=[x], y=[choice.value], mode="markers", name=label, legendgroup=label,
                    showlegend=label not in shown,
                    marker=dict(symbol="star-diamond", size=16, color=colour, line=dict(color="black", width=1.5)),
                    error_y=dict(type="data", symmetric=False, array=[choice.high - choice.value],
                                 arrayminus=[choice.value - choice.low], color=colour, thickness=2.5, width=8),
                    hovertemplate=(f"{budget.describe()}<br>{name} decay {choice.value:.3g} "
                                   f"[{choice.low:.3g}, {choice.high:.3g}] ({pct} PI, {choice.label})<extra></extra>"),
                ), row=1, col=col)  # fmt: skip
                shown.add(label)
            y_values += [choice.low, choice.high]
        tau_law = rfit.tau_law(objective)
        tau_cells = [o for o in optima if math.isfinite(o.tau_opt) and o.tau_opt > 0]
        if tau_law is not None:
            preds = [tau_law.predict(budget.largest_n, budget.largest_n * t, level=rfit.level) for t in t_grid]
            _law_line(fig, t_grid, preds, colour, "solid", f"{name} law", shown, 1, 3, True, tau_law.formula)
        if tau_cells:
            fig.add_trace(go.Scatter(
                x=[o.tpp for o in tau_cells], y=[o.tau_opt for o in tau_cells], mode="markers",
                name=f"{name} decay* per cell", legendgroup=f"{name} decay* per cell", showlegend=False,
                marker=dict(size=9, color=colour, symbol=["circle" if o.bracketed else "circle-open" for o in tau_cells],
                            line=dict(width=1.5, color=colour)),
                customdata=[o.cell for o in tau_cells],
                hovertemplate="%{customdata}<br>tau* %{y:.3g}<extra></extra>",
            ), row=1, col=3)  # fmt: skip
    # the extrapolation region: beyond the largest N any law is a forecast
    fig.add_vrect(x0=budget.largest_n, x1=budget.n_params * 1.5, fillcolor="#f2c14e", opacity=0.15, line_width=0,
                  row=1, col=1)  # fmt: skip
    fig.add_annotation(
        x=math.log10(budget.n_params), y=0.99, xref="x", yref="y domain", yanchor="top", showarrow=False,
        text=f"extrapolation:<br>{budget.factor:g}x largest N<br>at {budget.tpp:.3g} TPP", font=dict(size=10, color="#7a5a00"),
    )  # fmt: skip
    has_law = any(rfit.law(o) for o in objectives)
    if not any(rfit.tau_law(o) for o in objectives) and not any(
            math.isfinite(o.tau_opt) and o.tau_opt > 0 for o in rfit.optima):  # fmt: skip
        # an invisible point keeps the empty panel's axes alive (plotly drops axes without traces)
        fig.add_trace(go.Scatter(x=[budget.tpp], y=[1.0], mode="markers", marker=dict(opacity=0), showlegend=False,
                                 hoverinfo="skip"), row=1, col=3)  # fmt: skip
        fig.add_annotation(x=0.5, y=0.5, xref="x domain", yref="y domain", row=1, col=3, showarrow=False,
                           text="no finite tau* to draw<br>(decay* = 0 means tau = inf)", font=dict(color="#777"))  # fmt: skip
    finite = [v for v in y_values if math.isfinite(v) and v > 0]
    lo, hi = (min(finite), max(finite)) if finite else (axis.low, axis.high)
    if any(o.decay_opt <= 0 for o in rfit.optima):  # drawn at the '0' tick below the log range
        lo = min(lo, axis.zero_at)
    for col in (1, 2):
        fig.update_yaxes(type="log", row=1, col=col, range=[math.log10(lo) - 0.3, math.log10(hi) + 0.3],
                         **axis.ticks(lo, hi))  # fmt: skip
    fig.update_yaxes(title_text="decay*", row=1, col=1)
    taus = [o.tau_opt for o in rfit.optima if math.isfinite(o.tau_opt) and o.tau_opt > 0]
    fig.update_yaxes(type="log", title_text="tau* (fraction of the run)", row=1, col=3,
                     **(log_ticks(min(taus) / 3, max(taus) * 3) if taus else
                        dict(range=[-1, 1], tickvals=[0.1, 1, 10], ticktext=["0.1", "1", "10"])))  # fmt: skip
    fig.update_xaxes(type="log", title_text="N (non-embedding parameters)", row=1, col=1,
                     **log_ticks(n_grid[0], n_grid[-1]))  # fmt: skip
    fig.update_xaxes(type="log", title_text="TPP (tokens per parameter)", row=1, col=2, **log_ticks(t_grid[0], t_grid[-1]))
    fig.update_xaxes(type="log", title_text="TPP", row=1, col=3, **log_ticks(t_grid[0], t_grid[-1]))
    title = (f"Decay laws (lines), {pct} prediction bands, and the {budget.describe()}" if has_law else
             "No decay law could be fitted (see the caveats): per-cell optima only")  # fmt: skip
    fig.update_layout(**base_layout(
        title,
        height=PANEL_HEIGHT + 150, legend=_foot_legend(), margin=dict(l=60, r=20, t=70, b=130),
    ))  # fmt: skip
    return fig


def _law_line(fig, x, preds, colour, dash, name, shown: set, row, col, band: bool, hover: str, opacity=1.0):
    if band:
        fig.add_trace(go.Scatter(
            x=np.concatenate([x, x[::-1]]), y=[p.high for p in preds] + [p.low for p in preds][::-1],
            fill="toself", fillcolor=_rgba(colour, 0.12), line=dict(width=0), showlegend=False,
            legendgroup=name, hoverinfo="skip",
        ), row=row, col=col)  # fmt: skip
    fig.add_trace(go.Scatter(
        x=x, y=[p.value for p in preds], mode="lines", name=name, legendgroup=name, showlegend=name not in shown,
        line=dict(color=colour, dash=dash, width=2), opacity=opacity,
        hovertemplate=f"{hover}<br>%{{x:.3g}} -> %{{y:.3g}}<extra></extra>",
    ), row=row, col=col)  # fmt: skip
    shown.add(name)


def _optima_points(fig, optima, x_field, y_field, axis: DecayAxis, colour, name, shown: set, row, col):
    if not optima:
        return
    ys = np.array([getattr(o, y_field) for o in optima], dtype=float)
    lows = np.array([o.low if o.bracketed and o.low > 0 else np.nan for o in optima])
    highs = np.array([o.high if o.bracketed and math.isfinite(o.high) else np.nan for o in optima])
    y = axis.x(ys)
    notes = [f"{o.cell}<br>decay* {axis.label(o.decay_opt)}" + (f" [{o.low:.3g}, {o.high:.3g}]" if o.bracketed
             else f"<br>NOT BRACKETED: {o.reason}") for o in optima]  # fmt: skip
    fig.add_trace(go.Scatter(
        x=[getattr(o, x_field) for o in optima], y=y, mode="markers", name=name, legendgroup=name,
        showlegend=name not in shown,
        marker=dict(size=9, color=colour, symbol=["circle" if o.bracketed else "circle-open" for o in optima],
                    line=dict(width=1.5, color=colour)),
        error_y=dict(type="data", symmetric=False, array=np.nan_to_num(highs - y), arrayminus=np.nan_to_num(y - lows),
                     color=colour, thickness=1.2, width=3),
        customdata=notes, hovertemplate="%{customdata}<extra></extra>",
    ), row=row, col=col)  # fmt: skip
    shown.add(name)


def loss_surface(tables: StudyTables, rfit: ReportFit) -> go.Figure:
    """The fitted L(N, D) through each cell's loss at its optimum, and the fit's log residuals."""
    surface = rfit.fit.surface
    cells = [o for o in rfit.optima_for("val_loss") if math.isfinite(o.value_at_opt)]
    colours = tpp_colours([o.tpp for o in cells])
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=[
        "val_loss at each cell's optimum, and L(N, D = TPP N)", "residual ln(observed / fitted)"])  # fmt: skip
    n_grid = np.geomspace(min(o.n_params for o in cells) / 1.3, max(o.n_params for o in cells) * 1.3, 60)
    for tpp, colour in colours.items():
        these = [o for o in cells if np.isclose(o.tpp, tpp, rtol=1e-4)]
        name = tpp_label(tpp)
        fig.add_trace(go.Scatter(
            x=n_grid, y=surface.predict(n_grid, n_grid * tpp), mode="lines", name=f"fit, {name}", legendgroup=name,
            line=dict(color=colour, width=2), hovertemplate=f"{name}: N %{{x:.3g}} -> L %{{y:.4g}}<extra></extra>",
        ), row=1, col=1)  # fmt: skip
        observed = np.array([o.value_at_opt for o in these])
        fitted = surface.predict([o.n_params for o in these], [o.n_tokens for o in these])
        for col, y in ((1, observed), (2, np.log(observed / fitted))):
            fig.add_trace(go.Scatter(
                x=[o.n_params for o in these], y=y, mode="markers", name=f"cells, {name}", legendgroup=name,
                showlegend=col == 1,
                marker=dict(size=10, color=colour, symbol=["circle" if o.bracketed else "circle-open" for o in these],
                            line=dict(width=1.5, color=colour)),
                customdata=[o.cell for o in these], hovertemplate="%{customdata}: %{y:.4g}<extra></extra>",
            ), row=1, col=col)  # fmt: skip
    fig.add_hline(y=0, line=dict(color="#999", width=1), row=1, col=2)
    params = surface.params()
    text = "L = E + A N<sup>-alpha</sup> + B D<sup>-beta</sup>:  " + ",  ".join(
        f"{k} = {v:.3g}" + (f" [{surface.interval(k)[0]:.3g}, {surface.interval(k)[1]:.3g}]" if surface.intervals else "")
        for k, v in params.items()
    )  # fmt: skip
    fig.update_xaxes(type="log", title_text="N (non-embedding parameters)", **log_ticks(n_grid[0], n_grid[-1]))
    fig.update_yaxes(title_text="val_loss (nats/token)", row=1, col=1)
    fig.update_yaxes(title_text="ln(observed / fitted)", tickformat=".2~g", row=1, col=2)
    fig.update_layout(**base_layout(
        f"Loss surface through {surface.n_points} cells<br><span style='font-size:11px'>{text}</span>",
        height=PANEL_HEIGHT + 70, margin=dict(l=60, r=20, t=105, b=50)))  # fmt: skip
    return fig


def mechanisms(tables: StudyTables, rfit: ReportFit) -> go.Figure:
    """probe_acc, qk_rank and the train-val gap vs timescale tau (or decay), one line per cell."""
    trials = tables.trials
    columns = [c for c in MECHANISMS if tables.has(c)]
    xs = XScale(trials)
    colours = size_colours(trials["n_params"])
    dashes = tpp_dashes(trials["tpp"])
    fig = make_subplots(rows=1, cols=len(columns), subplot_titles=[LABELS[c] for c in columns], horizontal_spacing=0.07)
    shown: set = set()
    for c, column in enumerate(columns, start=1):
        _draw_metric(fig, trials, column, xs, 1, c, colour_of=lambda m: colours[float(m["n_params"].iloc[0])],
                     dash_of=lambda m: dashes[float(m["tpp"].iloc[0])], name_of=lambda m: str(m["cell"].iloc[0]),
                     shown=shown)  # fmt: skip
        xs.update(fig, 1, c)
        fig.update_yaxes(title_text=column, row=1, col=c)
    fig.update_layout(**base_layout(f"Mechanisms vs {xs.versus}", height=PANEL_HEIGHT + 20))
    return fig


def training_curves(tables: StudyTables, rfit: ReportFit) -> go.Figure:
    """Training loss (lines) and validation loss (dots) against tokens, one line per trial,
    coloured by decay; one panel per cell."""
    curves = curves_with_decay(tables)
    cells = [c for c in tables.cells if c in set(curves["cell"])]
    axis = DecayAxis(tables.trials["decay"])
    rows, cols = _grid(len(cells), 3)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=cells, horizontal_spacing=0.06,
                        vertical_spacing=min(0.12, 0.35 / max(rows - 1, 1)))  # fmt: skip
    span = (math.log10(axis.zero_at), math.log10(axis.high)) if axis.has_zero else (math.log10(axis.low), math.log10(axis.high))
    x_col = "tokens" if "tokens" in curves.columns and curves["tokens"].notna().any() else "step"

    def colour(decay: float) -> str:
        t = (float(axis.log10(decay)) - span[0]) / (span[1] - span[0]) if span[1] > span[0] else 0.5
        return sample_colorscale(DECAY_SCALE, [min(max(t, 0.0), 1.0)])[0]

    for i, cell in enumerate(cells):
        r, c = _pos(i, cols)
        for (number, decay), g in curves[curves["cell"] == cell].groupby(["trial_number", "decay"], sort=True):
            col = colour(decay)
            hover = f"{cell}, trial {number}, decay {axis.label(decay)}<br>{x_col} %{{x:.3g}}<br>"
            fig.add_trace(go.Scatter(
                x=g[x_col], y=g["train_loss"], mode="lines", showlegend=False, line=dict(color=col, width=1.2),
                opacity=0.85, hovertemplate=hover + "train_loss %{y:.4g}<extra></extra>",
            ), row=r, col=c)  # fmt: skip
            if "val_loss" in g.columns and g["val_loss"].notna().any():
                v = g[g["val_loss"].notna()]
                fig.add_trace(go.Scatter(
                    x=v[x_col], y=v["val_loss"], mode="markers", showlegend=False,
                    marker=dict(color=col, size=5, line=dict(width=0.5, color="#333")),
                    hovertemplate=hover + "val_loss %{y:.4g}<extra></extra>",
                ), row=r, col=c)  # fmt: skip
        fig.update_xaxes(title_text=x_col if r == rows else None, row=r, col=c)
        if c == 1:
            fig.update_yaxes(title_text="loss (nats/token)", row=r, col=c)
    # an invisible trace carries the decay colour bar
    fig.add_trace(go.Scatter(
        x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip",
        marker=dict(colorscale=DECAY_SCALE, cmin=span[0], cmax=span[1], color=[span[0]], showscale=True,
                    colorbar=dict(title="decay", thickness=12, **axis.colour_ticks())),
    ), row=1, col=1)  # fmt: skip
    fig.update_yaxes(type="log")
    fig.update_layout(**base_layout("Training curves: train_loss (lines) and val_loss (dots), coloured by decay",
                                    height=PANEL_HEIGHT * rows + 40))  # fmt: skip
    return fig


def _foot_legend() -> dict:
    """A horizontal legend at the foot of the figure, below the axis titles (the layout must leave
    a bottom margin for it)."""
    return dict(orientation="h", x=0.0, xanchor="left", y=0.0, yanchor="bottom", yref="container",
                font=dict(size=11))


def _rgba(hex_colour: str, alpha: float) -> str:
    if hex_colour.startswith("rgb"):
        return hex_colour.replace("rgb(", "rgba(").replace(")", f", {alpha})")
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r}, {g}, {b}, {alpha})"

