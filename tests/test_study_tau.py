"""Timescale grids (`[decay] tau = [...]`), the plasticity objective, seeds that pair across a
cell's decays, and adaptive refinement run as ordinary enqueued trials."""

import math

import numpy as np
import pytest
import torch

from scaling.cli import main
from scaling.core.budget import decay_for_tau, tau
from scaling.core.schedule import lr_multiplier, mean_lr_multiplier
from scaling.errors import ConfigError
from scaling.study import load_spec, run_study, study_status
from tests import test_study_crash
from tests.test_study_branches import trials_by_cell as trials

SPEC = """
name = "taus"
sizes = ["13k"]
budgets = { tpp = [5, 20] }
seeds = [0, 1]
lr = 6e-3
batch_size = 16
storage = "sqlite:///{dir}/taus.db"
{extra}

[decay]
tau = [4, 1, 0.5]
{refine}
"""


def write(tmp_path, extra="", refine="", decay=None):
    text = SPEC.replace("{dir}", str(tmp_path)).replace("{extra}", extra).replace("{refine}", refine)
    if decay is not None:
        text = text.replace("tau = [4, 1, 0.5]", decay)
    path = tmp_path / "taus.toml"
    path.write_text(text)
    return path


def test_decay_for_tau_inverts_tau_and_infinity_is_decay_zero():
    d = decay_for_tau(0.5, 2048, 6e-3, 268288)
    assert tau(2048, 6e-3, d, 268288) == pytest.approx(0.5)
    assert decay_for_tau(math.inf, 2048, 6e-3, 268288) == 0.0
    assert tau(2048, 6e-3, decay_for_tau(2.0, 2048, 6e-3, 10**6, "independent"), 10**6, "independent") == pytest.approx(2)


def test_the_mean_multiplier_is_the_mean_of_the_schedule():
    steps = 200
    assert mean_lr_multiplier(steps) == pytest.approx(np.mean([lr_multiplier(s, steps) for s in range(steps)]))
    assert 0.5 < mean_lr_multiplier(steps) < 0.6  # cosine to 0.1x with 10% warmup
    assert mean_lr_multiplier(steps, "wsd") > mean_lr_multiplier(steps)


def test_a_tau_grid_gives_each_cell_its_own_decays_with_decay_zero_added(tmp_path):
    spec = load_spec(write(tmp_path))
    assert spec.decay.taus == (math.inf, 4.0, 1.0, 0.5)
    for cell in spec.cells():
        config = spec.run_config(cell, 0.0, 0)
        plan = spec.plan(cell=cell)
        assert len(plan) == 8 and plan[0].key == "tau=inf/seed=0" and plan[0].decay == 0.0
        for p in plan[1:4]:  # decay = B / (peak lr * tau * D)
            assert tau(config.batch_tokens, config.lr, p.decay, spec.n_tokens(cell)) == pytest.approx(p.tau)
    small, large = (spec.decay_bounds(c)[1] for c in spec.cells())
    assert small == pytest.approx(4 * large, rel=0.02)  # 4x the tokens, a quarter of the decay


@pytest.mark.parametrize("decay, expected", [
    ("tau = [1, 0]", "decay.tau: expected a non-empty list of distinct timescales > 0 (inf for decay 0), got 0"),
    ("tau = [-1]", "decay.tau: expected a non-empty list of distinct timescales > 0"),
    ("tau = []", "decay.tau: expected a non-empty list"),
    ("tau = [1, 1]", "decay.tau: expected a non-empty list of distinct"),
    ("tau = [1]\nlow = 0.1", "decay.low: expected nothing beside decay.tau (a sampler search and a tau grid"),
    ("tau = [1]\nsampler = \"tpe\"", "decay.sampler: expected nothing beside decay.tau (a sampler search"),
    ("tau = [1]\ngrid = [0.1]", "decay.grid: expected nothing beside decay.tau (a grid and a tau grid"),
])
def test_bad_tau_grids_are_one_line_errors_naming_the_key(tmp_path, decay, expected):
    with pytest.raises(ConfigError) as err:
        load_spec(write(tmp_path, decay=decay))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_a_bad_tau_grid_exits_2_from_the_cli(tmp_path, capsys):
    assert main(["study", "status", str(write(tmp_path, decay="tau = [0]"))]) == 2
    err = capsys.readouterr().err
    assert "decay.tau" in err and "Traceback" not in err


@pytest.mark.parametrize("extra, expected", [
    ('plasticity = "accuracy"', "plasticity: expected one of 'nll', 'score'"),
])
def test_bad_plasticity_and_refine_values_are_one_line_errors(tmp_path, extra, expected):
    with pytest.raises(ConfigError, match=expected):
        load_spec(write(tmp_path, extra=extra))
    with pytest.raises(ConfigError, match="refine.trials"):
        load_spec(write(tmp_path, refine="[refine]\ntrials = -1"))


def test_the_plasticity_key_picks_the_objective_column_and_direction(tmp_path):
    assert load_spec(write(tmp_path, extra='plasticity = "nll"')).objectives[1] == ("ft_nll", "minimize")
    assert load_spec(write(tmp_path, extra='plasticity = "score"')).objectives[1] == ("ft_score", "maximize")


def test_one_seed_gives_every_decay_of_a_cell_the_same_init_and_data_order(tmp_path):
    """Seeds pair: decay is the only difference between two trials of one cell and seed."""
    from scaling.train.stacked import StackedRun

    spec = load_spec(write(tmp_path))
    cell = spec.cells()[0]
    plan = spec.plan(cell=cell)
    configs = [spec.run_config(cell, p.decay, p.seed) for p in plan]
    a, b, other = configs[0], configs[2], configs[4]  # seed 0 at two decays, seed 1
    assert a.replace(decay=b.decay) == b and a.seed != other.seed
    run = StackedRun([a, b, other], np.arange(100_000) % 250, 258, torch.device("cpu"))
    wa, wb, wo = (run.extract(k).state_dict() for k in range(3))
    assert all(torch.equal(wa[n], wb[n]) for n in wa)
    assert not all(torch.equal(wa[n], wo[n]) for n in wa)
    batch = run.batch(3)  # (K, B, T+1): one batch per model
    assert torch.equal(batch[0], batch[1]) and not torch.equal(batch[0], batch[2])


def bowl_in_tau(cfg):
    """A fake trial: val_loss is a bowl in ln tau with its floor at tau = 0.7, ft_nll at 0.35,
    plus a seed offset shared across decays; instant."""
    from scaling.config import model_shape, token_budget
    from scaling.core.shapes import non_embedding_params

    n_tokens = token_budget(cfg, non_embedding_params(model_shape(cfg)))[1]
    t = tau(cfg.batch_tokens, cfg.lr, cfg.decay, n_tokens)
    x = math.log(t) if math.isfinite(t) else 4.0
    seed = 0.01 * cfg.seed
    return {"val_loss": 3 + (x - math.log(0.7)) ** 2 / 10 + seed, "ft_nll": 2 + (x - math.log(0.35)) ** 2 / 10 + seed,
            "ft_score": 0.5, "tau": t, "steps": n_tokens // cfg.batch_tokens, "seed": cfg.seed, "curve": []}


@pytest.mark.slow
def test_refinement_adds_tagged_trials_after_the_grid_and_status_counts_them(tmp_path):
    spec = load_spec(write(tmp_path, refine="[refine]\ntrials = 6\nrounds = 2"))
    report = run_study(spec, workers=1, trial_fn=bowl_in_tau, progress=False)
    assert report.ok
    for cell, ts in trials(spec).items():
        planned = [t for t in ts if "refine" not in t.user_attrs]
        refined = [t for t in ts if "refine" in t.user_attrs]
        assert len(planned) == 8 and all(t.state.name == "COMPLETE" for t in ts)
        assert 0 < len(refined) <= 12 and {t.user_attrs["refine"] for t in refined} <= {1, 2}
        assert all(t.user_attrs["plan"].startswith(f"refine={t.user_attrs['refine']}/") for t in refined)
        taus = sorted(t.user_attrs["tau"] for t in refined if t.params["decay"] > 0)
        assert taus and all(0.1 < x < 1.5 for x in taus)  # around the two optima, never the tau = 4 end
        assert min(taus) < 0.5  # ft_nll's optimum (0.35) lies beyond the grid's edge: refinement stepped out
        assert all(t.user_attrs["tau_mean_lr"] > t.user_attrs["tau"] for t in ts if t.params["decay"] > 0)
    status = study_status(spec)
    assert all(c.planned == 8 and c.refinement > 0 and c.finished for c in status.cells)
    text = status.to_text()
    assert "refine" in text.splitlines()[1] and "best ft_nll" in text
    from scaling.study import export_study
    import pandas as pd

    exported = pd.read_csv(export_study(spec, out_dir=tmp_path / "out").trials_csv)
    assert set(exported["plasticity"]) == {"nll"} and (exported["refine"] > 0).sum() == status.cells[0].refinement + \
        status.cells[1].refinement and "tau_mean_lr" in exported.columns
    again = run_study(spec, workers=1, trial_fn=bowl_in_tau, progress=False)  # decided once: nothing new
    assert again.enqueued == 0 and sum(len(ts) for ts in trials(spec).values()) == sum(
        c.planned + c.refinement for c in status.cells)


@pytest.mark.slow
def test_refinement_zero_adds_nothing(tmp_path):
    spec = load_spec(write(tmp_path, refine="[refine]\ntrials = 0"))
    assert run_study(spec, workers=1, trial_fn=bowl_in_tau, progress=False).ok
    assert all(len(ts) == 8 for ts in trials(spec).values())


# test_study_crash's spec with one refinement round of 2 trials
CRASH_SPEC = (test_study_crash.CRASH_SPEC.replace('name = "crash"', 'name = "refine-crash"')
              .replace("[worker]", "[refine]\ntrials = 2\n\n[worker]"))

RUNNER = """
import sys
from scaling.study import load_spec, run_study
from tests.test_study_tau import stalls_once_in_refinement as trial_fn
report = run_study(load_spec(sys.argv[1]), workers=2, trial_fn=trial_fn, progress=False)
sys.exit(0 if report.ok else 1)
"""


def stalls_once_in_refinement(cfg):
    """A fake trial, best at decay 0.1, that hangs in the first refinement trial to start (a decay
    off the grid), leaving its pid in a mark so the test can kill that worker."""
    import os
    import time
    from pathlib import Path

    marks = Path(os.environ["STUDY_TEST_MARKS"])
    (marks / f"{cfg.decay!r}-{os.getpid()}-{time.monotonic_ns()}").touch()
    if cfg.decay not in (0.0, 0.1, 1.0):
        try:
            os.close(os.open(marks.parent / "stalled", os.O_CREAT | os.O_EXCL))
            (marks.parent / f"victim-{os.getpid()}").touch()
            time.sleep(300)
        except FileExistsError:
            pass
    x = math.log10(cfg.decay) + 1 if cfg.decay else 2.0
    return {"val_loss": 3 + x * x, "ft_nll": 2 + x * x, "ft_score": 0.5, "seed": cfg.seed, "curve": []}


@pytest.mark.slow
def test_killing_a_worker_during_refinement_loses_nothing(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    path = tmp_path / "crash.toml"
    path.write_text(CRASH_SPEC.replace("{storage}", f"sqlite:///{tmp_path}/optuna.db"))
    spec = load_spec(path)
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(path)], cwd=root,
                            env={**os.environ, "STUDY_TEST_MARKS": str(marks)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("victim-*")):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    (victim,) = tmp_path.glob("victim-*")
    os.kill(int(victim.name.split("-")[1]), signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err

    (ts,) = trials(spec).values()
    refined = [t for t in ts if "refine" in t.user_attrs]
    by_plan = {}
    for t in refined:
        by_plan.setdefault(t.user_attrs["plan"], []).append(t)
    assert len(by_plan) == 2  # the budget: tau * sqrt(2) and tau / sqrt(2) around decay 0.1
    states = sorted([t.state.name for t in attempts] for attempts in by_plan.values())
    assert states == [["COMPLETE"], ["FAIL", "COMPLETE"]]  # the killed one was rerun
    killed, rerun = next(a for a in by_plan.values() if len(a) == 2)
    assert rerun.params == killed.params and rerun.user_attrs["refine"] == 1
    cell = study_status(spec).cells[0]
    assert (cell.planned, cell.refinement, cell.complete, cell.retried, cell.finished) == (3, 2, 5, 1, True)


@pytest.mark.slow
def test_a_cells_taus_and_seeds_train_stacked_with_the_real_pipeline_and_record_their_timescales(tmp_path):
    path = tmp_path / "real.toml"
    path.write_text(f"""
name = "real"
sizes = [{{ name = "tiny", d_model = 16, n_layers = 1, n_heads = 2 }}]
budgets = {{ tokens = [8192] }}
seeds = [0, 1]
tasks = ["source"]
batch_size = 4
context = 64
lr = 3e-3
batch_models = 4
storage = "sqlite:///{tmp_path}/real.db"

[decay]
tau = [1, 0.25]

[refine]
trials = 1

[run]
device = "cpu"
probes = false
eval_tokens = 2048
decay_params = "matrices"
""")
    spec = load_spec(path)
    assert run_study(spec, workers=1, progress=False, threads=1).ok
    (ts,) = trials(spec).values()
    assert len(ts) == 7 and all(t.state.name == "COMPLETE" for t in ts)
    for t in ts:
        assert t.user_attrs["batch_models"] in (1, 2, 4)  # stacked units of one cell
        assert t.values[1] == t.user_attrs["ft_nll"] == t.user_attrs["ft_source_nll_after"]
        target = t.user_attrs.get("tau_target")
        if target is not None and target != "inf":
            assert t.user_attrs["tau"] == pytest.approx(float(target))
