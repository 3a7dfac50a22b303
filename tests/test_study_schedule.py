"""When trials run (never what they compute): workers claim the costliest cell's units first, and
decide each cell's refinement round as soon as that cell's own trials have finished, while other
cells still train. Fake trials, instant, so the schedule is all that is tested."""

import math
import threading
from datetime import datetime, timedelta

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from scaling.config import model_shape, token_budget
from scaling.core.shapes import non_embedding_params
from scaling.study import load_spec, run_study
from scaling.study.plan import due_round, ensure_planned, ensure_refined, refine_attr, settled
from scaling.study.storage import open_storage
from scaling.study.units import claim_order, make_unit, unit_cost
from scaling.study.worker import Worker
from tests.test_study_branches import trials_by_cell

GRID = (0.0, 0.1, 1.0)

SPEC = """
name = "{name}"
sizes = {sizes}
budgets = {{ tpp = {budgets} }}
seeds = [0]
batch_size = 8
context = 64
storage = "sqlite:///{dir}/{name}.db"
{extra}

[decay]
grid = [0, 0.1, 1]

[run]
device = "cpu"
{run}

[worker]
heartbeat_interval = 1
{refine}
"""


def write(tmp_path, name="sched", sizes='["13k", "56k"]', budgets="[20]", extra="", refine="[refine]\ntrials = 2",
          run=""):
    path = tmp_path / f"{name}.toml"
    path.write_text(SPEC.format(name=name, sizes=sizes, budgets=budgets, dir=tmp_path, extra=extra, refine=refine,
                                run=run))
    return load_spec(path)


def bowl(cfg):
    """A fake trial, instant: a bowl in log10(decay) with its floor at 0.1 for 13k and at the
    grid's edge (1) for any other size, so the cells refine differently."""
    floor = 0.1 if cfg.size == "13k" else 1.0
    x = math.log10(cfg.decay / floor) if cfg.decay else 2.0
    return {"val_loss": 3 + x * x + 0.01 * cfg.seed, "ft_nll": 2 + x * x, "ft_score": 0.5, "seed": cfg.seed,
            "curve": []}


def is_refinement(cfg) -> bool:
    """Refinement trials step off the grid or add a seed (the spec plans seed 0 on GRID only)."""
    return cfg.decay not in GRID or cfg.seed != 0


def trial_set(spec) -> set[tuple]:
    """Every trial as (cell, plan key, decay, seed, refinement round, state)."""
    return {(cell, t.user_attrs["plan"], t.params["decay"], t.user_attrs["seed"], t.user_attrs.get("refine", 0),
             t.state.name) for cell, ts in trials_by_cell(spec).items() for t in ts}


# -- claim order -----------------------------------------------------------------------------------


def test_cells_are_claimed_costliest_first_by_params_times_tokens(tmp_path):
    spec = write(tmp_path, budgets="[20, 80]")
    assert [[c.name for c in group] for group in claim_order(spec)] == [
        ["56k@80tpp"], ["56k@20tpp"], ["13k@80tpp"], ["13k@20tpp"]]
    config = spec.run_config(spec.cell("56k@80tpp"), 0.0, 0)
    n_params = non_embedding_params(model_shape(config))
    assert unit_cost(spec, [spec.cell("56k@80tpp")]) == n_params * token_budget(config, n_params)[1]


def test_cells_of_equal_cost_keep_spec_order(tmp_path):
    spec = write(tmp_path, sizes='["13k", { name = "twin", d_model = 32, n_layers = 1, n_heads = 2, d_ff = 96 }]')
    assert unit_cost(spec, [spec.cells()[0]]) == unit_cost(spec, [spec.cells()[1]])
    assert [group[0].name for group in claim_order(spec)] == ["13k@20tpp", "twin@20tpp"]


def test_a_cooldown_branch_group_costs_its_largest_budget(tmp_path):
    spec = write(tmp_path, budgets="[20, 80]", extra='schedule = "wsd"\ncooldown_branches = true', refine="",
                 run="warmup_frac = 0.0")
    groups = claim_order(spec)
    assert [[c.name for c in g] for g in groups] == [["56k@20tpp", "56k@80tpp"], ["13k@20tpp", "13k@80tpp"]]
    assert unit_cost(spec, groups[0]) == unit_cost(spec, [spec.cell("56k@80tpp")])


def test_one_worker_runs_the_costliest_cell_first(tmp_path):
    spec = write(tmp_path, refine="")
    order = []

    def trial_fn(cfg):
        order.append(cfg.size)
        return bowl(cfg)

    assert run_study(spec, workers=1, trial_fn=trial_fn, progress=False).ok
    assert order == ["56k"] * 3 + ["13k"] * 3


def test_one_worker_runs_the_costliest_cell_then_refines_it_before_the_next_cells_grid(tmp_path):
    spec = write(tmp_path)
    order = []

    def trial_fn(cfg):
        order.append((cfg.size, "refine" if is_refinement(cfg) else "grid"))
        return bowl(cfg)

    report = run_study(spec, workers=1, trial_fn=trial_fn, progress=False)
    assert report.ok
    assert order == [("56k", "grid")] * 3 + [("56k", "refine")] * 2 + [("13k", "grid")] * 3 + [("13k", "refine")] * 2
    assert report.enqueued == 6 and report.workers[0].refined == 4  # the runner's round loop found nothing left


# -- when a cell's refinement round is due -----------------------------------------------------------


def frozen(state, plan="decay=0.1/seed=0", kind=None, failed_ago_s=0.0, refine=None):
    attrs = {"plan": plan, "seed": 0, "identity": "abc", **({"fail_kind": kind} if kind else {}), **({"refine": refine} if refine else {})}
    trial = optuna.trial.create_trial(
        state=state, params={"decay": 0.1}, distributions={"decay": FloatDistribution(0.0, 10.0)},
        values=[3.0, 2.0] if state == TrialState.COMPLETE else None, user_attrs=attrs)
    if state == TrialState.FAIL:
        trial.datetime_complete = datetime.now() - timedelta(seconds=failed_ago_s)
    return trial


def test_a_plan_key_settles_when_done_diverged_or_failed_long_enough_ago_to_stay_failed():
    assert settled([frozen(TrialState.COMPLETE)])
    assert settled([frozen(TrialState.FAIL, kind="diverged")])
    assert not settled([frozen(TrialState.FAIL, kind="error")])  # its worker may be re-queuing it right now
    assert settled([frozen(TrialState.FAIL, kind="error", failed_ago_s=120)])
    assert not settled([frozen(TrialState.FAIL, kind="interrupted")])
    assert not settled([frozen(TrialState.WAITING)]) and not settled([frozen(TrialState.RUNNING)])
    assert not settled([frozen(TrialState.FAIL, kind="error", failed_ago_s=120), frozen(TrialState.WAITING)])


def test_a_round_is_due_once_the_cells_earlier_rounds_settle_or_when_a_recorded_key_lacks_a_trial(tmp_path):
    spec = write(tmp_path, refine="[refine]\ntrials = 2\nrounds = 2")
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), directions=["minimize", "minimize"])
    study.set_user_attr("identity", "abc")
    study.add_trial(frozen(TrialState.COMPLETE, plan="decay=0/seed=0"))
    study.add_trial(frozen(TrialState.RUNNING, plan="decay=0.1/seed=0"))
    assert due_round(spec, study) is None  # a planned trial still runs
    study.add_trial(frozen(TrialState.COMPLETE, plan="decay=0.1/seed=0"))  # its next attempt
    assert due_round(spec, study) == 1
    assert due_round(spec, study, identity="other") is None  # a stale spec decides nothing
    assert due_round(write(tmp_path, name="off", refine=""), study) is None

    study.set_user_attr(refine_attr(1), [{"key": "refine=1/a", "seed": 0, "decay": 0.2, "tau": None}])
    assert due_round(spec, study) == 1  # decided, not enqueued (its decider died in between)
    study.add_trial(frozen(TrialState.WAITING, plan="refine=1/a", refine=1))
    assert due_round(spec, study) is None  # round 1 still to run
    study.add_trial(frozen(TrialState.COMPLETE, plan="refine=1/a", refine=1))
    assert due_round(spec, study) == 2
    study.set_user_attr(refine_attr(2), [])
    assert due_round(spec, study) is None  # every round decided


# -- per-cell refinement while other cells train --------------------------------------------------------


def test_a_worker_refines_a_finished_cell_while_another_worker_still_trains_the_other_cell(tmp_path):
    spec = write(tmp_path)
    storage = open_storage(spec.storage_url)
    ensure_planned(spec, storage)
    small_refined = threading.Event()
    gate = threading.Lock()
    held: list[bool] = []  # whether the held 56k trial saw 13k's refinement run before it ended

    def trial_fn(cfg):
        with gate:
            hold = cfg.size == "56k" and not held
            if hold:
                held.append(False)
        if hold:  # the first 56k trial keeps its cell busy until 13k's refinement has run
            held[0] = small_refined.wait(timeout=20)
        elif cfg.size == "13k" and is_refinement(cfg):
            small_refined.set()
        return bowl(cfg)

    results = []
    workers = [Worker(spec, spec.storage_url, make_unit(spec, trial_fn), index=i, progress=False, poll_s=0.05)
               for i in range(2)]
    threads = [threading.Thread(target=lambda w=w: results.append(w.run())) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert held == [True], "13k's refinement waited for the 56k cell"
    assert sum(r.refined for r in results) == 4 and sum(r.ran for r in results) == 10
    cells = trials_by_cell(spec)
    assert all(t.state == TrialState.COMPLETE for ts in cells.values() for t in ts)
    assert sum("refine" in t.user_attrs for t in cells["56k@20tpp"]) == 2
    assert ensure_refined(spec, storage, 1) == 0  # the runner's round loop finds nothing left to add
    storage.engine.dispose()


def test_per_cell_refinement_runs_the_same_trials_as_refining_every_cell_at_once(tmp_path, monkeypatch):
    refine = "[refine]\ntrials = 2\nrounds = 2"
    per_cell = write(tmp_path, name="per-cell", refine=refine)
    report = run_study(per_cell, workers=1, trial_fn=bowl, progress=False)
    assert report.ok and report.enqueued == 6

    monkeypatch.setattr(Worker, "_refine", lambda self: 0)  # the old barrier: only the runner's round loop
    barrier = write(tmp_path, name="barrier", refine=refine)
    report = run_study(barrier, workers=1, trial_fn=bowl, progress=False)
    assert report.ok and report.enqueued > 6

    got, expected = trial_set(per_cell), trial_set(barrier)
    assert got == expected
    assert {r for *_, r, _ in got} == {0, 1, 2}
    assert any(d == 10.0 for cell, _, d, *_ in got if cell == "56k@20tpp")  # stepped past the 56k cell's edge


@pytest.mark.slow
@pytest.mark.postgres
def test_three_worker_processes_on_postgresql_decide_each_round_once(tmp_path, postgres_url):
    refine = "[refine]\ntrials = 2\nrounds = 2"
    spec = write(tmp_path, name="pg", budgets="[20, 40]", refine=refine)
    report = run_study(spec, storage=postgres_url, workers=3, trial_fn=bowl, progress=False)
    assert report.ok and report.workers == (0, 0, 0)
    reference = write(tmp_path, name="pg", budgets="[20, 40]", refine=refine)
    assert run_study(reference, workers=1, trial_fn=bowl, progress=False).ok  # its SQLite file
    storage = open_storage(postgres_url)
    try:
        got = {(cell.name, t.user_attrs["plan"], t.params["decay"], t.user_attrs["seed"], t.user_attrs.get("refine", 0),
                t.state.name)
               for cell in spec.cells()
               for t in optuna.load_study(study_name=spec.study_name(cell), storage=storage).get_trials()}
    finally:
        storage.engine.dispose()
    assert got == trial_set(reference)  # each key once, all complete, as one worker decides them
