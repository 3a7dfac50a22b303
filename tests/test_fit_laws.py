"""Decay laws across cells: censored likelihood, random effects, Power Lines forms, backtests."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from scipy.stats import t as student_t

from scaling.errors import FitError
from scaling.fit import backtest_law, fit_decay_law
from scaling.fit.laws import observations
from scaling.fit.optima import cell_estimates
from scaling.fit.studyfit import choose_carrier
from scaling.fit.simulate import Truth, coverage, simulate_trials

OBJECTIVES = {"val_loss": "min", "ft_score": "max"}


def estimates(truth=Truth(), *, rng=0, n_bootstrap=100, **grid):
    trials, cells = simulate_trials(truth, rng=rng, **grid)
    return cell_estimates(trials, OBJECTIVES, n_bootstrap=n_bootstrap, seed=rng).optima, cells


@pytest.fixture(scope="module")
def study():
    return estimates(Truth(cell_sd=0.1), rng=11, n_params=(1e4, 2e4, 4e4, 8e4, 1.6e5))


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_known_decay_laws_are_recovered(study, objective):
    optima, _ = study
    law = fit_decay_law(optima[objective])
    assert law.form == "n_d" and law.n_cells == 15 and law.formula == "ln decay* = c + a ln N + b ln D"
    for coef, true in zip(law.coefficients, Truth().decay_law(objective)):
        print(f"{objective} {coef.name} = {coef.value:.3f} +- {coef.se:.3f} (truth {true:.3f})")
        assert abs(coef.value - true) < 3 * coef.se + 0.05, coef.name
    assert math.isfinite(law.held_out) and law.held_out_n >= 10


def test_power_lines_forms_are_fitted_and_compared_by_held_out_error(study):
    optima, _ = study
    free = fit_decay_law(optima["val_loss"], response="tau", form="tpp")
    fixed = fit_decay_law(optima["val_loss"], response="tau", form="tpp_fixed")
    assert free.formula == "ln tau* = c + m ln TPP" and fixed.formula == "ln tau* = c - 0.53 ln TPP"
    m = free.coefficient("m")
    print(f"Power Lines m = {m.value:.3f} [{m.low:.3f}, {m.high:.3f}] (truth -0.5); held-out free "
          f"{free.held_out:.3f}, fixed {fixed.held_out:.3f}")  # fmt: skip
    assert abs(m.value + 0.5) < 3 * m.se + 0.05
    assert [c.name for c in fixed.coefficients] == ["c"]
    assert math.isfinite(free.held_out) and math.isfinite(fixed.held_out)


def test_censored_cells_enter_as_bounds():
    """Shift every cell's grid up so the loss optima of the high-TPP cells fall below it."""
    optima, cells = estimates(Truth(grid_shift_sd=0.0), rng=3, taus=(2.0, 1.0, 0.5, 0.25, 0.125, 0.06, 0.03))
    loss = optima["val_loss"]
    law = fit_decay_law(loss)
    censored = [o for o in loss if o.kind == "censored_below"]
    assert censored and len(law.censored) == len(censored) and law.n_cells == len(loss)
    # the law puts the censored cells' optima below their bounds, as the data say
    for o in censored:
        assert law.predict(o.n_params, o.n_tokens).value < o.decay_opt * 1.5


def test_a_law_needs_interior_cells():
    optima, _ = estimates(rng=1)
    loss = list(optima["val_loss"])
    with pytest.raises(FitError, match="needs at least 4 cells, 3 of them interior"):
        fit_decay_law([loss[0], loss[4], loss[8]], form="n_d")
    all_censored = [type(o)(**{**o.__dict__, "kind": "censored_below"}) for o in loss]
    with pytest.raises(FitError, match="censored"):
        fit_decay_law(all_censored)


def test_the_tolerance_law_exists_on_plateaus():
    optima, _ = estimates(rng=4)
    law = fit_decay_law(optima["val_loss"], response="tolerance")
    assert law.formula == "ln decay_tol = c + a ln N + b ln D" and law.n_cells == 12


def test_backtest_predicts_the_largest_model_from_the_smaller_ones(study):
    optima, _ = study
    bt = backtest_law(optima["val_loss"])
    assert bt.available and bt.held_out_n_params == 1.6e5 and bt.distance == pytest.approx(2.0)
    for case in bt.cases:
        assert case.factor == pytest.approx(math.exp(abs(case.log_error)))
        assert case.low < case.predicted < case.high
    assert bt.n_inside >= len(bt.cases) - 1


@pytest.mark.slow
def test_law_prediction_intervals_cover_a_new_cell_4x_beyond_the_largest_n():
    """A small version of benchmarks/coverage_fit.py (8 studies); the benchmark runs 200."""
    result = coverage(8, n_bootstrap=60, first_seed=900)
    print("\n".join(result.lines()))
    for objective in OBJECTIVES:
        hits, total = result.law_hits[objective]
        assert total == 8 and hits >= 6
        assert result.law_width_decades[objective] < 1.5
        assert 0.8 <= result.rate("cell", objective) <= 0.99


def test_the_tolerance_law_can_be_fitted_as_a_timescale(study):
    """tau_tol = B / (lr decay_tol D): the same cells, the value inverted, the censoring side flipped."""
    optima, _ = study
    loss = optima["val_loss"]
    in_decay, _ = observations(loss, "tolerance")
    in_tau, _ = observations(loss, "tau_tolerance")
    flip = {"interior": "interior", "censored_below": "censored_above", "censored_above": "censored_below"}
    for o, d, t in zip(loss, in_decay, in_tau):
        assert t.log_value == pytest.approx(math.log(o.batch_tokens / (o.lr * o.n_tokens)) - d.log_value)
        assert t.kind == flip[d.kind]
    law = fit_decay_law(loss, response="tau_tolerance", form="tpp")
    assert law.formula == "ln tau_tol = c + m ln TPP" and law.in_tau and law.estimand == "tolerance"


def test_a_timescale_law_is_backtested_on_the_value_it_predicts(study):
    optima, _ = study
    bt = backtest_law(optima["ft_score"], response="tau", form="tpp")
    assert bt.available and bt.response == "tau"
    by_cell = {o.cell: o for o in optima["ft_score"]}
    for case in bt.cases:
        assert case.realised == pytest.approx(by_cell[case.cell].tau_opt)  # tau*, not decay*


def test_the_carrier_is_the_law_that_predicted_left_out_cells_best(study):
    optima, _ = study
    laws = [fit_decay_law(optima["val_loss"], response="tau", form=f) for f in ("n_d", "tpp", "tpp_fixed")]
    best = min(laws, key=lambda law: law.held_out)
    assert choose_carrier(laws) is best and choose_carrier(laws[::-1]) is best
    # with no held-out error to compare (too few cells to leave one out), the first in line
    unscored = [replace(law, held_out=math.nan) for law in laws]
    assert choose_carrier(unscored) is unscored[0] and choose_carrier([]) is None


def test_what_leaving_cells_out_measured_is_a_floor_under_the_prediction_interval(study):
    optima, _ = study
    law = fit_decay_law(optima["val_loss"], response="tau", form="tpp_fixed")
    model_only = replace(law, held_out=math.nan).predict(4e5, 8e6)
    assert law.predict(4e5, 8e6).log_high - law.predict(4e5, 8e6).log_low >= model_only.log_high - model_only.log_low
    # a held-out error far above the law's own scatter sets the width: sd = e sqrt(pi / 2)
    wide = replace(law, held_out=2.0).predict(4e5, 8e6, level=0.9)
    q = student_t.ppf(0.95, law.df_resid)
    assert wide.log_high - wide.log_value == pytest.approx(q * 2.0 * math.sqrt(math.pi / 2.0))
    assert wide.log_value == model_only.log_value  # the centre does not move
