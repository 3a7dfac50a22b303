"""Assemble the report: decide which figures the study supports, render them as divs on one
self-contained HTML page (plotly.js inline once; no network needed to open it)."""

from __future__ import annotations

import datetime as _dt
import html
import math
from dataclasses import dataclass
from typing import Callable

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from scaling.fit.table import human
from scaling.report import figures
from scaling.report.analysis import ReportFit
from scaling.report.data import MECHANISMS, StudyTables
from scaling.report.residuals import surface_residuals
from scaling.report.snr import snr_html
from scaling.report.summary import Summary, decay_ratios, plasticity_name, summarise, surface_reason

PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "svg"}}


@dataclass(frozen=True)
class Section:
    """One figure of the report, or the reason it is missing."""

    id: str
    title: str
    caption: str
    figure: go.Figure | None
    missing: str | None = None


@dataclass(frozen=True)
class RenderedReport:
    html: str
    figure_ids: tuple[str, ...]  # the figures drawn, in page order
    summary: Summary


def _versus(t: StudyTables) -> str:
    """What the per-cell curve figures are drawn against: figures.XScale decides, from the table."""
    return figures.XScale(t.trials).versus


def _x_words(t: StudyTables) -> str:
    """The x axis of the per-cell curve figures, in words for their captions."""
    if not figures.XScale(t.trials).is_tau:
        return ("x: weight decay on a log axis (decay 0 is drawn a decade below the smallest positive decay, "
                "labelled 0): the table does not give every trial a positive lr, batch_tokens and n_tokens to "
                "compute the timescale from.")  # fmt: skip
    return ("x: the AdamW timescale tau = B/(lr decay D) of each trial (Bergsma et al. 2025, \"Power Lines\"; "
            "B the batch in tokens, lr the peak learning rate, D the run's tokens: the timescale as a fraction "
            "of the run, the quantity the study's tau grid fixes), on a log axis. tau grows to the right, so more "
            "decay is to the left; decay 0 is tau = ∞, drawn a decade beyond the largest finite tau. On a timescale "
            "grid the sizes of one token budget run different decays at the same tau, which this axis lines up; "
            "hover text gives both tau and decay.")  # fmt: skip


def _estimand_words(t: StudyTables, objective: str) -> str:
    if figures.XScale(t.trials).is_tau:
        star, tol, where = "tau*", "tau_tol", "the smallest tau (largest decay)"
    else:
        star, tol, where = "decay*", "decay_tol", "the largest decay"
    return (f"Stars: each cell's {objective} decay*, the optimum of its fitted response curve (dotted; plateau, "
            f"optional dip, wall; docs/fitting.md), drawn at {star} with its interval; a hollow star is censored "
            f"(decay* lies beyond the decays searched: it marks the grid edge, and its hover text gives the bound). "
            f"Diamonds: {tol}, {where} whose fitted value is within delta (in the objective's units, "
            "docs/fitting.md) of the cell's best, with its interval (hollow: censored).")  # fmt: skip


def _loss_caption(t: StudyTables, f: ReportFit) -> str:
    return ("Mean val_loss over trials at each decay (dots: single trials; bars: sd over seeds), one line per size, "
            "one panel per token budget, drawn relative to each cell's best mean loss so the curves' shapes can be "
            "compared (the buttons switch to the measured values). "
            f"{_x_words(t)} {_estimand_words(t, 'loss-optimal')}")  # fmt: skip


def _finetune_title(t: StudyTables, f: ReportFit) -> str:
    if figures.plasticity_columns(f)[0] == "ft_nll":
        return f"Fine-tuned held-out NLL and its gain vs {_versus(t)}"
    return f"Fine-tuned score and fine-tuning gain vs {_versus(t)}"


def _finetune_caption(t: StudyTables, f: ReportFit) -> str:
    if figures.plasticity_columns(f)[0] == "ft_nll":
        what = ("ft_nll, the study's plasticity objective, is the mean held-out NLL (nats per target token) after "
                "fine-tuning over the study's tasks, lower is better; ft_nll_gain is the NLL before fine-tuning minus "
                "after.")  # fmt: skip
    else:
        what = ("ft_score is the mean score after fine-tuning over the study's tasks; ft_gain is that score minus "
                "the same score before fine-tuning.")  # fmt: skip
    return (f"{what} {_x_words(t)} {_estimand_words(t, 'plasticity-optimal')} The buttons switch to values "
            "relative to each cell's best.")  # fmt: skip


def _finetune_missing(t: StudyTables, f: ReportFit) -> str | None:
    columns = figures.plasticity_columns(f)
    return None if any(t.has(c) for c in columns) else f"no {' or '.join(columns)} column"


def _pareto_caption(t: StudyTables, f: ReportFit) -> str:
    plastic = figures.plasticity_columns(f)[0]
    best = "the lowest fine-tuned held-out NLL" if plastic == "ft_nll" else "the highest fine-tuned score"
    return (f"Every trial in (base val_loss, {plastic}), coloured by decay. The dotted line joins the trials no other "
            "trial beats on both objectives; circled: the trial with the lowest base loss (loss-optimal) and the one "
            f"with {best} (plasticity-optimal).")  # fmt: skip


def _pareto_missing(t: StudyTables, f: ReportFit) -> str | None:
    plastic = figures.plasticity_columns(f)[0]
    return None if t.has(plastic) else f"no {plastic} column"


Text = str | Callable[[StudyTables, ReportFit], str]  # a title or caption, or one made from the study

# (id, title, caption, can draw?, figure function)
_SPECS: list[tuple[str, Text, Text, Callable[[StudyTables, ReportFit], str | None], Callable]] = [
    ("loss-vs-decay", lambda t, f: f"Base loss vs {_versus(t)}", _loss_caption, lambda t, f: None,
     figures.loss_vs_decay),
    ("finetune-vs-decay", _finetune_title, _finetune_caption, _finetune_missing, figures.finetune_vs_decay),
    ("tasks-vs-decay", "Per task",
     lambda t, f: ("Each task's score after fine-tuning and its gain, one line per cell (colour: size; dash: token "
                   f"budget). {_x_words(t)}"),
     lambda t, f: None if t.tasks else "no ft_<task>_after columns", figures.tasks_vs_decay),
    ("pareto", "Two objectives: the Pareto front of each cell", _pareto_caption, _pareto_missing,
     figures.pareto_fronts),
    ("decay-laws", "How decay* moves with N and D, and the next budget",
     "Dots: per-cell decay* for each objective (hollow: censored, beyond the decays searched; bars: per-cell interval). Lines: the "
     "fitted decay laws; bands: their prediction intervals for a new cell. The shaded region is beyond the "
     "largest N trained: the diamond star there is the recommendation for the next budget, an extrapolation. "
     "Right: the Power Lines timescale tau* = B/(lr decay* D) against TPP (Bergsma et al. 2025).",
     lambda t, f: None if f.optima else "no per-cell optimum could be located", figures.decay_laws),
    ("loss-surface", "Loss surface",
     "L(N, D) = E + A N^-alpha + B D^-beta (Chinchilla approach 3, Huber on log residuals) fitted through each "
     "cell's val_loss at its loss-optimal decay; right: log residuals of that fit.",
     lambda t, f: None if f.fit is not None and f.fit.surface is not None else f"the loss surface could not be fitted ({surface_reason(f)})",
     figures.loss_surface),
    ("surface-residuals", "Loss-surface residuals", "Goodness of fit of the loss surface: RMS, worst cell, warnings.",
     lambda t, f: None if f.fit is not None and f.fit.surface is not None else "no loss surface", surface_residuals),
    ("mechanisms", "Mechanisms",
     lambda t, f: ("Linear-probe accuracy on frozen hidden states, effective rank of the attention query-key "
                   f"product, and the gap between held-out and training loss; one line per cell. {_x_words(t)}"),
     lambda t, f: None if any(t.has(c) for c in MECHANISMS) else "no probe_acc, qk_rank or gap column",
     figures.mechanisms),
    ("curves", "Training curves",
     "Training loss of every trial against tokens seen (lines) and validation loss where evaluated (dots), "
     "coloured by decay; one panel per cell.",
     lambda t, f: None if figures.curves_with_decay(t) is not None else "no curves.csv (or none matching the trials)",
     figures.training_curves),
]  # fmt: skip


def sections(tables: StudyTables, rfit: ReportFit) -> list[Section]:
    out = []
    for sid, title, caption, why_not, draw in _SPECS:
        title = title(tables, rfit) if callable(title) else title
        caption = caption(tables, rfit) if callable(caption) else caption
        reason = why_not(tables, rfit)
        if reason is None:
            out.append(Section(sid, title, caption, draw(tables, rfit)))
        else:
            out.append(Section(sid, title, caption, None, reason))
    return out


def render(tables: StudyTables, rfit: ReportFit, *, title: str | None = None) -> RenderedReport:
    summary = summarise(tables, rfit)
    parts = sections(tables, rfit)
    name = title or _study_name(tables)
    body = [
        f"<header><h1>{_e(name)}</h1><p class='meta'>{_e(_meta(tables))}</p></header>",
        _summary_html(summary),
        _optima_table(tables, rfit),
        snr_html(tables.trials),
        _toc(parts),
    ]
    drawn = []
    for s in parts:
        body.append(f"<section id='{s.id}'><h2>{_e(s.title)}</h2>")
        if s.figure is not None:
            # 9.4e-4 rather than plotly's SI '940µ', which reads as a unit on a loss gap
            s.figure.update_xaxes(exponentformat="e").update_yaxes(exponentformat="e")
            div = s.figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{s.id}", config=PLOT_CONFIG)
            body.append(f"<p class='caption'>{_e(s.caption)}</p><div class='figure' data-figure='{s.id}'>{div}</div>")
            drawn.append(s.id)
        else:
            body.append(f"<p class='missing'>Not drawn: {_e((s.missing or '').rstrip('.'))}.</p>")
        body.append("</section>")
    page = _PAGE.format(title=_e(name), css=_CSS, plotlyjs=get_plotlyjs(), body="\n".join(body))
    return RenderedReport(html=page, figure_ids=tuple(drawn), summary=summary)


def _study_name(tables: StudyTables) -> str:
    t = tables.trials
    if "study" in t.columns and t["study"].notna().any():
        return f"Weight decay study: {t['study'].dropna().iloc[0]}"
    return "Weight decay study"


def _meta(tables: StudyTables) -> str:
    from scaling import __version__

    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"{tables.source} · report made {when} by scaling {__version__}"


def _summary_html(s: Summary) -> str:
    out = ["<section id='summary' class='summary'><h2>What the study found</h2><ul class='findings'>"]
    out += [f"<li>{_e(x)}</li>" for x in s.findings]
    out.append("</ul><h2>Recommendation</h2><div class='recommendation'>")
    out += [f"<p>{_e(x)}</p>" for x in s.recommendation]
    out.append("</div>")
    out.append(f"<h2>Caveats ({len(s.caveats)})</h2>")
    for name, items in s.caveat_groups:
        out.append(f"<h3>{_e(name)}</h3><ul class='caveats'>" + "".join(f"<li>{_e(x)}</li>" for x in items) + "</ul>")
    if not s.caveats:
        out.append("<p>None raised by the fits.</p>")
    if s.missing:
        out.append("<h3>Not in this report</h3><ul class='missing-list'>")
        out += [f"<li>{_e(x)}</li>" for x in s.missing]
        out.append("</ul>")
    out.append("</section>")
    return "\n".join(out)


def _optima_table(tables: StudyTables, rfit: ReportFit) -> str:
    if not rfit.optima:
        return ""
    plastic = plasticity_name(rfit)
    ratios = decay_ratios(rfit).set_index("cell") if rfit.optima_for(plastic) else None
    pct = f"{round(100 * rfit.level)}%"
    head = ["cell", "N", "D", "TPP", "trials", f"loss-optimal decay* [{pct}]"]
    if ratios is not None:
        head += [f"plasticity-optimal decay* ({plastic}) [{pct}]", "ratio"]
    rows = []
    for cell in tables.cells:
        lo = rfit.optimum("val_loss", cell)
        pl = rfit.optimum(plastic, cell)
        ref = lo or pl
        if ref is None:
            continue
        row = [cell, human(ref.n_params), human(ref.n_tokens), f"{ref.tpp:.3g}", str(ref.n_trials), _opt_cell(lo)]
        if ratios is not None:
            r = ratios["ratio"].get(cell, math.nan) if cell in ratios.index else math.nan
            row += [_opt_cell(pl), f"{r:.2g}x" if math.isfinite(r) else "-"]
        rows.append(row)
    # every cell is text except the decay* cells, which _opt_cell builds from escaped parts
    cells = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, _Html) else _e(c)}</td>" for c in r) + "</tr>"
                    for r in rows)
    note = ""
    if any(not o.bracketed for o in rfit.optima):
        note = ("<p class='caption'>* censored: decay* lies beyond the decays searched; shown is the one-sided "
                "bound at the same coverage (&lt; below the smallest positive decay, &gt; above the largest; the "
                "caveats give the evidence).</p>")  # fmt: skip
    return (f"<section id='optima'><h2>Per-cell optima</h2><table><thead><tr>"
            + "".join(f"<th>{_e(h)}</th>" for h in head) + f"</tr></thead><tbody>{cells}</tbody></table>"
            f"{note}</section>")  # fmt: skip


class _Html(str):
    """Markup built here from escaped parts; every other string is escaped on the way in."""


def _opt_cell(o) -> str:
    if o is None:
        return "-"
    if not o.bracketed:  # censored: show the one-sided bound the data support
        bound = f"< {o.high:.3g}" if o.kind == "censored_below" else f"> {o.low:.3g}"
        return _Html(f"<span class='unbracketed' title='{_e(o.reason or o.evidence or '')}'>{_e(bound)}*</span>")
    return _Html(f"{_e(f'{o.decay_opt:.3g}')} <span class='ci'>[{_e(f'{o.low:.3g}')}, {_e(f'{o.high:.3g}')}]</span>")


def _toc(parts: list[Section]) -> str:
    items = "".join(
        f"<li><a href='#{s.id}'>{_e(s.title)}</a>{'' if s.figure is not None else ' (not drawn)'}</li>" for s in parts
    )
    return f"<nav><h2>Figures</h2><ol>{items}</ol></nav>"


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; color: #222;
       max-width: 1280px; margin: 0 auto; padding: 0 24px 48px; line-height: 1.45; background: #fff; }
header { border-bottom: 2px solid #1f63b4; margin-bottom: 8px; }
h1 { font-size: 1.6em; margin: 20px 0 4px; }
h2 { font-size: 1.2em; margin: 28px 0 8px; color: #1a3d6d; }
h3 { font-size: 1.0em; margin: 16px 0 6px; }
.meta { color: #666; font-size: 0.85em; margin: 0 0 10px; }
.summary { background: #f6f8fb; border: 1px solid #dde3ec; border-radius: 6px; padding: 4px 20px 12px; }
.summary h2:first-child { margin-top: 14px; }
.recommendation { border-left: 4px solid #1f63b4; padding: 2px 12px; background: #fff; }
.recommendation p { margin: 6px 0; }
.caveats li { margin: 3px 0; }
.caveats { color: #7a2a12; }
.missing, .missing-list { color: #7a5a00; }
table { border-collapse: collapse; font-size: 0.9em; margin: 6px 0; }
th, td { border-bottom: 1px solid #e2e2e2; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f3f7; }
.ci { color: #777; }
.unbracketed { color: #a0521d; }
.caption { color: #444; font-size: 0.9em; max-width: 1000px; }
nav ol { columns: 2; font-size: 0.92em; }
section { margin-bottom: 12px; }
.figure { border: 1px solid #eee; border-radius: 4px; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
<script type="text/javascript">{plotlyjs}</script>
</head>
<body>
{body}
</body>
</html>
"""
