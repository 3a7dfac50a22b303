"""The Python API: the README's examples run as written, and importing the light parts stays light."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_run_main_job import SPEC as TINY_SPEC

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_blocks() -> list[str]:
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_fit_recommend_report_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fit_block = readme_python_blocks()[0]
    exec(compile(fit_block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "Recommendation for N = 1M, D = 20M" in out
    assert (tmp_path / "results" / "demo" / "report.html").stat().st_size > 100_000


@pytest.mark.slow
def test_the_readme_training_example_runs_as_written_on_a_tiny_spec(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY_SPEC)
    block = readme_python_blocks()[1]
    assert 'scaling.run("studies/quickstart.toml")' in block
    namespace: dict = {}
    exec(compile(block.replace("studies/quickstart.toml", "tiny.toml"), "README.md", "exec"), namespace)
    assert namespace["metrics"]["val_loss"] > 0 and "ft_arithmetic_after" in namespace["metrics"]
    outcome = namespace["outcome"]
    assert outcome.n_trials == 4 and outcome.report.is_file()  # the tiny spec: one cell x 4 decays
    assert outcome.trials_csv.resolve() == tmp_path / "results" / "tiny-run" / "trials.csv"


def test_help_lists_the_public_api():
    text = subprocess.run([sys.executable, "-c", "import pydoc, scaling; print(pydoc.render_doc(scaling))"],
                          capture_output=True, text=True, check=True).stdout
    for name in ("run(", "load_trials(", "fit_study(", "recommend(", "write_report(", "train_one(", "RunConfig"):
        assert name in text, name


def test_specs_configs_and_fits_load_without_torch():
    code = ("import sys, scaling.config, scaling.core.schedule, scaling.study.spec, scaling.fit, scaling; "
            "scaling.fit_study; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
