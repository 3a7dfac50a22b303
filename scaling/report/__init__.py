"""The study report: one self-contained HTML page of figures and a plain-words summary.

    from scaling.report import write_report, build_report
    write_report("results/quickstart")            # -> results/quickstart/report.html
    html = build_report(trials_df, curves_df, study_fit)   # in a notebook

Modules: `data` (reading and checking the tables), `analysis` (the fits, tolerant of what a
study cannot support), `figures` (one function per figure), `summary` (the plain words),
`page` (the HTML).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from scaling.errors import DataError
from scaling.fit import StudyFit
from scaling.io import write_atomic
from scaling.report.analysis import NEXT_BUDGET_FACTOR, fit_for_report
from scaling.report.data import StudyTables, check_curves, check_trials, load_study
from scaling.report.page import RenderedReport, render

__all__ = ["build_report", "render_tables", "write_report", "RenderedReport"]


def render_tables(
    tables: StudyTables,
    study_fit: StudyFit | None = None,
    *,
    n_bootstrap: int = 200,
    seed: int = 0,
    next_factor: float = NEXT_BUDGET_FACTOR,
    title: str | None = None,
) -> RenderedReport:
    """Fit what is not given and render; returns the HTML with the list of figures drawn."""
    rfit = fit_for_report(tables.trials, study_fit, n_bootstrap=n_bootstrap, seed=seed, next_factor=next_factor,
                          source=tables.source)  # fmt: skip
    return render(tables, rfit, title=title)


def build_report(
    trials: pd.DataFrame,
    curves: pd.DataFrame | None = None,
    study_fit: StudyFit | None = None,
    *,
    failed: pd.DataFrame | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
    next_factor: float = NEXT_BUDGET_FACTOR,
    title: str | None = None,
) -> str:
    """The report of a trials table (and optionally its curves, failed trials and an existing
    fit) as one HTML string. DataError if the table lacks n_params, n_tokens, decay or val_loss."""
    tables = StudyTables(
        trials=check_trials(trials),
        curves=check_curves(curves) if curves is not None and not curves.empty else None,
        failed=failed if failed is not None and not failed.empty else None,
    )
    return render_tables(tables, study_fit, n_bootstrap=n_bootstrap, seed=seed, next_factor=next_factor,
                         title=title).html  # fmt: skip


def write_report(
    folder: str | Path,
    study_fit: StudyFit | None = None,
    *,
    out: str | Path | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
    next_factor: float = NEXT_BUDGET_FACTOR,
) -> Path:
    """Write <folder>/report.html (or `out`) from <folder>/trials.csv (+ curves.csv, failed.csv)."""
    path = Path(out) if out is not None else Path(folder) / "report.html"
    if path.is_dir():  # before the fits, which take a while
        raise DataError(f"{path}: is a folder; expected the report's file name, e.g. {path / 'report.html'}")
    tables = load_study(folder)
    report = render_tables(tables, study_fit, n_bootstrap=n_bootstrap, seed=seed, next_factor=next_factor)
    return write_atomic(path, report.html)
