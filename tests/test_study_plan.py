"""Planning rules: when a planned trial is queued (again), and the storage-wide plan lock."""

import threading
import time
from datetime import datetime, timedelta

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from scaling.study.plan import needs_enqueue
from scaling.study.storage import storage_lock


def attempt(state, kind=None, finished_ago_s=0.0):
    attrs = {"plan": "decay=0.1/seed=0"} | ({"fail_kind": kind} if kind else {})
    values = [3.0, 0.5] if state == TrialState.COMPLETE else None
    trial = create_trial(state=state, values=values, user_attrs=attrs)
    if state.is_finished():
        trial.datetime_complete = datetime.now() - timedelta(seconds=finished_ago_s)
    return trial


def test_a_planned_trial_is_queued_once_and_only_retried_when_that_can_help():
    assert needs_enqueue([], retry_failed=False)
    assert not needs_enqueue([attempt(TrialState.WAITING)], retry_failed=True)
    assert not needs_enqueue([attempt(TrialState.COMPLETE)], retry_failed=True)
    diverged = [attempt(TrialState.FAIL, "diverged")]
    assert not needs_enqueue(diverged, retry_failed=False) and not needs_enqueue(diverged, retry_failed=True)
    error = [attempt(TrialState.FAIL, "error")]
    assert not needs_enqueue(error, retry_failed=False) and needs_enqueue(error, retry_failed=True)


def test_an_interrupted_trial_whose_requeue_was_lost_is_queued_again_but_not_while_it_may_be_underway():
    assert not needs_enqueue([attempt(TrialState.FAIL, "interrupted", finished_ago_s=1)], retry_failed=False)
    assert needs_enqueue([attempt(TrialState.FAIL, "interrupted", finished_ago_s=600)], retry_failed=False)


def test_the_storage_lock_excludes_a_second_holder_until_released():
    storage = optuna.storages.InMemoryStorage()
    events = []

    def second():
        with storage_lock(storage, "s/.plan-lock", poll_s=0.01):
            events.append("second")

    with storage_lock(storage, "s/.plan-lock"):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.2)
        events.append("first done")
    thread.join(timeout=10)
    assert events == ["first done", "second"]
    assert optuna.get_all_study_names(storage) == []


def test_a_lock_left_by_a_dead_holder_is_broken_after_it_goes_stale():
    storage = optuna.storages.InMemoryStorage()
    storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], study_name="s/.plan-lock")  # never released
    start = time.monotonic()
    with storage_lock(storage, "s/.plan-lock", stale_after_s=0.3, poll_s=0.01):
        waited = time.monotonic() - start
    assert 0.3 <= waited < 5


def test_a_lock_whose_holder_process_is_gone_is_broken_at_once():
    """A crash during planning leaves the lock behind; its holder's pid on this host is gone, so
    the next run takes it without waiting out the stale timeout."""
    import subprocess
    import sys

    from scaling.study.storage import _process_space

    storage = optuna.storages.InMemoryStorage()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    held = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], study_name="s/.plan-lock")
    storage.set_study_user_attr(held, "holder", {"space": _process_space(), "pid": int(dead.stdout)})
    messages: list[str] = []
    start = time.monotonic()
    with storage_lock(storage, "s/.plan-lock", stale_after_s=300, poll_s=0.01, log=messages.append):
        waited = time.monotonic() - start
    assert waited < 2
    assert "its process is gone" in messages[-1]


@pytest.mark.slow
def test_a_live_holder_that_keeps_beating_is_never_broken():
    storage = optuna.storages.InMemoryStorage()
    events = []

    def second():
        with storage_lock(storage, "s/.plan-lock", stale_after_s=0.3, poll_s=0.01):
            events.append("second")

    with storage_lock(storage, "s/.plan-lock", stale_after_s=0.3):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(1.5)  # five stale periods: only the beat keeps the lock
        events.append("first done")
    thread.join(timeout=10)
    assert events == ["first done", "second"]
