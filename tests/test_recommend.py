"""recommend() and `scaling recommend`: decays for a budget and a recipe, with intervals and labels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from scaling.cli import main
from scaling.core.numbers import parse_amount
from scaling.errors import ConfigError
from scaling.fit import fit_study
from scaling.fit.recommend import recommend
from scaling.fit.simulate import Truth, recommendation_coverage, simulate_trials

# the two-seed quickstart run of 2026-11-29 (results/quickstart at bd7de5f): 4 cells, one interior loss optimum
QUICKSTART_TWO_SEEDS = Path(__file__).resolve().parent / "data" / "quickstart_two_seeds_bd7de5f.csv"
QUICKSTART = Path(__file__).resolve().parent / "data" / "quickstart_one_seed_4fb7b96.csv"  # the one-seed quickstart run of 2026-11-27


@pytest.fixture(scope="module")
def trials():
    df, _ = simulate_trials(Truth(cell_sd=0.1), rng=8, seeds=3)
    return df


@pytest.fixture(scope="module")
def fit(trials):
    return fit_study(trials, n_bootstrap=60)


def test_four_times_beyond_the_largest_n_gives_both_optima_with_intervals(fit):
    truth = Truth()
    n, d = 4e5, 8e6  # 4x the largest simulated N, at 20 TPP
    rec = recommend(fit=fit, n_params=n, n_tokens=d)
    for choice, objective in ((rec.decay_loss_opt, "val_loss"), (rec.decay_plastic_opt, "ft_score")):
        true = math.exp(float(truth.log_decay_opt(objective, n, d)))
        print(f"{objective}: {choice.value:.3g} [{choice.low:.3g}, {choice.high:.3g}], law truth {true:.3g}")
        # one study: its 90% PI may miss (test_fit_laws and benchmarks/coverage_fit.py count how often)
        assert choice.estimand == "optimum" and choice.low < choice.value < choice.high
        assert abs(math.log(choice.value / true)) < 3 * math.log(choice.high / choice.low)
        assert math.log10(choice.high / choice.low) < 1.5
        # carried by whichever of the decay* and tau* laws predicted left-out cells best
        carrier = fit.carrier(objective, "optimum")
        assert carrier.held_out == min(law.held_out for law in (*fit.laws, *fit.tau_laws) if law.objective == objective)
        assert carrier.formula in choice.carried_by and choice.formula == carrier.formula
    ex = rec.extrapolation
    assert ex.is_extrapolation and ex.n_factor == pytest.approx(4.0) and ex.lr_factor == pytest.approx(1.0)
    assert ex.backtest_distance == pytest.approx(1e5 / 5.6e4)
    assert not ex.backtest_supports  # 4x is further than the backtest reached (1.8x)
    assert any("does not support this distance" in note for note in ex.notes)


def test_another_recipe_is_carried_through_the_tau_law(fit):
    base = recommend(fit=fit, n_params=1e5, tpp=20)
    half_lr = recommend(fit=fit, n_params=1e5, tpp=20, lr=fit.lr / 2)
    for key in ("decay_loss_opt", "decay_plastic_opt"):
        a, b = getattr(base, key), getattr(half_lr, key)
        assert "tau law" in b.carried_by and "decay = B / (lr tau* D)" in b.carried_by
        # at the same tau* (the law does not see lr), half the lr needs twice the decay
        tau_law = fit.carrier(a.objective, "optimum", tau_only=True)
        assert tau_law.in_tau
        expected = fit.batch_tokens / (fit.lr / 2 * 2e6 * tau_law.predict(1e5, 2e6).value)
        assert b.value == pytest.approx(expected, rel=1e-9)
    assert half_lr.extrapolation.lr_factor == pytest.approx(0.5)
    assert any("lr is 0.5x the study's" in note for note in half_lr.extrapolation.notes)


def test_the_price_of_the_plastic_decay_is_visible_in_base_loss(fit):
    rec = recommend(fit=fit, n_params=1e5, n_tokens=2e6)
    assert rec.decay_loss_opt.expected_val_loss is not None
    assert rec.decay_plastic_opt.expected_val_loss == pytest.approx(rec.decay_loss_opt.expected_val_loss + rec.loss_cost)


@pytest.mark.slow
def test_an_all_censored_study_recommends_the_tolerance_or_a_bound():
    df, _ = simulate_trials(Truth(grid_shift_sd=0.0), rng=2, seeds=2, taus=(0.1, 0.05, 0.025, 0.0125))
    rec = recommend(df, n_params=4e5, tpp=20, n_bootstrap=20)
    choice = rec.decay_loss_opt
    assert choice.estimand in ("tolerance", "bound") and choice.reason
    assert rec.label == "guess"
    assert any("decay_loss_opt" in w for w in rec.warnings)


@pytest.mark.slow
def test_the_real_quickstart_answers_for_a_half_billion_model_at_20_tpp():
    """One seed, most optima censored: a decay with an interval, or the reason there is none."""
    fit = fit_study(pd.read_csv(QUICKSTART), n_bootstrap=40)
    rec = recommend(fit=fit, n_params=5e8, tpp=20, lr=2.5e-4, batch_tokens=2**20)
    for choice in (rec.decay_loss_opt, rec.decay_plastic_opt):
        assert choice is not None
        assert (choice.value is not None and choice.low < choice.value < choice.high) or choice.reason
    assert rec.label == "guess" and rec.extrapolation.n_factor > 4000
    json.dumps(rec.to_dict(), allow_nan=False)


@pytest.mark.slow
def test_a_plasticity_nll_study_recommends_the_ft_nll_optimum(trials, fit):
    """ft_nll mirrors ft_score (lower is better): decay_plastic_opt is its minimum, the same decay."""
    nll_fit = fit_study(trials.assign(ft_nll=2.0 - trials["ft_score"], plasticity="nll"), n_bootstrap=60)
    rec = recommend(fit=nll_fit, n_params=4e5, n_tokens=8e6)
    by_score = recommend(fit=fit, n_params=4e5, n_tokens=8e6).decay_plastic_opt
    assert rec.plasticity == "ft_nll" and rec.decay_plastic_opt.objective == "ft_nll"
    assert rec.decay_plastic_opt.value == pytest.approx(by_score.value, rel=1e-6)
    assert "plasticity objective: ft_nll (held-out NLL after fine-tuning, lower is better)" in rec.summary()
    assert "plasticity (ft_nll)" in rec.summary()
    out = json.loads(json.dumps(rec.to_dict(), allow_nan=False))
    assert out["plasticity_objective"] == {"column": "ft_nll",
                                           "meaning": "ft_nll (held-out NLL after fine-tuning, lower is better)"}


def test_bad_budgets_and_recipes_are_config_errors(fit):
    with pytest.raises(ConfigError):
        recommend(fit=fit, n_params=1e6)
    with pytest.raises(ConfigError):
        recommend(fit=fit, n_params=1e6, n_tokens=1e7, tpp=10)
    with pytest.raises(ConfigError):
        recommend(fit=fit, n_params=-1.0, n_tokens=1e7)
    with pytest.raises(ConfigError, match="lr must be a positive number"):
        recommend(fit=fit, n_params=1e6, n_tokens=1e7, lr=0.0)
    with pytest.raises(ConfigError, match="overflows"):
        recommend(fit=fit, n_params=1e6, tpp=1e300)


def test_compute_budget_uses_the_surface_allocation(fit):
    rec = recommend(fit=fit, compute=1e15)
    assert "compute-optimal" in rec.allocation
    assert 6 * rec.n_params * rec.n_tokens == pytest.approx(1e15)


def test_parse_amount_understands_suffixes():
    assert parse_amount("1e9") == 1e9 and parse_amount("300k") == 3e5 and parse_amount("1.5B") == 1.5e9
    assert parse_amount("20M") == 2e7 and parse_amount("2T") == 2e12 and parse_amount("1M") == 1e6


# ------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def trials_csv(trials, tmp_path_factory):
    path = tmp_path_factory.mktemp("rec") / "trials.csv"
    trials.to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_cli_json_has_value_low_high_and_the_recipe(trials_csv, capsys):
    assert main(["recommend", "--trials", str(trials_csv), "--params", "400k", "--tokens", "8M", "--json",
                 "--lr", "3e-3", "--batch-tokens", "4096", "--bootstrap", "30"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    for key in ("decay_loss_opt", "decay_plastic_opt"):
        assert {"value", "low", "high", "estimand", "carried_by"} <= set(out[key])
        assert out[key]["low"] < out[key]["value"] < out[key]["high"]
    assert out["recipe"] == {"lr": 3e-3, "batch_tokens": 4096}
    assert out["plasticity_objective"]["column"] == "ft_score"  # no plasticity column: as before
    assert out["extrapolation"]["lr_factor"] == pytest.approx(0.5) and out["extrapolation"]["batch_factor"] == 2.0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--params", "1e6"], "exactly one of --tokens or --tpp"),
        (["--params", "1e160", "--tokens", "1e160", "--json"], "outside the study's range"),
        (["--params", "1e6", "--tpp", "1e300"], "the budget overflows"),
        (["--params", "1e6", "--tpp", "20", "--lr", "0"], "expected a positive number"),
    ],
)
def test_cli_bad_or_absurd_input_is_one_line_and_exit_2(trials_csv, capsys, args, message):
    assert main(["recommend", "--trials", str(trials_csv), "--bootstrap", "10", *args]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()[-1]
    assert err.startswith("scaling recommend: error: ") and message in err and "Traceback" not in captured.err
    assert captured.out == ""  # nothing (and no non-finite JSON) written


def test_recommendation_coverage_counts_each_choice_against_the_truth_of_its_estimand():
    """A small run of benchmarks/coverage_recommend.py (which runs hundreds of studies)."""
    result = recommendation_coverage(3, n_bootstrap=20, first_seed=40)
    print("\n".join(result.lines()))
    for choice in ("decay_loss_opt", "decay_plastic_opt"):
        by_estimand = result.hits[choice]
        assert set(by_estimand) <= {"optimum", "tolerance"}
        assert sum(total for _, total in by_estimand.values()) == 3 - result.failures
        assert all(0 <= hits <= total for hits, total in by_estimand.values())
        assert sum(result.carriers[choice].values()) == 3 - result.failures
        assert result.widths[choice] > 0


def test_an_optimum_law_that_could_not_be_checked_yields_to_a_checked_tolerance_law():
    """Only one cell has an interior loss optimum: its tau* law rests on one estimate and three
    bounds and cannot be cross-validated, so the recommendation uses the tolerance law."""
    df = pd.read_csv(QUICKSTART_TWO_SEEDS)
    fit = fit_study(df, n_bootstrap=40)
    optimum = fit.carrier("val_loss", "optimum")
    assert optimum is None or not math.isfinite(optimum.held_out)
    rec = recommend(fit=fit, n_params=4 * df["n_params"].max(), tpp=20)
    tolerance = fit.carrier("val_loss", "tolerance")
    assert math.isfinite(tolerance.held_out)
    assert rec.decay_loss_opt.estimand == "tolerance" and rec.decay_loss_opt.formula == tolerance.formula
    assert "could not be checked on a cell it had not seen" in rec.decay_loss_opt.reason or optimum is None


def test_the_recommendation_carries_the_studys_delta_test(fit):
    rec = recommend(fit=fit, n_params=1e5, tpp=20)
    claim = fit.claim("plastic_above_loss")
    assert rec.delta_test is claim
    out = json.loads(json.dumps(rec.to_dict(), allow_nan=False))
    assert out["delta_test"]["verdict"] == claim.verdict and out["delta_test"]["name"] == "plastic_above_loss"
    assert "delta test (the study's cells)" in rec.summary()
