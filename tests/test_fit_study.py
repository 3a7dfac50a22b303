"""fit_study and `scaling fit`: per-cell estimands, the claims, the law table, fits.json, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling.cli import main
from scaling.errors import DataError, FitError
from scaling.fit import fit_study
from scaling.fit.simulate import Truth, simulate_trials

QUICKSTART = Path(__file__).resolve().parent / "data" / "quickstart_one_seed_4fb7b96.csv"  # the one-seed quickstart run of 2026-11-27


@pytest.fixture(scope="module")
def trials() -> pd.DataFrame:
    df, _ = simulate_trials(rng=5, seeds=3)
    return df


@pytest.fixture(scope="module")
def study(trials):
    return fit_study(trials, n_bootstrap=60, source="sim.csv")


def test_fit_study_fits_every_estimand_law_and_claim(study, trials):
    assert study.mode == "study" and study.n_trials == len(trials) and study.n_cells == 12
    assert [o for o, _ in study.objectives] == ["val_loss", "ft_score"] and len(study.optima) == 24
    for objective in ("val_loss", "ft_score"):
        assert study.law(objective).form == "n_d"
        assert study.tolerance_law(objective) is not None
        forms = {law.form for law in study.tau_laws if law.objective == objective}
        assert forms == {"n_d", "tpp", "tpp_fixed"}
        assert study.backtest(objective).available
    assert {c.name for c in study.claims} == {"plastic_above_loss", "optima_fall_with_tpp"}
    # the simulated plastic optimum is larger, and both optima fall with TPP: the tests say so
    assert study.claim("plastic_above_loss").verdict == "supports"
    assert study.claim("optima_fall_with_tpp").verdict == "supports"
    assert study.lr == 6e-3 and study.batch_tokens == 2048.0
    assert {obj for obj, _, _ in study.noise} == {"val_loss", "ft_score"}
    assert study.plasticity == "ft_score"  # no `plasticity` column: the old tables' objective


def test_to_dict_is_json_with_the_documented_keys(study):
    out = json.loads(json.dumps(study.to_dict(), allow_nan=False))
    assert out["schema"] == "scaling.fits/3" and out["mode"] == "study"
    for key in ("noise", "optima", "laws", "tau_laws", "tolerance_laws", "carriers", "backtests", "claims", "skipped"):
        assert key in out
    cell = out["optima"][0]
    for key in ("kind", "decay_opt", "low", "high", "decay_tol", "tol_kind", "tol_low", "tol_high", "delta",
                "interval_basis", "evidence", "n_seeds"):  # fmt: skip
        assert key in cell
    assert out["plasticity"] == "ft_score"
    law = out["laws"]["val_loss"]
    assert set(law["coefficients"]) == {"c", "a", "b"} and "held_out_mean_abs_log_error" in law
    claim = out["claims"][0]
    assert claim["verdict"] in ("supports", "does not support", "cannot tell") and claim["pooled"][0]["low"] is not None


def test_summary_prints_estimands_the_claims_and_the_law_table(study):
    text = study.summary()
    for heading in ("Per-cell estimands: val_loss", "decay* kind", "Claim 'plasticity wants more decay",
                    "Claim 'both optima fall as TPP grows'", "Laws: ft_score", "ln tau* = c - 0.53 ln TPP",
                    "held-out", "Backtest: ft_score"):  # fmt: skip
        assert heading in text


@pytest.mark.slow
def test_one_seed_real_quickstart_gives_estimands_bounds_and_says_what_intervals_rest_on():
    fit = fit_study(pd.read_csv(QUICKSTART), n_bootstrap=60, source="quickstart")
    assert len(fit.optima) == 12
    assert {o.interval_basis for o in fit.optima} == {"response-model smoothness (one seed per decay)"}
    kinds = {o.kind for o in fit.optima}
    assert "censored_below" in kinds  # the plateau: no weight decay is as good as any
    assert any("rest on the response model's smoothness" in w for w in fit.warnings)
    assert all(o.tol_kind in ("interior", "censored_below", "censored_above") for o in fit.optima)


@pytest.mark.slow
def test_deltas_can_be_set_per_objective(trials):
    fit = fit_study(trials, n_bootstrap=0, deltas={"val_loss": 0.05})
    assert {o.delta for o in fit.optima_for("val_loss")} == {0.05}
    assert {o.delta for o in fit.optima_for("ft_score")} == {0.01}


def as_nll_study(trials: pd.DataFrame) -> pd.DataFrame:
    """The same study with the spec's `plasticity = "nll"`: ft_nll (lower is better) mirrors
    ft_score, so its optima must be ft_score's, found as minima."""
    return trials.assign(ft_nll=2.0 - trials["ft_score"], plasticity="nll")


@pytest.mark.slow
def test_a_plasticity_nll_table_fits_ft_nll_as_the_minimised_plasticity_objective(study, trials):
    fit = fit_study(as_nll_study(trials), n_bootstrap=60, source="sim.csv")
    assert fit.objectives == (("val_loss", "min"), ("ft_nll", "min")) and fit.plasticity == "ft_nll"
    for by_score, by_nll in zip(study.optima_for("ft_score"), fit.optima_for("ft_nll"), strict=True):
        assert (by_nll.cell, by_nll.kind, by_nll.direction) == (by_score.cell, by_score.kind, "min")
        assert by_nll.decay_opt == pytest.approx(by_score.decay_opt, rel=1e-6)
    delta = fit.claim("plastic_above_loss")
    assert "plasticity objective ft_nll" in delta.statement and delta.verdict == "supports"
    assert delta.pooled[0].value == pytest.approx(study.claim("plastic_above_loss").pooled[0].value, rel=1e-6)
    assert [r.label for r in fit.claim("optima_fall_with_tpp").pooled] == ["val_loss pooled slope",
                                                                           "ft_nll pooled slope"]  # fmt: skip
    out = json.loads(json.dumps(fit.to_dict(), allow_nan=False))
    assert out["plasticity"] == "ft_nll" and out["objectives"] == {"val_loss": "min", "ft_nll": "min"}
    assert "Plasticity objective: ft_nll (held-out NLL after fine-tuning, lower is better)" in fit.summary()


def test_explicit_objectives_win_and_name_the_plasticity_objective(trials):
    nll = as_nll_study(trials[trials["tpp"] == 20.0])
    chosen = fit_study(nll, objectives={"val_loss": "min", "ft_score": "max"}, n_bootstrap=0)
    assert chosen.plasticity == "ft_score" and [o for o, _ in chosen.objectives] == ["val_loss", "ft_score"]
    both = fit_study(nll, objectives={"val_loss": "min", "ft_score": "max", "ft_nll": "min"}, n_bootstrap=0)
    assert both.plasticity == "ft_nll"  # the table's choice among several
    assert any("the plasticity objective (the claims, decay_plastic_opt) is ft_nll" in w for w in both.warnings)


def test_simulated_ft_nll_is_minimised_and_its_intervals_hold_the_plasticity_truth():
    """ft_nll with its own noise (simulate_trials(plasticity="nll")): its per-cell optima, found as
    minima, cover the true plasticity decay* about as often as their 90% level says."""
    from scaling.fit.optima import cell_estimates

    df, cells = simulate_trials(rng=5, seeds=3, plasticity="nll")
    assert set(df["plasticity"]) == {"nll"} and df["ft_nll"].notna().all()
    est = cell_estimates(df, {"ft_nll": "min"}, n_bootstrap=60, seed=0)
    true = dict(zip(cells["cell"], np.exp(cells["log_decay_plastic_opt"])))
    hits = [o.low <= true[o.cell] <= o.high for o in est.optima["ft_nll"]]
    assert len(hits) == 12 and sum(hits) >= 10, hits


def test_a_plasticity_nll_table_without_nll_values_falls_back_to_ft_score_and_says_so(trials):
    fit = fit_study(as_nll_study(trials[trials["tpp"] == 20.0]).assign(ft_nll=np.nan), n_bootstrap=0)
    assert fit.plasticity == "ft_score" and [o for o, _ in fit.objectives] == ["val_loss", "ft_score"]
    assert "the table's plasticity objective ft_nll has no values in the table; fitted ft_score instead" in fit.warnings


def test_a_table_mixing_plasticity_choices_is_a_data_error(trials):
    mixed = as_nll_study(trials).assign(plasticity=["nll", "score"] * (len(trials) // 2))
    with pytest.raises(DataError, match="mixed.csv: column 'plasticity': one objective per table"):
        fit_study(mixed, n_bootstrap=0, source="mixed.csv")


# ------------------------------------------------------------------------- bad input (API)


def test_missing_and_invalid_columns_are_data_errors(trials):
    with pytest.raises(DataError, match="missing column 'n_params'"):
        fit_study(trials.drop(columns=["n_params"]))
    with pytest.raises(DataError, match="missing column 'decay'"):
        fit_study(trials.drop(columns=["decay"]))
    with pytest.raises(DataError, match="'decay' must be finite and >= 0"):
        fit_study(trials.assign(decay=trials["decay"] - 1.0))
    with pytest.raises(DataError, match="no objective column"):
        fit_study(trials.drop(columns=["val_loss", "ft_score"]))


def test_nothing_fittable_is_a_fit_error(trials):
    with pytest.raises(FitError, match="needs 4 or more distinct decays"):
        fit_study(trials[trials["decay"].isin(sorted(trials["decay"].unique())[:1])], n_bootstrap=10)
    with pytest.raises(FitError, match="no objective column has finite values"):
        fit_study(trials.assign(val_loss=np.nan, ft_score=np.nan), n_bootstrap=10)


# ------------------------------------------------------------------------------ the CLI


@pytest.mark.slow
def test_cli_fit_prints_tables_and_writes_fits_json(tmp_path, trials, capsys):
    path = tmp_path / "trials.csv"
    trials.to_csv(path, index=False)
    assert main(["fit", str(path), "--bootstrap", "30", "--delta", "val_loss=0.02"]) == 0
    out = capsys.readouterr().out
    assert "Per-cell estimands: val_loss" in out and f"wrote {tmp_path / 'fits.json'}" in out
    saved = json.loads((tmp_path / "fits.json").read_text())
    assert saved["settings"]["n_bootstrap"] == 30 and saved["settings"]["deltas"] == {"val_loss": 0.02}


@pytest.mark.slow
def test_cli_all_censored_table_reports_bounds_instead_of_failing(tmp_path, capsys):
    """Every loss optimum below the grid (decays start high): bounds and the tolerance, no decay* law."""
    df, _ = simulate_trials(Truth(grid_shift_sd=0.0), rng=2, seeds=2, taus=(0.1, 0.05, 0.025, 0.0125))
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    assert main(["fit", str(path), "--bootstrap", "20", "--no-write", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    kinds = {o["kind"] for o in out["optima"] if o["objective"] == "val_loss"}
    assert kinds == {"censored_below"} and out["laws"]["val_loss"] is None
    assert any("no decay law" in w and "censored" in w for w in out["warnings"])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda df: df.drop(columns=["n_tokens", "tpp"]), "missing column 'n_tokens'"),
        (lambda df: df.assign(n_params=0.0), "'n_params' must be finite and > 0"),
        (lambda df: df[df["decay"] == 0.0], "needs 4 or more distinct decays"),  # one decay per cell
        (lambda df: df.assign(val_loss=np.nan, ft_score=np.nan), "no objective column has finite values"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, trials, capsys, mutate, message):
    path = tmp_path / "trials.csv"
    mutate(trials.copy()).to_csv(path, index=False)
    assert main(["fit", str(path), "--bootstrap", "10", "--no-write"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scaling fit: error: ") and message in err and "\n" not in err


def test_cli_bad_options(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("n_params,n_tokens,val_loss\n1,2,3\n")
    assert main(["fit", str(tmp_path / "t.csv"), "--delta", "val_loss=-1"]) == 2
    assert "DELTA > 0" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "t.csv"), "--objective", "val_loss:lowest"]) == 2
    assert "COLUMN:min" in capsys.readouterr().err


def test_infinite_values_do_not_leak_into_json(study):
    text = json.dumps(study.to_dict(), allow_nan=False)
    assert "Infinity" not in text and "NaN" not in text
    assert all(o["tau_opt"] is None or math.isfinite(o["tau_opt"]) for o in study.to_dict()["optima"])
