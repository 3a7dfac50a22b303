"""SIGTERM and SIGHUP stop `study run --workers 2` like Ctrl-C: every in-flight trial is
re-queued, every worker process exits, none keeps training. Real subprocesses throughout."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from scaling.study import load_spec
from scaling.study.storage import open_storage

ROOT = Path(__file__).resolve().parent.parent

SPEC = """
name = "sig"
sizes = [{{ name = "tiny", d_model = 16, n_layers = 1, n_heads = 2 }}]
budgets = {{ tokens = [1000] }}
tasks = ["arithmetic"]
storage = "sqlite:///{folder}/optuna.db"

[decay]
grid = [0, 0.1, 1]

[worker]
heartbeat_interval = 1
grace_period = 60
"""

RUNNER = """
import sys
from scaling.study import load_spec, run_study
from tests.test_study_signals import hangs
try:
    report = run_study(load_spec(sys.argv[1]), workers=2, trial_fn=hangs, progress=False)
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(0)
"""


@pytest.fixture(autouse=True)
def no_process_left(request):
    """Whatever a test asserts, the process groups it started are gone afterwards."""
    started: list[subprocess.Popen] = []
    request.node.started = started
    yield
    for proc in started:
        try:  # the group outlives its leader while a worker lives
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()


def hangs(cfg):
    """A fake trial that leaves a mark named by its process id, then hangs."""
    (Path(os.environ["STUDY_TEST_MARKS"]) / str(os.getpid())).touch()
    time.sleep(300)
    return {"val_loss": 3.0, "ft_score": 0.5, "ft_nll": 0.7, "curve": []}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:  # a zombie is dead; its parent just has not reaped it
            return fh.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:  # reaped in between
        return False


def start(request, tmp_path: Path, argv: list[str]) -> tuple[subprocess.Popen, Path, object]:
    path = tmp_path / "sig.toml"
    path.write_text(SPEC.format(folder=tmp_path))
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = subprocess.Popen([sys.executable, *argv, str(path)], cwd=ROOT, start_new_session=True,
                            env={**os.environ, "STUDY_TEST_MARKS": str(marks)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    request.node.started.append(proc)
    return proc, marks, load_spec(path)


def wait_for_marks(marks: Path, proc: subprocess.Popen, n: int, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [int(p.name) for p in marks.iterdir()]
        if len(pids) >= n:
            return pids
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"fewer than {n} trials started in {timeout} s")


def states(spec) -> list[tuple[TrialState, str | None]]:
    storage = open_storage(spec.storage_url)
    trials = optuna.load_study(study_name=spec.study_name(spec.cells()[0]), storage=storage).get_trials()
    storage.engine.dispose()
    return [(t.state, t.user_attrs.get("fail_reason")) for t in trials]


def assert_requeued(spec, pids: list[int], how: str) -> None:
    deadline = time.monotonic() + 30
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids), "a worker kept running"
    found = states(spec)
    assert not [s for s, _ in found if s == TrialState.RUNNING]
    interrupted = [r for s, r in found if s == TrialState.FAIL]
    assert interrupted == [f"interrupted by {how}"] * len(pids)
    # each interrupted trial has a WAITING copy; with the never-started one: 3 waiting in all
    assert sum(s == TrialState.WAITING for s, _ in found) == 3


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGHUP, marks=pytest.mark.slow)])
def test_a_signal_to_the_runner_alone_requeues_every_trial_and_stops_every_worker(request, tmp_path, sig):
    proc, marks, spec = start(request, tmp_path, ["-c", RUNNER])
    pids = wait_for_marks(marks, proc, 2)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert_requeued(spec, pids, sig.name)


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_is_the_same(request, tmp_path):
    proc, marks, spec = start(request, tmp_path, ["-c", RUNNER])
    pids = wait_for_marks(marks, proc, 2)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert_requeued(spec, pids, "SIGTERM")


@pytest.mark.slow
def test_workers_of_a_sigkilled_runner_stop_and_requeue_their_trials(request, tmp_path):
    proc, marks, spec = start(request, tmp_path, ["-c", RUNNER])
    pids = wait_for_marks(marks, proc, 2)
    proc.kill()  # no handler runs: the workers learn of it from the kernel (parent-death signal)
    proc.communicate(timeout=60)
    assert_requeued(spec, pids, "SIGTERM")


@pytest.mark.slow
def test_sigterm_stops_the_real_cli_with_real_training(request, tmp_path):
    """`scaling study run --workers 2` on a model that trains for minutes: SIGTERM, then no process
    is left training and both trials are waiting again."""
    path = tmp_path / "real.toml"
    path.write_text(SPEC.format(folder=tmp_path).replace("tokens = [1000]", "tokens = [50000000]")
                    + '\n[run]\ndevice = "cpu"\neval_tokens = 4096\n')
    proc = subprocess.Popen([sys.executable, "-m", "scaling.cli", "study", "run", str(path), "--workers", "2"],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    request.node.started.append(proc)
    spec = load_spec(path)
    deadline = time.monotonic() + 120
    running: list = []
    while time.monotonic() < deadline and len(running) < 2:
        time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()
        if (tmp_path / "optuna.db").exists():
            storage = open_storage(spec.storage_url)
            try:
                found = optuna.load_study(study_name=spec.study_name(spec.cells()[0]), storage=storage).get_trials()
            except KeyError:  # the file exists, the cell's study not yet
                found = []
            running = [t for t in found if t.state == TrialState.RUNNING and "worker_pid" in t.user_attrs]
            storage.engine.dispose()
    assert len(running) == 2, "two trials never started"
    time.sleep(2)  # inside the training loop
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert_requeued(spec, [t.user_attrs["worker_pid"] for t in running], "SIGTERM")
