"""`scaling run`: the main job end to end on a tiny study, then resumed."""

import json

import pandas as pd
import pytest

from scaling.cli import main

SPEC = """
name = "tiny-run"
sizes = ["13k"]
budgets = { tokens = [16384] }
seeds = [0]
tasks = ["arithmetic"]
lr = 1e-2
batch_size = 8
context = 64

[decay]
grid = [0, 0.03, 0.1, 1]  # the per-cell response model needs 4 decays

[run]
device = "cpu"
eval_tokens = 2048
probes = false
"""


@pytest.mark.slow
def test_run_trains_exports_fits_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.toml").write_text(SPEC)
    assert main(["run", "tiny.toml", "--bootstrap", "10", "--no-progress"]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "results" / "tiny-run"
    trials = pd.read_csv(folder / "trials.csv")
    assert sorted(trials["decay"]) == [0, 0.03, 0.1, 1]
    assert (folder / "report.html").stat().st_size > 100_000
    assert json.loads((folder / "fits.json").read_text())["optima"]  # written even when no law fits
    assert "report:" in out and "wall time" in out

    # a second run resumes: nothing is trained again, the same trials are exported
    assert main(["run", "tiny.toml", "--bootstrap", "10", "--no-progress"]) == 0
    again = pd.read_csv(folder / "trials.csv")
    assert len(again) == 4 and sorted(again["val_loss"]) == sorted(trials["val_loss"])


def test_run_with_a_missing_spec_is_one_line_and_exit_two(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "nope.toml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err
