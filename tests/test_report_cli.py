"""`scaling report FOLDER` as a user runs it: a page on success, one line and exit 2 on bad input."""

from __future__ import annotations

import pytest

from scaling.cli import main
from tests.test_report import synthetic_study


def _one_line_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("scaling report: error: ")
    return lines[0]


def test_report_writes_the_page_and_prints_its_path(tmp_path, capsys):
    trials, curves = synthetic_study(sizes=(2e4,), tpps=(20.0,), tasks=("arithmetic",))
    trials.to_csv(tmp_path / "trials.csv", index=False)
    curves.to_csv(tmp_path / "curves.csv", index=False)
    assert main(["report", str(tmp_path), "--bootstrap", "10"]) == 0
    page = tmp_path / "report.html"
    assert page.is_file() and str(page) in capsys.readouterr().out
    assert "data-figure='curves'" in page.read_text(encoding="utf-8")


def test_folder_without_trials_table(tmp_path, capsys):
    line = _one_line_error(capsys, ["report", str(tmp_path)])
    assert str(tmp_path / "trials.csv") in line and "no such file" in line


def test_missing_folder(tmp_path, capsys):
    line = _one_line_error(capsys, ["report", str(tmp_path / "nowhere")])
    assert "no such folder" in line


@pytest.mark.parametrize("column", ["n_params", "decay", "val_loss"])
def test_table_missing_a_required_column(tmp_path, capsys, column):
    trials, _ = synthetic_study(sizes=(2e4,), tpps=(20.0,), with_ft=False)
    trials.drop(columns=[column]).to_csv(tmp_path / "trials.csv", index=False)
    line = _one_line_error(capsys, ["report", str(tmp_path)])
    assert f"missing column '{column}'" in line and "trials.csv" in line
    assert not (tmp_path / "report.html").exists()


def test_table_with_text_where_a_number_belongs(tmp_path, capsys):
    trials, _ = synthetic_study(sizes=(2e4,), tpps=(20.0,), with_ft=False)
    trials["decay"] = trials["decay"].astype(object)
    trials.loc[3, "decay"] = "lots"
    trials.to_csv(tmp_path / "trials.csv", index=False)
    line = _one_line_error(capsys, ["report", str(tmp_path)])
    assert "'decay' must be numeric" in line


def test_empty_table(tmp_path, capsys):
    (tmp_path / "trials.csv").write_text("n_params,n_tokens,decay,val_loss\n")
    line = _one_line_error(capsys, ["report", str(tmp_path)])
    assert "no rows" in line
