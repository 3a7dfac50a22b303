"""A planned trial's identity: a spec edited under the same name is refused, naming what
changed, unless --allow-changed-spec, which leaves the old trials stale (kept, not exported)."""

from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from scaling.cli import main
from scaling.errors import ConfigError
from scaling.study import export_study, load_spec, run_study, study_status
from scaling.study.storage import open_storage

SPEC = """
name = "ident"
sizes = [{{ name = "tiny", d_model = 16, n_layers = 1, n_heads = 2 }}]
budgets = {{ tokens = [4096] }}
tasks = {tasks}
lr = {lr}
storage = "sqlite:///{folder}/optuna.db"

[decay]
grid = [0, 0.1]

[run]
device = "cpu"
{run}
"""


def instant(cfg):
    """A fake trial that reports its lr as its loss (no training)."""
    return {"val_loss": 3.0 + cfg.lr, "ft_score": 0.5, "ft_nll": 0.7, "lr": cfg.lr, "seed": cfg.seed, "curve": []}


def write_spec(tmp_path: Path, lr: float = 3e-3, tasks: str = '["arithmetic"]', run: str = "") -> Path:
    path = tmp_path / "ident.toml"
    path.write_text(SPEC.format(lr=lr, tasks=tasks, folder=tmp_path, run=run))
    return path


def run(path: Path, **kw):
    return run_study(load_spec(path), workers=1, trial_fn=instant, progress=False, **kw)


def trials(path: Path) -> list:
    spec = load_spec(path)
    storage = open_storage(spec.storage_url)
    found = optuna.load_study(study_name=spec.study_name(spec.cells()[0]), storage=storage).get_trials()
    storage.engine.dispose()
    return found


def test_the_same_spec_again_runs_nothing_new(tmp_path):
    path = write_spec(tmp_path)
    assert run(path).enqueued == 2
    again = run(path)
    assert again.ok and again.enqueued == 0
    assert len({t.user_attrs["identity"] for t in trials(path)}) == 1


def test_an_edited_lr_is_refused_naming_the_change_and_nothing_is_enqueued(tmp_path, capsys):
    path = write_spec(tmp_path)
    run(path)
    write_spec(tmp_path, lr=1e-3)
    with pytest.raises(ConfigError, match=r"lr: 0\.003 -> 0\.001"):
        run(path)
    assert len(trials(path)) == 2
    rc = main(["study", "run", str(path), "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "lr: 0.003 -> 0.001" in err and "--allow-changed-spec" in err


@pytest.mark.parametrize("edit, named", [
    (dict(tasks='["arithmetic", "source"]'), 'tasks: ["arithmetic"] -> ["arithmetic", "source"]'),
    (dict(run="eval_tokens = 2048"), "eval_tokens: 65536 -> 2048"),
    (dict(run='decay_mode = "independent"'), "decay_mode: coupled -> independent"),
])  # fmt: skip
def test_other_edits_are_named_too(tmp_path, edit, named):
    path = write_spec(tmp_path)
    run(path)
    write_spec(tmp_path, **edit)
    with pytest.raises(ConfigError) as info:
        run(path)
    assert named in str(info.value)


def test_a_changed_task_file_or_corpus_file_is_a_changed_spec(tmp_path):
    task, corpus = tmp_path / "task.jsonl", tmp_path / "corpus.jsonl"
    task.write_text('{"prompt": "1+1=", "completion": "2"}\n{"prompt": "2+2=", "completion": "4"}\n')
    corpus.write_text('{"text": "hello world"}\n')
    path = write_spec(tmp_path, tasks=f'["jsonl:{task}"]', run=f'corpus = "{corpus}"')
    run(path)
    task.write_text('{"prompt": "1+1=", "completion": "3"}\n{"prompt": "2+2=", "completion": "4"}\n')
    with pytest.raises(ConfigError, match=f"task_sha256 jsonl:{task}"):
        run(path)
    task.write_text('{"prompt": "1+1=", "completion": "2"}\n{"prompt": "2+2=", "completion": "4"}\n')
    corpus.write_text('{"text": "hello there"}\n')
    with pytest.raises(ConfigError, match="corpus_sha256"):
        run(path)


def test_allow_changed_spec_keeps_old_trials_but_counts_and_exports_only_the_new_ones(tmp_path):
    path = write_spec(tmp_path)
    run(path)
    write_spec(tmp_path, lr=1e-3)
    report = run(path, allow_changed_spec=True)
    assert report.ok and report.enqueued == 2
    states = [(t.state, t.user_attrs["config"]["lr"]) for t in trials(path)]
    assert states == [(TrialState.COMPLETE, 3e-3)] * 2 + [(TrialState.COMPLETE, 1e-3)] * 2
    cell = study_status(load_spec(path)).cells[0]
    assert (cell.planned, cell.complete) == (2, 2)
    result = export_study(load_spec(path), out_dir=tmp_path / "out")
    assert (result.n_trials, result.n_stale) == (2, 2)
    assert sorted(pd.read_csv(result.trials_csv)["lr"]) == [1e-3, 1e-3]
    # going back to the first settings is one more change, not a return to the old trials
    write_spec(tmp_path)
    with pytest.raises(ConfigError, match=r"lr: 0\.001 -> 0\.003"):
        run(path)


def test_allow_changed_spec_retires_waiting_trials_of_the_old_settings(tmp_path):
    path = write_spec(tmp_path)
    spec = load_spec(path)
    from scaling.study.plan import ensure_planned

    storage = open_storage(spec.storage_url)
    ensure_planned(spec, storage)  # planned, never run
    write_spec(tmp_path, lr=1e-3)
    ensure_planned(load_spec(path), storage, allow_changed_spec=True)
    storage.engine.dispose()
    old = [t for t in trials(path) if t.state == TrialState.FAIL]
    assert [t.user_attrs["fail_kind"] for t in old] == ["spec_changed"] * 2
    assert run(path).ok
    assert sorted(t.user_attrs["config"]["lr"] for t in trials(path) if t.state == TrialState.COMPLETE) == [1e-3] * 2


@pytest.mark.slow
def test_a_study_planned_before_identities_is_checked_against_its_recorded_configs(tmp_path):
    path = write_spec(tmp_path)
    run(path)
    spec = load_spec(path)
    storage = open_storage(spec.storage_url)
    study = optuna.load_study(study_name=spec.study_name(spec.cells()[0]), storage=storage)
    old = optuna.create_study(storage=storage, study_name="ident/old-copy", directions=["minimize", "maximize"])
    for t in study.get_trials():  # the same trials as an older version of scaling stored them
        attrs = {k: v for k, v in t.user_attrs.items() if k != "identity"}
        old.add_trial(optuna.trial.create_trial(state=t.state, values=t.values, params=t.params,
                                                distributions=t.distributions, user_attrs=attrs))
    storage.delete_study(study._study_id)
    storage.engine.dispose()
    import sqlite3

    with sqlite3.connect(tmp_path / "optuna.db") as con:
        con.execute("UPDATE studies SET study_name = ? WHERE study_name = ?", (spec.study_name(spec.cells()[0]),
                                                                               "ident/old-copy"))
    assert run(path).enqueued == 0  # same settings: the old trials count
    write_spec(tmp_path, lr=1e-3)
    with pytest.raises(ConfigError, match=r"lr: 0\.003 -> 0\.001"):
        run(path)


def test_export_refuses_an_edited_spec_until_it_has_been_run(tmp_path):
    path = write_spec(tmp_path)
    run(path)
    write_spec(tmp_path, lr=1e-3)
    with pytest.raises(ConfigError, match=r"lr: 0\.003 -> 0\.001.*nothing was written"):
        export_study(load_spec(path), out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_pareto_front_of_current_trials_is_optunas_when_none_is_stale():
    import random

    from scaling.study.status import _pareto

    study = optuna.create_study(directions=["minimize", "maximize"])
    rng = random.Random(0)
    for _ in range(30):
        study.add_trial(optuna.trial.create_trial(values=[rng.random(), rng.random()], params={}, distributions={}))
    study.add_trial(optuna.trial.create_trial(values=list(study.trials[0].values), params={}, distributions={}))
    assert sorted(t.number for t in _pareto(study.get_trials(), study.directions)) == \
        sorted(t.number for t in study.best_trials)


def test_status_of_an_edited_spec_warns_that_its_counts_are_for_the_old_settings(tmp_path, capsys):
    path = write_spec(tmp_path)
    run(path)
    assert main(["study", "status", str(path)]) == 0
    assert capsys.readouterr().err == ""
    write_spec(tmp_path, lr=1e-3)
    assert main(["study", "status", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "complete" in out
    assert err.startswith("scaling study: warning: the spec changed") and "lr: 0.003 -> 0.001" in err
