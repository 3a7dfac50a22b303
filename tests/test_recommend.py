"""recommend() and `scaling recommend`: decays for a budget, with intervals, costs and labels."""

from __future__ import annotations

import json
import math

import pytest

from scaling.cli import main
from scaling.commands.recommend import parse_amount
from scaling.errors import ConfigError, FitError
from scaling.fit import fit_study
from scaling.fit.simulate import Truth, simulate_trials
from scaling.fit.recommend import recommend


@pytest.fixture(scope="module")
def trials():
    df, _ = simulate_trials(Truth(cell_sd=0.05), rng=8, seeds=1)
    return df


@pytest.fixture(scope="module")
def fit(trials):
    return fit_study(trials, n_bootstrap=60)


def test_recommendation_follows_the_simulated_laws(fit):
    truth = Truth()
    rec = recommend(fit=fit, n_params=1e5, n_tokens=2e6)  # inside the fitted range
    for choice, objective in ((rec.decay_loss_opt, "val_loss"), (rec.decay_plastic_opt, "ft_score")):
        true = math.exp(float(truth.log_decay_opt(objective, 1e5, 2e6)))
        print(f"{objective}: {choice.value:.3g} [{choice.low:.3g}, {choice.high:.3g}], truth {true:.3g}")
        assert choice.low < true < choice.high
        assert choice.label == "backtested" and choice.level == 0.9
    assert rec.decay_plastic_opt.value > rec.decay_loss_opt.value  # the simulated plastic decay is larger
    assert not rec.extrapolation.is_extrapolation and rec.label == "backtested"


def test_the_price_of_the_plastic_decay_is_visible_in_base_loss(fit):
    rec = recommend(fit=fit, n_params=1e5, n_tokens=2e6)
    loss_at_opt = rec.decay_loss_opt.expected_val_loss
    assert loss_at_opt == pytest.approx(float(Truth().surface(1e5, 2e6)), rel=0.02)
    assert rec.decay_plastic_opt.expected_val_loss == pytest.approx(loss_at_opt + rec.loss_cost)
    # cost = k (ln plastic / ln loss-opt)^2 with k near the simulated curvature of 0.02
    k = rec.loss_cost / math.log(rec.decay_plastic_opt.value / rec.decay_loss_opt.value) ** 2
    assert 0.01 < k < 0.03


def test_extrapolation_is_flagged_with_factors(fit):
    rec = recommend(fit=fit, n_params=3e6, tpp=100)
    ex = rec.extrapolation
    assert ex.is_extrapolation and ex.n_factor == pytest.approx(10.0) and ex.d_factor == pytest.approx(12.5)
    assert any("10x the largest fitted N" in note for note in ex.notes)
    assert rec.n_tokens == pytest.approx(3e8)


def test_compute_budget_uses_the_surface_allocation(fit):
    rec = recommend(fit=fit, compute=1e15)
    assert "compute-optimal" in rec.allocation
    opt = fit.surface.compute_optimal(1e15)
    assert rec.n_params == pytest.approx(opt.n_params) and 6 * rec.n_params * rec.n_tokens == pytest.approx(1e15)


def test_a_study_that_cannot_be_backtested_gives_a_guess():
    three, _ = simulate_trials(n_params=(1e4, 3e4, 1e5), tpp=(20.0,), rng=2)
    rec = recommend(three, n_params=3e5, n_tokens=6e6, n_bootstrap=30)
    assert rec.label == "guess" and rec.decay_loss_opt.label == "guess"
    assert any("is a guess" in w for w in rec.warnings)
    assert any("share one TPP" in w for w in fit_study(three, n_bootstrap=10).warnings)
    assert "LABEL: guess" in rec.summary()


def test_bad_budgets_are_config_errors(fit):
    with pytest.raises(ConfigError):
        recommend(fit=fit, n_params=1e6)
    with pytest.raises(ConfigError):
        recommend(fit=fit, n_params=1e6, n_tokens=1e7, tpp=10)
    with pytest.raises(ConfigError):
        recommend(fit=fit, n_params=-1.0, n_tokens=1e7)
    with pytest.raises(ConfigError):
        recommend(fit=fit, compute=1e15, n_params=1e6)


def test_compute_budget_without_a_surface_is_a_fit_error():
    few, _ = simulate_trials(n_params=(1e4, 3e4), tpp=(5.0, 80.0), rng=3)  # 4 cells: too few for 5 parameters
    with pytest.raises(FitError, match="compute budget needs the loss surface"):
        recommend(few, compute=1e14, n_bootstrap=20)


def test_parse_amount_understands_suffixes():
    assert parse_amount("1e9") == 1e9 and parse_amount("300k") == 3e5 and parse_amount("1.5B") == 1.5e9
    assert parse_amount("20M") == 2e7 and parse_amount("2T") == 2e12


# ------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def trials_csv(trials, tmp_path_factory):
    path = tmp_path_factory.mktemp("rec") / "trials.csv"
    trials.to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_cli_json_has_the_documented_keys(trials_csv, capsys):
    assert main(["recommend", "--trials", str(trials_csv), "--params", "1M", "--tokens", "20M", "--json",
                 "--bootstrap", "40"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    for key in ("decay_loss_opt", "decay_plastic_opt"):
        assert {"value", "low", "high"} <= set(out[key]) and out[key]["low"] < out[key]["value"] < out[key]["high"]
    assert out["extrapolation"]["is_extrapolation"] is True and out["extrapolation"]["n_factor"] == pytest.approx(1e6 / 3e5)
    assert set(out["backtest"]) == {"val_loss", "ft_score"} and out["backtest"]["val_loss"]["available"]
    assert out["budget"]["allocation"] == "given"


@pytest.mark.slow
def test_cli_tpp_and_compute_forms(trials_csv, capsys):
    assert main(["recommend", "--trials", str(trials_csv), "--params", "1e5", "--tpp", "20", "--bootstrap", "20"]) == 0
    text = capsys.readouterr().out
    assert "Recommendation for N = 100k, D = 2M" in text and "plasticity (ft_score)" in text
    assert main(["recommend", "--trials", str(trials_csv), "--compute", "1e15", "--bootstrap", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "compute-optimal" in out["budget"]["allocation"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--params", "1e6"], "exactly one of --tokens or --tpp"),
        (["--compute", "1e15", "--params", "1e6"], "--compute alone"),
    ],
)
def test_cli_bad_budget_is_one_line_and_exit_2(trials_csv, capsys, args, message):
    assert main(["recommend", "--trials", str(trials_csv), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scaling recommend: error: ") and message in err and "\n" not in err


def test_cli_unbracketed_study_is_exit_2(tmp_path, capsys):
    edge, _ = simulate_trials(decays=(0.003, 0.01, 0.03), rng=1)
    path = tmp_path / "edge.csv"
    edge.to_csv(path, index=False)
    assert main(["recommend", "--trials", str(path), "--params", "1e6", "--tpp", "20", "--bootstrap", "10"]) == 2
    assert "no cell has a bracketed optimum" in capsys.readouterr().err
