"""The per-cell curve figures drawn against the timescale tau = B/(lr decay D) (Bergsma et al.
2025), with decay 0 at an '∞' tick, and each cell's estimands mapped to tau; tables without lr or
batch_tokens keep the decay axis.

The study below is a timescale grid: every cell runs the same taus, so its decays differ from
cell to cell. The expected positions are computed here from each trial's lr, batch_tokens,
n_tokens and decay, never read from the figure code or from the table's `tau` column.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scaling.fit import cell_optima
from scaling.report import figures, render_tables
from scaling.report.analysis import ReportFit
from scaling.report.data import StudyTables, check_trials
from scaling.report.style import DecayAxis, TauAxis
from tests.test_report import BOOTSTRAP, synthetic_study

TAUS = (math.inf, 64.0, 32.0, 16.0, 8.0, 4.0, 2.0, 1.0, 0.5)
CELLS = ((2e4, 20.0), (6e4, 20.0))


def timescale_study(taus=TAUS, cells=CELLS) -> pd.DataFrame:
    """synthetic_study's cells, each run at decay = B/(lr tau D) for the same taus (tau = inf is decay 0)."""
    parts = []
    for seed, (n, tpp) in enumerate(cells):
        first, _ = synthetic_study(seed=seed, sizes=(n,), tpps=(tpp,), decays=(0.1,), with_ft=False)
        k = first["batch_tokens"].iloc[0] / (first["lr"].iloc[0] * first["n_tokens"].iloc[0])
        decays = tuple(0.0 if math.isinf(t) else k / t for t in taus)
        trials, _ = synthetic_study(seed=seed, sizes=(n,), tpps=(tpp,), decays=decays, with_ft=False)
        parts.append(trials)
    # a wrong tau column: the figures compute tau from the settings, so old tables without one work too
    return pd.concat(parts, ignore_index=True).assign(tau=123.0)


def _fit(trials: pd.DataFrame) -> ReportFit:
    """Only the per-cell val_loss estimands, which is all the loss figure draws."""
    optima = cell_optima(trials, "val_loss", "min", n_bootstrap=BOOTSTRAP)
    return ReportFit(fit=None, optima=optima, problems=(), next_budget=None, recommendation=None)


@pytest.fixture(scope="module")
def tau_study():
    tables = StudyTables(trials=check_trials(timescale_study()))
    rfit = _fit(tables.trials)
    return tables, rfit, figures.loss_vs_decay(tables, rfit)


def _tau(rows: pd.DataFrame) -> np.ndarray:
    """B/(lr decay D) per trial, inf at decay 0."""
    d = rows["decay"].to_numpy(dtype=float)
    k = (rows["batch_tokens"] / (rows["lr"] * rows["n_tokens"])).to_numpy(dtype=float)
    return np.where(d > 0, k / np.where(d > 0, d, 1.0), np.inf)


def _k(trials: pd.DataFrame, cell: str) -> float:
    rows = trials[trials["cell"] == cell]
    return float((rows["batch_tokens"] / (rows["lr"] * rows["n_tokens"])).median())


def _size_lines(fig):
    return {t.name: t for t in fig.data if t.name and t.name.startswith("N = ") and t.mode == "lines+markers"}


def test_loss_curves_are_drawn_at_each_trials_timescale_with_decay_0_at_infinity(tau_study):
    tables, _, fig = tau_study
    axis = fig.layout.xaxis
    assert axis.type == "log" and axis.title.text == "tau = B/(lr·decay·D), more decay ←"
    assert "vs timescale tau" in fig.layout.title.text
    assert axis.ticktext[-1] == "∞"
    inf_at = axis.tickvals[-1]
    lines = _size_lines(fig)
    assert len(lines) == len(CELLS)
    for cell in tables.cells:
        rows = tables.trials[tables.trials["cell"] == cell]
        line = next(t for t in lines.values() if t.hovertemplate.startswith(cell))
        tau = np.sort(_tau(rows))  # decay 0 (tau inf) last: right of every finite tau
        finite = tau[np.isfinite(tau)]
        np.testing.assert_allclose(line.x[: finite.size], finite, rtol=1e-12)
        assert line.x[-1] == inf_at and inf_at > finite.max()
        # hover names both: tau 0.5 (decay 6.83)
        smallest = rows.loc[rows["decay"].idxmax()]
        assert f"tau {finite.min():.3g} (decay {smallest['decay']:.3g})" in line.customdata[0][0]
    # a timescale grid lines the sizes up: their decays differ, their taus do not
    xs = [np.asarray(t.x) for t in lines.values()]
    np.testing.assert_allclose(xs[0], xs[1], rtol=1e-12)
    decays = [np.sort(tables.trials[tables.trials["cell"] == c]["decay"].to_numpy()) for c in tables.cells]
    assert not np.allclose(decays[0], decays[1])


def test_the_optimum_and_the_tolerance_estimand_are_drawn_in_tau_with_their_intervals_flipped(tau_study):
    tables, rfit, fig = tau_study
    stars = [t for t in fig.data if t.name and " tau* " in t.name]
    diamonds = [t for t in fig.data if t.name and " tau_tol " in t.name]
    drawn = [o for o in rfit.optima_for("val_loss") if math.isfinite(o.value_at_opt)]
    assert drawn and len(stars) == len(diamonds) == len(drawn)
    checked = 0
    for o, star, diamond in zip(drawn, stars, diamonds):
        k = _k(tables.trials, o.cell)
        assert diamond.marker.symbol == ("diamond" if o.tol_kind == "interior" else "diamond-open")
        assert diamond.x[0] == pytest.approx(k / o.decay_tol)
        # on the fitted curve (the figure opens relative to the cell's best: compare with the star)
        assert diamond.y[0] - star.y[0] == pytest.approx(float(o.curve([o.decay_tol])[0]) - o.value_at_opt)
        assert o.cell in diamond.hovertemplate and f"{k / o.decay_tol:.3g}" in diamond.hovertemplate
        if o.tol_kind == "interior" and 0 < o.tol_low < o.tol_high < math.inf:
            x, bar = diamond.x[0], diamond.error_x
            # the largest decay in the interval is its smallest tau: the left end
            assert x - bar.arrayminus[0] == pytest.approx(k / o.tol_high)
            assert x + bar.array[0] == pytest.approx(k / o.tol_low)
            checked += 1
        if o.bracketed and 0 < o.low < o.high < math.inf:
            x, bar = star.x[0], star.error_x
            assert star.marker.symbol == "star" and x == pytest.approx(k / o.decay_opt)
            assert (x - bar.arrayminus[0], x + bar.array[0]) == pytest.approx((k / o.high, k / o.low))
    assert checked >= 1  # the synthetic wells sit inside the grid, so the check above did run


def test_a_censored_optimum_is_an_open_star_at_the_grid_edge_with_its_bound_in_tau():
    """val_loss rising with decay everywhere: decay* is censored below, so tau* is above the grid."""
    trials = timescale_study(cells=CELLS[:1])
    trials["val_loss"] = 3.0 + 0.01 * trials["decay"] ** 2
    tables = StudyTables(trials=check_trials(trials))
    rfit = _fit(tables.trials)
    (o,) = rfit.optima_for("val_loss")
    assert o.kind == "censored_below"
    fig = figures.loss_vs_decay(tables, rfit)
    (star,) = [t for t in fig.data if t.name and " tau* " in t.name]
    assert star.marker.symbol == "star-open" and star.error_x.array is None
    k = _k(tables.trials, o.cell)
    edge = fig.layout.xaxis.tickvals[-1] if o.decay_opt == 0 else k / o.decay_opt
    assert star.x[0] == pytest.approx(edge)
    assert "CENSORED: tau* > " in star.hovertemplate and "(decay* < " in star.hovertemplate


@pytest.mark.parametrize("spoil", ["no lr column", "one batch_tokens missing"])
def test_a_table_without_the_settings_for_tau_keeps_the_decay_axis(spoil):
    trials = timescale_study()
    if spoil == "no lr column":
        trials = trials.drop(columns="lr")
    else:
        trials.loc[3, "batch_tokens"] = np.nan
    tables = StudyTables(trials=check_trials(trials))
    fig = figures.loss_vs_decay(tables, _fit(tables.trials))
    axis = fig.layout.xaxis
    assert axis.title.text == "decay" and "vs weight decay" in fig.layout.title.text
    assert axis.ticktext[0] == "0" and "∞" not in axis.ticktext
    for cell in tables.cells:
        line = next(t for t in _size_lines(fig).values() if t.hovertemplate.startswith(cell))
        decays = np.sort(tables.trials[tables.trials["cell"] == cell]["decay"].to_numpy())
        np.testing.assert_allclose(line.x[1:], decays[1:])  # positive decays at themselves
        assert line.x[0] == axis.tickvals[0] < decays[1]  # decay 0 at its '0' tick, left of them
    assert any(t.name and " decay_tol " in t.name for t in fig.data)


def test_tau_axis_puts_infinity_a_decade_beyond_the_largest_finite_tau():
    axis = TauAxis([0.5, 2.0, 8.0, math.inf])
    assert float(axis.x(math.inf)) == 10 * 8.0 and float(axis.x(2.0)) == 2.0
    ticks = axis.ticks()
    assert ticks["ticktext"][-1] == "∞" and ticks["tickvals"][-1] == 80.0
    finite = ticks["tickvals"][:-1]
    assert finite == sorted(finite) and max(finite) < 80.0 / 1.5 and min(finite) <= 0.5
    assert "∞" not in TauAxis([0.5, 2.0]).ticks()["ticktext"]  # no decay 0 searched, no '∞'
    # the decay axis mirrors it at the other end
    assert DecayAxis([0.0, 0.1, 1.0]).ticks()["ticktext"][0] == "0"


def test_page_titles_and_captions_name_the_timescale_and_the_peak_lr():
    trials = timescale_study()
    report = render_tables(StudyTables(trials=check_trials(trials)), n_bootstrap=0)
    assert "Base loss vs timescale tau" in report.html and "peak learning rate" in report.html
    old = render_tables(StudyTables(trials=check_trials(trials.drop(columns=["lr", "tau"]))), n_bootstrap=0)
    assert "Base loss vs weight decay" in old.html and "peak learning rate" not in old.html
