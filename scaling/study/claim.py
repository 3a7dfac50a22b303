"""Claiming WAITING trials atomically, and heartbeats for the trials a worker holds.

A claim is the storage's atomic WAITING -> RUNNING change (`set_trial_state_values` returns
False to every caller but one: a row lock in PostgreSQL/MySQL, `BEGIN IMMEDIATE` in SQLite, see
`scaling.study.storage`), so exactly one worker wins each trial.

Optuna's public `Study.ask()` pops a WAITING trial the same way, but creates a new trial when
none is waiting, and workers must only run planned trials; nor can it pick a trial by plan key.
So claiming goes through the storage's public methods instead.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from scaling.study.identity import trial_identity
from scaling.study.storage import retry_storage


@dataclass(frozen=True)
class Claim:
    """A trial this process moved from WAITING to RUNNING, and its plan key."""

    trial_id: int
    plan: str | None


@dataclass(frozen=True, eq=False)
class Held:
    """A claimed trial of a worker's unit, until it is told (compared by identity)."""

    study: optuna.Study
    trial_id: int


def claim(storage: optuna.storages.BaseStorage, study: optuna.Study, key: str | None = None,
          exclude: Collection[str] = (), identity: str | None = None) -> Claim | None:
    """Claim the oldest WAITING trial of `study` whose plan key is `key` (if given) and not in
    `exclude`, planned under `identity` (if given: `scaling.study.identity`); None when there is
    none. `storage` is the one `study` was loaded with."""
    # Listing through the study also puts the trials into its storage cache, which
    # `Trial.suggest_*` needs for the claimed trial.
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    attrs = study.user_attrs if identity is not None and waiting else {}
    for t in waiting:
        plan = t.user_attrs.get("plan")
        if (key is not None and plan != key) or plan in exclude:
            continue
        if identity is not None and trial_identity(t, attrs) != identity:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(_study_id(storage, study.study_name), t.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return Claim(trial_id, plan)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


_STUDY_IDS: weakref.WeakKeyDictionary[optuna.storages.BaseStorage, dict[str, int]] = weakref.WeakKeyDictionary()


def _study_id(storage: optuna.storages.BaseStorage, study_name: str) -> int:
    """A study's id in the storage (fixed for the study's life; looked up once per storage)."""
    ids = _STUDY_IDS.setdefault(storage, {})
    if study_name not in ids:
        ids[study_name] = storage.get_study_id_from_name(study_name)
    return ids[study_name]


def claim_some(storage: optuna.storages.BaseStorage, study: optuna.Study, k: int,
               identity: str | None = None) -> list[Held]:
    """Up to `k` WAITING trials of one study, each with its own atomic claim."""
    held: list[Held] = []
    while len(held) < k:
        got = retry_storage(lambda: claim(storage, study, identity=identity))
        if got is None:
            break
        held.append(Held(study, got.trial_id))
    return held


def claim_across(storage: optuna.storages.BaseStorage, studies: Sequence[optuna.Study], k: int,
                 identities: Mapping[str, str] | None = None) -> list[Held]:
    """Up to `k` plan keys, each with its trial in every study that still has it waiting (one
    size's budgets, for cooldown branches). A trial already running or done elsewhere is left
    to its holder: the unit simply lacks that budget."""
    def mine(study: optuna.Study) -> str | None:
        return None if identities is None else identities.get(study.study_name)

    units: dict[str | None, list[Held]] = {}
    for study in studies:
        while len(units) < k:
            got = retry_storage(lambda: claim(storage, study, exclude=set(units), identity=mine(study)))
            if got is None:
                break
            units[got.plan] = [Held(study, got.trial_id)]
    for key, members in units.items():
        taken = {h.study for h in members}
        for study in studies:
            if study in taken or key is None:
                continue
            got = retry_storage(lambda: claim(storage, study, key=key, identity=mine(study)))
            if got is not None:
                members.append(Held(study, got.trial_id))
    return [h for members in units.values() for h in members]


class Heartbeat:
    """Records a trial's heartbeat every `interval` s on a daemon thread; a failed write is
    retried on the next beat instead of killing the thread."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{trial_id}")

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self.storage.record_heartbeat(self.trial_id)

    def __enter__(self) -> "Heartbeat":
        retry_storage(lambda: self.storage.record_heartbeat(self.trial_id))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def heartbeats(storage: optuna.storages.RDBStorage, held: Sequence[Held], interval: float) -> Iterator[None]:
    """A heartbeat for every held trial while the block runs."""
    with contextlib.ExitStack() as stack:
        for h in held:
            stack.enter_context(Heartbeat(storage, h.trial_id, interval))
        yield
