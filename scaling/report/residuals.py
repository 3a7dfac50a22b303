"""The loss surface's goodness of fit: log residuals of each cell against the fitted loss and
against TPP, with the fit's RMS band and its diagnostic warnings."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from scaling.report.analysis import ReportFit
from scaling.report.data import StudyTables
from scaling.report.style import PANEL_HEIGHT, base_layout, size_colours, size_label


def surface_residuals(tables: StudyTables, rfit: ReportFit) -> go.Figure:
    """ln(observed / fitted) at every cell used by the surface, against fitted loss and TPP."""
    surface = rfit.fit.surface
    cells = [o for o in rfit.optima_for("val_loss") if math.isfinite(o.value_at_opt)]
    fitted = surface.predict([o.n_params for o in cells], [o.n_tokens for o in cells])
    resid = np.log(np.array([o.value_at_opt for o in cells]) / fitted)
    rms = surface.rms_log_residual if math.isfinite(surface.rms_log_residual) else float(np.sqrt(np.mean(resid**2)))
    colours = size_colours([o.n_params for o in cells])
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=["against the fitted loss", "against tokens per parameter"])  # fmt: skip
    shown: set[float] = set()
    for o, f, r in zip(cells, fitted, resid):
        for col, x in ((1, f), (2, o.tpp)):
            fig.add_trace(go.Scatter(
                x=[x], y=[r], mode="markers", name=size_label(o.n_params), legendgroup=size_label(o.n_params),
                showlegend=col == 1 and o.n_params not in shown,
                marker=dict(size=9, color=colours[o.n_params]),
                hovertemplate=f"{o.cell}: ln(obs/fit) %{{y:.4f}}<extra></extra>",
            ), row=1, col=col)  # fmt: skip
        shown.add(o.n_params)
    for col in (1, 2):
        fig.add_hline(y=0, line=dict(color="#999", width=1), row=1, col=col)
        for sign in (-1, 1):
            fig.add_hline(y=sign * rms, line=dict(color="#bbb", width=1, dash="dot"), row=1, col=col)
    fig.update_xaxes(title_text="fitted val_loss", row=1, col=1)
    fig.update_xaxes(title_text="TPP (D / N)", type="log", row=1, col=2)
    fig.update_yaxes(title_text="ln(observed / fitted)", tickformat=".2~g")
    notes = f"RMS {rms:.4f} (dotted), max |r| {np.max(np.abs(resid)):.4f}"
    if surface.warnings:
        notes += "<br>" + "<br>".join(surface.warnings)
    fig.update_layout(**base_layout(
        f"Loss-surface residuals, {len(cells)} cells<br><span style='font-size:11px'>{notes}</span>",
        height=PANEL_HEIGHT + 40 + 14 * len(surface.warnings), margin=dict(l=60, r=20, t=110, b=50)))  # fmt: skip
    return fig
