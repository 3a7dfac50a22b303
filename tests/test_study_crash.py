"""Crash safety: a SIGKILLed worker's trial is rerun, Ctrl-C stops cleanly and `run` resumes,
and a diverging run is a failed trial with its reason while the study completes."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from scaling.study import export_study, load_spec, run_study, study_status
from scaling.study.storage import open_storage

ROOT = Path(__file__).resolve().parent.parent

CRASH_SPEC = """
name = "crash"
sizes = [{ name = "tiny", d_model = 16, n_layers = 1, n_heads = 2 }]
budgets = { tokens = [1000] }
tasks = ["arithmetic"]
storage = "{storage}"

[decay]
grid = [0, 0.1, 1]

[worker]
heartbeat_interval = 1
grace_period = 2
"""

# Runs a study in a child process so the test can signal it; exit 130 on Ctrl-C like the CLI.
RUNNER = """
import faulthandler, signal, sys
faulthandler.register(signal.SIGUSR1)  # `communicate_or_dump` asks a stuck runner where it is
# Ctrl-C as in a terminal, even when the tests were started as a background job of a script
# (POSIX shells start those with SIGINT ignored, and children inherit that)
signal.signal(signal.SIGINT, signal.default_int_handler)
from scaling.study import load_spec, run_study
from tests.test_study_crash import stalls_once_at_decay_0_1 as trial_fn
try:
    report = run_study(load_spec(sys.argv[1]), workers=int(sys.argv[2]), trial_fn=trial_fn, progress=False)
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(0 if report.ok else 1)
"""


def stalls_once_at_decay_0_1(cfg):
    """A fake trial that leaves a mark per attempt and hangs on its first attempt at decay 0.1,
    so the test can kill or interrupt it there."""
    marks = Path(os.environ["STUDY_TEST_MARKS"])
    attempt = len(list(marks.glob(f"{cfg.decay!r}-*")))
    (marks / f"{cfg.decay!r}-{os.getpid()}-{attempt}").touch()
    if cfg.decay == 0.1 and attempt == 0:
        time.sleep(300)
    time.sleep(0.1)
    return {"val_loss": 3.0 + cfg.decay, "ft_score": 0.5 - cfg.decay / 10, "ft_nll": 2.0 + cfg.decay / 10, "seed": cfg.seed, "device": "cpu",
            "curve": [{"step": 1, "tokens": 512, "lr": 1e-3, "train_loss": 5.0, "val_loss": 5.1}]}


def crash_spec(tmp_path):
    path = tmp_path / "crash.toml"
    path.write_text(CRASH_SPEC.replace("{storage}", f"sqlite:///{tmp_path}/optuna.db"))
    return load_spec(path)


def start_runner(spec, workers, marks):
    env = {**os.environ, "STUDY_TEST_MARKS": str(marks)}
    return subprocess.Popen([sys.executable, "-c", RUNNER, spec.path, str(workers)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_mark(marks, prefix, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(marks.glob(prefix + "*"))
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"no {prefix} mark after {timeout} s")


def communicate_or_dump(proc, timeout):
    """`proc.communicate`, but a runner still alive after `timeout` s dumps every thread's stack
    (faulthandler, SIGUSR1) and is killed, and the test fails with that dump."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the runner did not exit within {timeout} s; its stacks:\n{err[-6000:]}")


def attempts_by_decay(marks):
    counts = {}
    for mark in marks.iterdir():
        decay = float(mark.name.split("-")[0])
        counts[decay] = counts.get(decay, 0) + 1
    return counts


def trials_by_plan(spec):
    storage = open_storage(spec.storage_url)
    study = optuna.load_study(study_name=spec.study_name(spec.cells()[0]), storage=storage)
    plans = {}
    for t in study.get_trials():
        plans.setdefault(t.params.get("decay", t.system_attrs.get("fixed_params", {}).get("decay")), []).append(t)
    storage.engine.dispose()
    return plans


@pytest.mark.slow
def test_a_sigkilled_workers_trial_is_rerun_with_the_same_params_and_nothing_is_lost(tmp_path):
    spec, marks = crash_spec(tmp_path), tmp_path / "marks"
    marks.mkdir()
    proc = start_runner(spec, workers=2, marks=marks)
    victim = wait_for_mark(marks, "0.1-", proc)
    os.kill(int(victim.name.split("-")[1]), signal.SIGKILL)
    out, err = communicate_or_dump(proc, timeout=120)
    assert proc.returncode == 0, err
    assert "exited with signal 9" in err

    assert attempts_by_decay(marks) == {0.0: 1, 0.1: 2, 1.0: 1}
    plans = trials_by_plan(spec)
    assert [t.state for t in plans[0.1]] == [TrialState.FAIL, TrialState.COMPLETE]
    killed, rerun = plans[0.1]
    assert rerun.params == killed.params and rerun.user_attrs["plan"] == killed.user_attrs["plan"]
    assert rerun.user_attrs["worker_pid"] != killed.user_attrs["worker_pid"]
    assert all([t.state for t in plans[d]] == [TrialState.COMPLETE] for d in (0.0, 1.0))
    cell = study_status(spec).cells[0]
    assert (cell.complete, cell.failed, cell.retried, cell.running, cell.waiting) == (3, 0, 1, 0, 0)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_run_resumes_where_it_stopped(tmp_path):
    spec, marks = crash_spec(tmp_path), tmp_path / "marks"
    marks.mkdir()
    proc = start_runner(spec, workers=1, marks=marks)
    wait_for_mark(marks, "0.1-", proc)
    proc.send_signal(signal.SIGINT)
    out, err = communicate_or_dump(proc, timeout=120)
    assert proc.returncode == 130, err

    interrupted = trials_by_plan(spec)[0.1]
    assert [t.state for t in interrupted] == [TrialState.FAIL, TrialState.WAITING]
    assert interrupted[0].user_attrs["fail_kind"] == "interrupted"
    assert not study_status(spec).finished

    os.environ["STUDY_TEST_MARKS"] = str(marks)
    try:
        report = run_study(spec, workers=1, trial_fn=stalls_once_at_decay_0_1, progress=False)
    finally:
        del os.environ["STUDY_TEST_MARKS"]
    assert report.ok and report.enqueued == 0
    assert attempts_by_decay(marks) == {0.0: 1, 0.1: 2, 1.0: 1}
    assert [t.state for t in trials_by_plan(spec)[0.1]] == [TrialState.FAIL, TrialState.COMPLETE]


DIVERGE_SPEC = """
name = "diverge"
sizes = ["13k", { name = "tiny", d_model = 16, n_layers = 1, n_heads = 2 }]
budgets = { tokens = [20000] }
tasks = ["arithmetic"]
lr = { "13k" = 1e6, tiny = 3e-3 }
storage = "{storage}"

[decay]
grid = [0.1]

[run]
device = "cpu"
eval_tokens = 4096
"""


@pytest.mark.slow
def test_a_diverging_run_is_a_failed_trial_with_its_reason_and_the_study_completes(tmp_path):
    path = tmp_path / "diverge.toml"
    path.write_text(DIVERGE_SPEC.replace("{storage}", f"sqlite:///{tmp_path}/optuna.db"))
    spec = load_spec(path)
    report = run_study(spec, workers=1, progress=False)
    assert report.ok
    absurd, tiny = report.status.cells
    assert (absurd.complete, absurd.failed, tiny.complete, tiny.failed) == (0, 1, 1, 0)
    assert "diverged at step" in absurd.failures[0]

    again = run_study(spec, workers=1, progress=False)  # a diverged trial is done: never retried
    assert again.ok and again.enqueued == 0 and again.workers[0].ran == 0

    result = export_study(spec, out_dir=tmp_path / "out")
    assert result.n_trials == 1
    failed = list(csv.DictReader(open(result.failed_csv)))
    assert [(f["cell"], f["fail_kind"]) for f in failed] == [("13k@20ktok", "diverged")]
    assert "diverged at step" in failed[0]["fail_reason"]
