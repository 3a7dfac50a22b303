"""Decay laws across cells: recovery of known laws, honest degradation, calibrated intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scaling.errors import FitError
from scaling.fit import backtest_law, cell_optima, fit_decay_law, prepare_table
from scaling.fit.simulate import Truth, simulate_trials

OBJECTIVES = (("val_loss", "min", "loss_law"), ("ft_score", "max", "plastic_law"))


def optima_for(truth: Truth, objective: str, direction: str, *, rng=0, n_bootstrap=100, **grid):
    trials, cells = simulate_trials(truth, rng=rng, **grid)
    table = prepare_table(trials, require=("n_params", "n_tokens", "decay"))
    return cell_optima(table, objective, direction, n_bootstrap=n_bootstrap, seed=rng), cells


@pytest.mark.parametrize("objective, direction, law_name", OBJECTIVES)
def test_known_decay_laws_are_recovered(objective, direction, law_name):
    truth = Truth(cell_sd=0.05)
    optima, _ = optima_for(truth, objective, direction, rng=11, n_params=(1e4, 3e4, 1e5, 3e5, 1e6))
    law = fit_decay_law(optima)
    assert law.form == "n_d" and law.n_cells == 15 and not law.warnings
    for coef, true in zip(law.coefficients, getattr(truth, law_name)):
        print(f"{objective} {coef.name} = {coef.value:.3f} +- {coef.se:.3f} (truth {true})")
        assert abs(coef.value - true) < 3 * coef.se + 0.02, coef.name
    # The law reproduces the truth where it was fitted, to within the cell scatter.
    pred = law.predict(1e5, 2e6)
    assert pred.log_value == pytest.approx(float(truth.log_decay_opt(objective, 1e5, 2e6)), abs=0.1)


def test_power_lines_timescale_law_is_recovered():
    """Simulate decay* = B / (lr * D * tau*) with tau* = e^c TPP^m and recover m."""
    m, c_tau = -0.5, 3.0
    base = Truth()
    c = math.log(base.batch_tokens / base.lr) - c_tau
    truth = Truth(plastic_law=(c, m, -(1 + m)), cell_sd=0.05)  # ln decay* = c + m ln N - (1 + m) ln D
    optima, _ = optima_for(truth, "ft_score", "max", rng=4)
    tau_law = fit_decay_law(optima, response="tau")
    assert tau_law.formula == "ln tau* = c + m ln TPP"
    slope = tau_law.coefficient("m")
    print(f"Power Lines m = {slope.value:.3f} [{slope.low:.3f}, {slope.high:.3f}] (truth {m})")
    assert slope.low <= m <= slope.high
    assert slope.value == pytest.approx(m, abs=0.1)
    assert tau_law.coefficient("c").value == pytest.approx(c_tau, abs=0.5)


@pytest.mark.slow
def test_prediction_intervals_cover_a_new_cell_about_90_percent_of_the_time():
    """Over many simulated studies, the 90% PI at a held-out (N, D) (3.3x beyond the largest
    fitted N) covers the true ln decay* of that new cell, law plus its own deviation."""
    truth = Truth()
    seeds = 100
    n_new, d_new = 1e6, 2e7
    hits = {"val_loss": 0, "ft_score": 0}
    for seed in range(seeds):
        trials, _ = simulate_trials(truth, rng=1000 + seed, seeds=2)
        table = prepare_table(trials, require=("n_params", "n_tokens", "decay"))
        rng = np.random.default_rng(seed)
        for objective, direction, _ in OBJECTIVES:
            law = fit_decay_law(cell_optima(table, objective, direction, n_bootstrap=40, seed=seed))
            pred = law.predict(n_new, d_new, level=0.9)
            new_cell = truth.log_decay_opt(objective, n_new, d_new) + rng.normal(0.0, truth.cell_sd)
            hits[objective] += pred.log_low <= new_cell <= pred.log_high
    for objective, hit in hits.items():
        print(f"{objective}: 90% PI covered the held-out cell's optimum in {hit}/{seeds} simulated studies")
        assert 0.80 <= hit / seeds <= 0.97


def test_three_cells_at_one_tpp_fall_back_to_a_law_in_n_and_say_so():
    optima, _ = optima_for(Truth(), "val_loss", "min", n_params=(1e4, 3e4, 1e5), tpp=(20.0,))
    law = fit_decay_law(optima)
    assert law.form == "n" and law.formula == "ln decay* = c + a ln N"
    assert any("share one TPP" in w and "fell back" in w for w in law.warnings)


def test_three_cells_varying_in_n_and_tpp_fall_back_to_a_law_in_tpp():
    optima, _ = optima_for(Truth(), "ft_score", "max", n_params=(1e4, 3e4, 1e5), tpp=(5.0, 80.0))
    chosen = [optima[0], optima[3], optima[5]]  # (10k, 5), (30k, 80), (100k, 80)
    law = fit_decay_law(chosen)
    assert law.form == "tpp" and any("only 3 bracketed cells" in w for w in law.warnings)


def test_too_few_cells_for_any_law_is_a_fit_error():
    optima, _ = optima_for(Truth(), "val_loss", "min", n_params=(1e4, 3e4), tpp=(20.0,))
    with pytest.raises(FitError, match="needs at least 3 bracketed cells for an interval; have 2"):
        fit_decay_law(optima)
    four, _ = optima_for(Truth(), "val_loss", "min", n_params=(1e4, 3e4, 1e5), tpp=(5.0, 80.0))
    with pytest.raises(FitError, match="3 parameters and needs at least 4"):
        fit_decay_law(four[:3], form="n_d")


def test_unbracketed_cells_are_left_out_and_listed():
    # Grid starts at 0.1: cells whose loss optimum (about 0.1-0.5) lies below 0.14 are unbracketed.
    optima, _ = optima_for(Truth(), "val_loss", "min", decays=(0.1, 0.2, 0.3, 0.5, 1.0, 3.0))
    law = fit_decay_law(optima)
    assert law.excluded and all("smallest searched value" in reason for _, reason in law.excluded)
    assert law.n_cells + len(law.excluded) == len(optima)


def test_all_cells_unbracketed_is_a_fit_error():
    optima, _ = optima_for(Truth(), "ft_score", "max", decays=(0.001, 0.003, 0.01))
    with pytest.raises(FitError, match="no bracketed optimum"):
        fit_decay_law(optima)


def test_backtest_predicts_the_largest_model_from_the_smaller_ones():
    optima, _ = optima_for(Truth(cell_sd=0.05), "ft_score", "max", rng=2)
    bt = backtest_law(optima)
    assert bt.available and bt.held_out_n_params == 3e5 and bt.n_train_cells == 9
    assert len(bt.cases) == 3
    for case in bt.cases:
        assert case.factor == pytest.approx(math.exp(abs(case.log_error)))
        assert case.low < case.predicted < case.high
    assert bt.mean_abs_log_error < 0.3
    assert bt.n_inside >= 2


def test_backtest_is_unavailable_when_the_rest_cannot_be_fitted():
    optima, _ = optima_for(Truth(), "val_loss", "min", n_params=(1e4, 3e4, 1e5), tpp=(20.0,))
    bt = backtest_law(optima)
    assert not bt.available and "cannot refit" in bt.reason and bt.cases == ()
