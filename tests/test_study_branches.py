"""Studies with `cooldown_branches = true`: every budget of a size from one shared WSD run, each
branch recorded in its own cell, with the results of separate full runs."""

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from scaling.cli import main
from scaling.errors import ConfigError
from scaling.study import load_spec, run_study
from scaling.study.storage import open_storage

SPEC = """
name = "{name}"
sizes = ["13k"]
budgets = {{ tokens = [4096, 8192, 12288] }}
seeds = [0]
tasks = ["code"]
batch_size = 8
context = 64
schedule = "{schedule}"
storage = "sqlite:///{dir}/{name}.db"
{extra}

[decay]
{decay}

[run]
device = "cpu"
probes = false
eval_tokens = 1024
warmup_frac = {warmup}
"""

pytestmark = pytest.mark.usefixtures("one_thread")


def write_spec(tmp_path: Path, name: str, extra: str = "", schedule: str = "wsd",
               decay: str = "grid = [0, 0.5]", warmup: float = 0.0) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(SPEC.format(name=name, dir=tmp_path, extra=extra, schedule=schedule, decay=decay,
                                warmup=warmup))
    return path


def trials_by_cell(spec) -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = open_storage(spec.storage_url)
    try:
        return {cell.name: optuna.load_study(study_name=spec.study_name(cell), storage=storage).get_trials()
                for cell in spec.cells()}
    finally:
        storage.engine.dispose()


@pytest.mark.slow
def test_branches_fill_every_budget_cell_once_with_the_results_of_full_runs(tmp_path):
    branched = load_spec(write_spec(tmp_path, "branched", "cooldown_branches = true\nbatch_models = 2"))
    assert branched.cooldown_branches
    report = run_study(branched, workers=1, progress=False)
    assert report.ok and report.enqueued == 6
    # one unit: both decays, all three budgets, trained as one stacked run with branches
    assert report.workers[0].ran == 6 and report.workers[0].completed == 6
    cells = trials_by_cell(branched)
    assert len(cells) == 3
    for trials in cells.values():
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
        for t in trials:
            assert t.user_attrs["cooldown_branch"] is True
            assert t.user_attrs["schedule_exact"] is True  # warmup_frac = 0: every branch is exact
            assert t.user_attrs["n_tokens"] == t.user_attrs["config"]["tokens"]
    steps = sorted({t.user_attrs["branch_step"] for trials in cells.values() for t in trials})
    assert len(steps) == 3  # each budget left the shared run at its own step

    plain = load_spec(write_spec(tmp_path, "plain"))
    assert run_study(plain, workers=1, progress=False).ok
    full = trials_by_cell(plain)
    for name, trials in cells.items():
        mine = {t.params["decay"]: t.values for t in trials}
        theirs = {t.params["decay"]: t.values for t in full[name]}
        for decay, (val_loss, ft_score) in theirs.items():
            assert mine[decay][0] == pytest.approx(val_loss, rel=1e-4), (name, decay)
            assert mine[decay][1] == pytest.approx(ft_score, rel=1e-2, abs=1e-3), (name, decay)


@pytest.mark.slow
def test_a_branch_worker_takes_only_budgets_still_waiting(tmp_path):
    """A budget whose trial is already done (say by a plain run) is not trained again."""
    spec = load_spec(write_spec(tmp_path, "partial", "cooldown_branches = true"))
    plain = load_spec(write_spec(tmp_path, "partial"))  # same storage and study names
    from dataclasses import replace

    smallest = replace(plain, budgets=plain.budgets[:1])
    assert run_study(smallest, workers=1, progress=False).ok  # 4096-token cell done the plain way
    report = run_study(spec, workers=1, progress=False)
    assert report.ok and report.workers[0].ran == 4  # 2 decays x the two remaining budgets
    cells = trials_by_cell(spec)
    first = spec.cells()[0].name
    assert all("cooldown_branch" not in t.user_attrs for t in cells[first])
    assert all(t.user_attrs["cooldown_branch"] for name, ts in cells.items() if name != first for t in ts)


@pytest.mark.parametrize("schedule, decay, warmup, message", [
    ("cosine", "grid = [0, 0.5]", 0.0, 'schedule "wsd" for cooldown branches'),
    ("wsd", "low = 0.01\nhigh = 1\nn_trials = 2", 0.0, "a [decay] grid"),
    ("wsd", "grid = [0, 0.5]", 0.1, "expected warmup_frac = 0 in [run]"),
])
def test_cooldown_branches_need_wsd_no_warmup_and_a_decay_grid(tmp_path, capsys, schedule, decay, warmup, message):
    path = write_spec(tmp_path, "bad", "cooldown_branches = true", schedule=schedule, decay=decay, warmup=warmup)
    with pytest.raises(ConfigError, match="cooldown_branches"):
        load_spec(path)
    assert main(["study", "run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_cooldown_branches_must_be_a_boolean(tmp_path):
    with pytest.raises(ConfigError, match="cooldown_branches: expected true or false"):
        load_spec(write_spec(tmp_path, "bad", 'cooldown_branches = "yes"'))
