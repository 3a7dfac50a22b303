"""Batched study workers (`batch_models = K`): K trials of one cell claimed, trained as one
stacked model and recorded one by one, with the same results as one trial at a time."""

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from scaling.cli import main
from scaling.study import load_spec, run_study
from scaling.study.storage import open_storage

SPEC = """
name = "{name}"
sizes = ["13k"]
budgets = { tokens = [16384] }
seeds = [0]
tasks = ["arithmetic"]
batch_size = 8
context = 64
storage = "sqlite:///{dir}/{name}.db"
{batch}

[decay]
grid = [0, 0.1, 0.5, 2]

[run]
device = "cpu"
probes = false
eval_tokens = 2048

[worker]
heartbeat_interval = 1
grace_period = 5
"""


pytestmark = pytest.mark.usefixtures("one_thread")


def write_spec(tmp_path: Path, name: str, batch: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(SPEC.replace("{name}", name).replace("{dir}", str(tmp_path)).replace("{batch}", batch))
    return path


def trials_of(spec):
    storage = open_storage(spec.storage_url)
    try:
        (cell,) = spec.cells()
        return optuna.load_study(study_name=spec.study_name(cell), storage=storage).get_trials()
    finally:
        storage.engine.dispose()


def exported_val_loss(spec_path: Path, out: Path) -> dict[float, float]:
    assert main(["study", "export", str(spec_path), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "trials.csv")))
    return {float(r["decay"]): float(r["val_loss"]) for r in rows}


@pytest.mark.slow
def test_a_batched_worker_runs_each_trial_once_with_the_results_of_one_at_a_time(tmp_path):
    batched = load_spec(write_spec(tmp_path, "batched", "batch_models = 4"))
    assert batched.batch_models == 4
    report = run_study(batched, workers=1, progress=False)
    assert report.ok and report.enqueued == 4 and report.workers[0].ran == 4
    trials = trials_of(batched)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert sorted(t.user_attrs["plan"] for t in trials) == sorted(p.key for p in batched.plan())
    for t in trials:  # trained together, recorded like a lone trial
        assert t.user_attrs["batch_models"] == 4 and t.user_attrs["config"]["decay"] == t.params["decay"]
        assert len(t.user_attrs["curve"]) >= 1 and t.user_attrs["trial_wall_s"] > 0

    single = load_spec(write_spec(tmp_path, "single"))
    assert single.batch_models == 1
    assert run_study(single, workers=1, progress=False).ok
    assert all("batch_models" not in t.user_attrs for t in trials_of(single))

    together = exported_val_loss(Path(batched.path), tmp_path / "out_batched")
    alone = exported_val_loss(Path(single.path), tmp_path / "out_single")
    assert sorted(together) == sorted(alone) == [0, 0.1, 0.5, 2]
    for decay, loss in alone.items():
        assert together[decay] == pytest.approx(loss, rel=1e-6), decay


@pytest.mark.slow
def test_a_compiled_stack_gives_the_eager_stacks_results_to_float_rounding(tmp_path):
    """`compile = true` changes how a unit's step runs (torch.compile; CUDA graphs on a GPU), not
    its results: every trial's val_loss and ft_nll equal the eager stack's to rounding."""
    eager = load_spec(write_spec(tmp_path, "eager", "batch_models = 4"))
    compiled = load_spec(write_spec(tmp_path, "compiled", "batch_models = 4\ncompile = true"))
    assert compiled.compile and not eager.compile
    for spec in (eager, compiled):
        assert run_study(spec, workers=1, progress=False).ok
    assert {t.user_attrs["compiled"] for t in trials_of(compiled)} == {True}
    assert {t.user_attrs["compiled"] for t in trials_of(eager)} == {False}
    by_decay = [{t.params["decay"]: t.values for t in trials_of(spec)} for spec in (eager, compiled)]
    assert sorted(by_decay[0]) == sorted(by_decay[1]) == [0, 0.1, 0.5, 2]
    for decay, (val_loss, ft_nll) in by_decay[0].items():
        # fused kernels round differently; fine-tuning then amplifies the last bits of the weights
        # (as stacked vs single pretraining does), still far below the seed noise (ft_nll sd ~3%)
        assert by_decay[1][decay][0] == pytest.approx(val_loss, rel=1e-5), decay
        assert by_decay[1][decay][1] == pytest.approx(ft_nll, rel=2e-3), decay


@pytest.mark.parametrize("setting, flag", [("compile = true", None), ('compile = "yes"', None),
                                           ("", "--compile"), ("batch_models = 2\ncompile = 1", None)])
def test_compile_without_a_stack_or_of_the_wrong_type_exits_2_with_one_line(tmp_path, capsys, setting, flag):
    path = write_spec(tmp_path, "bad", setting)
    argv = ["study", "run", str(path), "--workers", "1", "--no-progress"] + ([flag] if flag else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "compile" in err


def fake_batch(diverging: float | None = None, interrupt: bool = False, sizes: list | None = None):
    """A stand-in for run_pipeline_batched: no training, the contract's shape of results."""
    def batch_fn(configs):
        if sizes is not None:
            sizes.append(len(configs))
        if interrupt:
            raise KeyboardInterrupt
        out = []
        for c in configs:
            if c.decay == diverging:
                out.append({"error": f"loss is nan at step 7 (pretraining, decay {c.decay})", "diverged_step": 7,
                            "diverged_phase": "pretraining", "val_loss": math.nan, "curve": []})
            else:
                out.append({"val_loss": 3.0 + c.decay, "ft_score": 0.5, "ft_nll": 2.0, "curve": [[1, 3.0]], "wall_s": 0.1})
        return out
    return batch_fn


def test_claims_at_most_k_trials_and_a_diverged_model_fails_alone(tmp_path):
    spec = load_spec(write_spec(tmp_path, "diverge"))
    sizes: list[int] = []
    report = run_study(spec, workers=1, progress=False, batch_models=3,
                       batch_fn=fake_batch(diverging=0.5, sizes=sizes))
    assert sizes == [3, 1] and report.ok
    by_decay = {t.params["decay"]: t for t in trials_of(spec)}
    assert len(by_decay) == 4
    diverged = by_decay.pop(0.5)
    assert diverged.state == TrialState.FAIL and diverged.user_attrs["fail_kind"] == "diverged"
    assert diverged.user_attrs["diverged_step"] == 7 and "loss is nan" in diverged.user_attrs["fail_reason"]
    assert [t.state for t in by_decay.values()] == [TrialState.COMPLETE] * 3
    assert [t.values[0] for t in by_decay.values()] == [3.0 + d for d in by_decay]


def test_ctrl_c_in_a_batch_requeues_every_trial_of_it(tmp_path):
    spec = load_spec(write_spec(tmp_path, "interrupt"))
    with pytest.raises(KeyboardInterrupt):
        run_study(spec, workers=1, progress=False, batch_models=2, batch_fn=fake_batch(interrupt=True))
    trials = trials_of(spec)
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert len(interrupted) == 2 and all(t.user_attrs["fail_kind"] == "interrupted" for t in interrupted)
    assert sum(t.state == TrialState.WAITING for t in trials) == 4  # 2 untouched + 2 re-queued
    assert not any(t.state == TrialState.RUNNING for t in trials)
    # resuming runs every planned trial to completion, each once
    assert run_study(spec, workers=1, progress=False, batch_models=4, batch_fn=fake_batch()).ok
    done = [t for t in trials_of(spec) if t.state == TrialState.COMPLETE]
    assert sorted(t.params["decay"] for t in done) == [0, 0.1, 0.5, 2]


@pytest.mark.parametrize("setting, flag", [("batch_models = 0", None), ('batch_models = "4"', None),
                                           ("batch_models = true", None), ("", "0"), ("", "-3")])
def test_bad_batch_models_exit_2_with_one_line(tmp_path, capsys, setting, flag):
    path = write_spec(tmp_path, "bad", setting)
    argv = ["study", "run", str(path), "--workers", "1", "--no-progress"]
    if flag is not None:
        argv += ["--batch-models", flag]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "batch_models" in err
    if flag is None:
        assert str(path) in err


# A child process runs the study so the test can SIGKILL one of its workers mid-batch.
RUNNER = """
import sys
from scaling.study import load_spec, run_study
from tests.test_study_batched import stalls_once_with_decay_0_1 as batch_fn
report = run_study(load_spec(sys.argv[1]), workers=2, batch_models=2, batch_fn=batch_fn, progress=False)
sys.exit(0 if report.ok else 1)
"""


def stalls_once_with_decay_0_1(configs):
    """A fake batch that marks each of its configs per attempt and hangs on the first attempt
    of the batch holding decay 0.1, so the test can kill its worker there."""
    marks = Path(os.environ["STUDY_TEST_MARKS"])
    attempts = [len(list(marks.glob(f"{c.decay!r}-*"))) for c in configs]
    for c, attempt in zip(configs, attempts):
        (marks / f"{c.decay!r}-{os.getpid()}-{attempt}").touch()
    if any(c.decay == 0.1 and a == 0 for c, a in zip(configs, attempts)):
        time.sleep(300)
    return fake_batch()(configs)


@pytest.mark.slow
def test_a_sigkilled_batched_workers_trials_go_stale_and_are_rerun_once(tmp_path):
    path = write_spec(tmp_path, "crash")
    path.write_text(path.read_text().replace("grace_period = 5", "grace_period = 2"))
    marks = tmp_path / "marks"
    marks.mkdir()
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(path)], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "STUDY_TEST_MARKS": str(marks)})
    deadline = time.monotonic() + 120
    while not list(marks.glob("0.1-*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    victim_pid = int(next(marks.glob("0.1-*")).name.split("-")[1])
    time.sleep(0.2)  # the batch's other mark is written in the same call
    killed_batch = sorted(float(m.name.split("-")[0]) for m in marks.glob(f"*-{victim_pid}-*"))
    assert len(killed_batch) == 2 and 0.1 in killed_batch
    os.kill(victim_pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err

    attempts: dict[float, int] = {}
    for m in marks.iterdir():
        decay = float(m.name.split("-")[0])
        attempts[decay] = attempts.get(decay, 0) + 1
    assert attempts == {d: 2 if d in killed_batch else 1 for d in (0, 0.1, 0.5, 2)}
    spec = load_spec(path)
    states: dict[float, list] = {}
    for t in trials_of(spec):
        states.setdefault(t.params["decay"], []).append(t.state)
    for decay, seen in states.items():  # the killed batch: stale, then rerun; the rest: once
        expected = [TrialState.FAIL, TrialState.COMPLETE] if decay in killed_batch else [TrialState.COMPLETE]
        assert seen == expected, decay
