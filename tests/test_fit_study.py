"""fit_study and `scaling fit`: everything on one table, fits.json, and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from scaling.cli import main
from scaling.errors import DataError, FitError
from scaling.fit import fit_study
from scaling.fit.simulate import Truth, simulate_trials


@pytest.fixture(scope="module")
def trials() -> pd.DataFrame:
    df, _ = simulate_trials(Truth(), rng=5, seeds=1)
    return df


@pytest.fixture(scope="module")
def study(trials):
    return fit_study(trials, n_bootstrap=60, source="sim.csv")


def test_fit_study_fits_every_objective_and_the_surface(study, trials):
    assert study.mode == "study" and study.n_trials == len(trials) and study.n_cells == 12
    assert [o for o, _ in study.objectives] == ["val_loss", "ft_score"]
    assert len(study.optima) == 24
    for objective in ("val_loss", "ft_score"):
        assert study.law(objective).form == "n_d"
        assert study.tau_law(objective).formula == "ln tau* = c + m ln TPP"
        assert study.backtest(objective).available
    truth = Truth()
    assert study.surface is not None and study.surface.n_points == 12
    # the surface through the cells' optimal losses lands near the simulated one
    assert float(study.surface.predict(1e5, 2e6)) == pytest.approx(float(truth.surface(1e5, 2e6)), rel=0.02)


def test_to_dict_is_json_and_has_the_documented_keys(study):
    out = json.loads(json.dumps(study.to_dict(), allow_nan=False))
    assert out["schema"] == "scaling.fits/1" and out["mode"] == "study"
    assert {"E", "A", "B", "alpha", "beta"} <= set(out)
    assert set(out["laws"]) == set(out["tau_laws"]) == set(out["backtests"]) == {"val_loss", "ft_score"}
    law = out["laws"]["ft_score"]
    assert set(law["coefficients"]) == {"c", "a", "b"}
    assert {"value", "low", "high", "se", "term"} <= set(law["coefficients"]["a"])
    cell = out["optima"][0]
    for key in ("cell", "n_params", "n_tokens", "tpp", "objective", "decay_opt", "low", "high", "log_sd",
                "bracketed", "n_trials", "best_observed_decay", "value_at_opt", "reason"):  # fmt: skip
        assert key in cell
    assert out["surface"]["ci"]["alpha"][0] < out["alpha"] < out["surface"]["ci"]["alpha"][1]


def test_summary_is_aligned_tables(study):
    text = study.summary()
    for heading in ("Loss surface", "Per-cell optima: val_loss", "Decay law: ft_score", "Timescale law",
                    "Backtest: ft_score"):  # fmt: skip
        assert heading in text
    table = text.split("Per-cell optima: ft_score (maximise)\n")[1].split("\n\n")[0].splitlines()
    assert len({line.index("decay*") if "decay*" in line else None for line in table[:1]}) == 1
    assert len({len(line.rstrip()) <= len(table[1]) for line in table[2:]}) == 1  # nothing past the rule


def test_objectives_can_be_chosen(trials):
    fit = fit_study(trials, objectives={"ft_gain": "max"}, n_bootstrap=20)
    assert [o for o, _ in fit.objectives] == ["ft_gain"]
    assert fit.surface is None  # no val_loss objective, no surface


@pytest.mark.slow
def test_fit_study_is_fast_enough_on_a_study_sized_table(trials):
    import time

    start = time.process_time()
    fit_study(trials.sample(100, random_state=0), n_bootstrap=200)
    assert time.process_time() - start < 20  # a few seconds of CPU; generous for a shared machine


# ------------------------------------------------------------------------- bad input (API)


def test_missing_and_invalid_columns_are_data_errors(trials):
    with pytest.raises(DataError, match="missing column 'n_params'"):
        fit_study(trials.drop(columns=["n_params"]))
    with pytest.raises(DataError, match="missing column 'decay'"):
        fit_study(trials.drop(columns=["decay"]))
    with pytest.raises(DataError, match="'n_tokens' must be finite and > 0"):
        fit_study(trials.assign(n_tokens=-trials["n_tokens"]))
    with pytest.raises(DataError, match="'decay' must be finite and >= 0"):
        fit_study(trials.assign(decay=trials["decay"] - 0.01))
    with pytest.raises(DataError, match="'n_params' must be numeric"):
        fit_study(trials.assign(n_params="big"))
    with pytest.raises(DataError, match="no objective column"):
        fit_study(trials.drop(columns=["val_loss", "ft_score"]))


def test_fewer_cells_than_parameters_is_a_fit_error():
    small, _ = simulate_trials(n_params=(1e4, 3e4), tpp=(20.0,), rng=1)
    with pytest.raises(FitError, match="needs at least 3 bracketed cells"):
        fit_study(small, n_bootstrap=10)


def test_all_optima_unbracketed_is_a_fit_error():
    edge, _ = simulate_trials(decays=(0.003, 0.01, 0.03), rng=1)  # every optimum lies above 0.03
    with pytest.raises(FitError, match="no cell has a bracketed optimum"):
        fit_study(edge, n_bootstrap=10)


# ------------------------------------------------------------------------------ the CLI


@pytest.mark.slow
def test_cli_fit_prints_tables_and_writes_fits_json(tmp_path, trials, capsys):
    path = tmp_path / "trials.csv"
    trials.to_csv(path, index=False)
    assert main(["fit", str(path), "--bootstrap", "30"]) == 0
    out = capsys.readouterr().out
    assert "Decay law: val_loss" in out and f"wrote {tmp_path / 'fits.json'}" in out
    saved = json.loads((tmp_path / "fits.json").read_text())
    assert saved["source"] == str(path) and saved["settings"]["n_bootstrap"] == 30


@pytest.mark.slow
def test_cli_fit_json_for_a_surface_only_table_puts_parameters_at_the_top(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = np.geomspace(1e7, 1e9, 30)
    d = n * rng.uniform(5, 100, 30)
    table = pd.DataFrame({"Model Size": n, "Tokens": d,
                          "Loss": 1.7 + 300 * n**-0.3 + 900 * d**-0.35 + rng.normal(0, 0.003, 30)})  # fmt: skip
    path = tmp_path / "points.csv"
    table.to_csv(path, index=False)
    argv = ["fit", str(path), "--json", "--bootstrap", "0", "--no-write",
            "--col", "n_params=Model Size", "--col", "n_tokens=Tokens", "--col", "val_loss=Loss"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "surface" and out["E"] == pytest.approx(1.7, rel=0.05)
    assert {"E", "A", "B", "alpha", "beta"} <= set(out) and out["laws"] == {}
    assert not (tmp_path / "fits.json").exists()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda df: df.drop(columns=["n_tokens", "tpp"]), "missing column 'n_tokens'"),
        (lambda df: df.assign(n_params=0.0), "'n_params' must be finite and > 0"),
        (lambda df: df.assign(decay=-df["decay"] - 1), "'decay' must be finite and >= 0"),
        (lambda df: df[df["n_params"] <= 3e4].query("tpp == 20"), "needs at least 3 bracketed cells"),
        (lambda df: df[df["decay"].between(0.0005, 0.0035)], "no cell has a bracketed optimum"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, trials, capsys, mutate, message):
    path = tmp_path / "trials.csv"
    mutate(trials.copy()).to_csv(path, index=False)
    assert main(["fit", str(path), "--bootstrap", "10", "--no-write"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scaling fit: error: ") and message in err and "\n" not in err


def test_cli_bad_options_and_missing_file(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "nope.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "t.csv").write_text("n_params,n_tokens,val_loss\n1,2,3\n")
    assert main(["fit", str(tmp_path / "t.csv"), "--col", "n_params"]) == 2
    assert "NAME=COLUMN" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "t.csv"), "--objective", "val_loss:lowest"]) == 2
    assert "COLUMN:min" in capsys.readouterr().err


def test_infinite_values_do_not_leak_into_json(study):
    text = json.dumps(study.to_dict(), allow_nan=False)
    assert "Infinity" not in text and "NaN" not in text
    assert all(math.isfinite(o["tau_opt"]) or o["tau_opt"] is None for o in study.to_dict()["optima"])
