"""Several workers on one storage run every planned trial exactly once (SQLite and PostgreSQL),
with the real pipeline at the smallest ladder size and a tiny token budget."""

import csv
import multiprocessing
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from scaling.cli import main
from scaling.study import load_spec, run_study
from scaling.study.storage import open_storage
from scaling.study.claim import claim

TINY = """
name = "tiny"
sizes = ["13k"]
budgets = { tokens = [20000] }
seeds = [0]
tasks = ["arithmetic"]
storage = "{storage}"

[decay]
grid = [0, 0.1, 1]

[run]
device = "cpu"
eval_tokens = 4096

[worker]
heartbeat_interval = 1
grace_period = 5
"""


def tiny_spec(tmp_path: Path, storage: str):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.replace("{storage}", storage))
    return load_spec(path)


def assert_each_planned_trial_completed_once(spec, url):
    storage = open_storage(url)
    for cell in spec.cells():
        trials = optuna.load_study(study_name=spec.study_name(cell), storage=storage).get_trials()
        assert [t.state for t in trials] == [TrialState.COMPLETE] * len(spec.plan())
        assert sorted(t.user_attrs["plan"] for t in trials) == sorted(p.key for p in spec.plan())
        assert sorted(t.params["decay"] for t in trials) == sorted(spec.decay.grid)
        for t in trials:
            assert t.user_attrs["config"]["decay"] == t.params["decay"]
            assert t.user_attrs["code_version"] and t.user_attrs["device"] == "cpu"
            assert len(t.user_attrs["curve"]) >= 1 and t.user_attrs["trial_wall_s"] > 0
    storage.engine.dispose()


@pytest.mark.slow
def test_three_sqlite_workers_run_each_planned_trial_once_and_export_it(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/optuna.db"
    spec = tiny_spec(tmp_path, url)
    report = run_study(spec, workers=3, progress=False)
    assert report.ok and report.enqueued == 3 and report.workers == (0, 0, 0)
    assert_each_planned_trial_completed_once(spec, url)

    assert main(["study", "status", spec.path]) == 0
    out = capsys.readouterr().out
    assert "13k@20ktok" in out and "Pareto front" in out and "finished" in out

    assert main(["study", "export", spec.path, "--out", str(tmp_path / "out")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "trials.csv")))
    assert len(rows) == 3
    for column in ("n_params", "n_tokens", "tpp", "decay", "lr", "batch_tokens", "tau", "seed", "val_loss",
                   "train_loss", "gap", "ft_score", "ft_gain", "probe_acc", "qk_rank", "ft_arithmetic_before",
                   "ft_arithmetic_after", "wall_s", "trial_number", "cell", "size"):
        assert all(row[column] != "" for row in rows), column
    curves = list(csv.DictReader(open(tmp_path / "out" / "curves.csv")))
    assert {(r["cell"], r["trial_number"]) for r in curves} == {(r["cell"], r["trial_number"]) for r in rows}

    again = run_study(spec, workers=1, progress=False)  # resuming a finished study runs nothing
    assert again.ok and again.enqueued == 0 and again.workers[0].ran == 0


@pytest.mark.slow
@pytest.mark.postgres
def test_three_workers_on_postgresql_run_each_planned_trial_once(tmp_path, postgres_url):
    spec = tiny_spec(tmp_path, "sqlite:///unused.db")
    report = run_study(spec, storage=postgres_url, workers=3, progress=False)
    assert report.ok and report.workers == (0, 0, 0)
    assert_each_planned_trial_completed_once(spec, postgres_url)


def _claim_until_empty(url: str, barrier, results) -> None:
    storage = open_storage(url)
    study = optuna.load_study(study_name="race", storage=storage)
    barrier.wait()  # start claiming together, or the first process would take everything
    claimed = []
    if (first := claim(storage, study)) is not None:
        claimed.append(first)
    # SQLite's busy handler lets one process that keeps re-taking the write lock starve the
    # others; meeting again after one claim each keeps all three in the race to the end.
    barrier.wait()
    while (trial_id := claim(storage, study)) is not None:
        claimed.append(trial_id)
    results.put(claimed)


@pytest.mark.slow
def test_concurrent_sqlite_claims_never_hand_one_trial_to_two_workers(tmp_path):
    """Plain pysqlite starts its transaction at the first write, so Optuna's check-then-set
    of WAITING -> RUNNING can interleave across processes (that hands one trial to two
    workers); open_storage must prevent it."""
    url = f"sqlite:///{tmp_path}/race.db"
    study = optuna.create_study(study_name="race", storage=open_storage(url))
    for i in range(90):
        study.enqueue_trial({"x": i})
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_claim_until_empty, args=(url, barrier, results)) for _ in range(3)]
    for p in procs:
        p.start()
    parts = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    claimed = [t for part in parts for t in part]
    assert sum(1 for part in parts if part) >= 2, "the claims should have overlapped in time"
    assert len(claimed) == 90 and len(set(claimed)) == 90


SAMPLED = """
name = "sampled"
sizes = [{ name = "tiny", d_model = 16, n_layers = 1, n_heads = 2 }]
budgets = { tokens = [1000] }
seeds = [0, 1]
tasks = ["arithmetic"]
storage = "sqlite:///{tmp}/optuna.db"

[decay]
low = 1e-3
high = 10
sampler = "{sampler}"
n_trials = 4
"""


def bowl(cfg):
    """A fake trial whose loss is a bowl in log decay (instant, no training)."""
    import math

    x = math.log10(cfg.decay)
    return {"val_loss": 3 + (x + 1) ** 2, "ft_score": 1 / (1 + x * x), "ft_nll": 1 + x * x, "seed": cfg.seed, "curve": []}


@pytest.mark.parametrize("sampler", ["tpe", "gp", "nsga2", "random"])
def test_a_sampler_search_runs_n_trials_inside_the_range_and_can_be_extended(tmp_path, sampler):
    path = tmp_path / "sampled.toml"
    path.write_text(SAMPLED.replace("{tmp}", str(tmp_path)).replace("{sampler}", sampler))
    spec = load_spec(path)
    assert run_study(spec, workers=1, trial_fn=bowl, progress=False).ok
    more = run_study(spec, workers=1, trial_fn=bowl, progress=False, n_trials=6)
    assert more.ok and more.enqueued == 2
    storage = open_storage(spec.storage_url)
    trials = optuna.load_study(study_name="sampled/tiny@1ktok", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert all(1e-3 <= t.params["decay"] <= 10 for t in trials)
    assert [t.user_attrs["seed"] for t in trials] == [0, 1, 0, 1, 0, 1]
    assert len({t.params["decay"] for t in trials}) == 6
