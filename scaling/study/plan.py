"""From a spec to Optuna studies holding every planned trial as a WAITING trial.

One Optuna study per cell, named "<spec>/<size>@<budget>". Per-cell studies keep the samplers
honest: inside a cell only the decay varies, so TPE/GP/NSGA-II model the objectives as a
function of decay alone. A single study with the cell as a parameter would make the sampler
compare the loss of a 13k model with that of a 12m model (a bigger model "wins" whatever its
decay) and would spend its trial budget on whichever cell looks best instead of on every cell;
best trials, Pareto fronts and `n_trials` are all per cell, which is what the per-cell optimum
fits need.

Planning is idempotent and happens under a storage-wide lock, so any number of `study run`
commands on any number of machines enqueue each planned trial exactly once. Workers only pop
WAITING trials (an atomic WAITING -> RUNNING change in the storage), never create new ones,
so every planned trial runs exactly once. A sampler search plans `n_trials` slots whose params
are left for the sampler to propose when a worker pops the slot.

Refinement rounds (`scaling.study.refine`) are decided per cell under the same lock, recorded on
the cell's study and enqueued like planned trials: by workers as soon as a cell's trials have
settled (`refine_due`), and by the runner for every cell at once after its workers stop
(`ensure_refined`), which then normally finds them recorded and enqueued already.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from datetime import datetime, timedelta
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import RetryFailedTrialCallback
from optuna.trial import FrozenTrial, TrialState

from scaling.errors import ConfigError
from scaling.study import identity as ident
from scaling.study.spec import Cell, PlannedTrial, StudySpec
from scaling.study.storage import retry_storage, storage_lock

if TYPE_CHECKING:
    import pandas as pd

OBJECTIVES = ("val_loss", "ft_score")  # a spec's default before `plasticity`; see StudySpec.objectives
DIRECTIONS = ("minimize", "maximize")
# user attrs every planned trial carries from enqueue through retries (refine, tau_target and
# planned_decay only on some: refinement trials and timescale grids)
PLAN_ATTRS = ("plan", "seed", "cell", ident.IDENTITY, "refine", "tau_target", "planned_decay")
# A failed trial's worker re-queues it (or gives up) moments after failing it; a last attempt
# still failed this long after means no re-queue is coming.
REQUEUE_GRACE = timedelta(seconds=60)


def plan_lock(spec: StudySpec) -> str:
    """The storage lock planning and refinement decisions are made under, on every machine."""
    return f"{spec.name}/.plan-lock"


def open_cell_study(spec: StudySpec, cell: Cell, storage: optuna.storages.BaseStorage,
                    sampler: optuna.samplers.BaseSampler | None = None, create: bool = True) -> optuna.Study:
    name = spec.study_name(cell)
    if not create:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    metrics, directions = zip(*spec.objectives)
    study = retry_storage(lambda: optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, directions=list(directions),
        load_if_exists=True))
    if "cell" not in study.user_attrs:
        study.set_metric_names(list(metrics))
        study.set_user_attr("plasticity", spec.plasticity)
        study.set_user_attr("spec", spec.name)
        study.set_user_attr("cell", cell.name)
        study.set_user_attr("size", cell.size.name)
        study.set_user_attr("budget", cell.budget.label)
        study.set_user_attr("decay_search", spec.decay.describe())
    return study


def by_plan_key(trials: Iterable[FrozenTrial]) -> dict[str, list[FrozenTrial]]:
    """Trials grouped by their plan key, oldest first (a key has several after retries)."""
    groups: dict[str, list[FrozenTrial]] = defaultdict(list)
    for t in sorted(trials, key=lambda t: t.number):
        key = t.user_attrs.get("plan")
        if key is not None:
            groups[key].append(t)
    return dict(groups)


def needs_enqueue(trials: list[FrozenTrial], retry_failed: bool) -> bool:
    """Whether a plan key whose trials are `trials` must be queued (again)."""
    if not trials:
        return True
    last = trials[-1]
    if last.state != TrialState.FAIL:
        return False
    kind = last.user_attrs.get("fail_kind")
    if kind == "interrupted":
        # The worker re-queues an interrupted trial right after failing it; a last attempt
        # still FAIL a minute later means that re-queue was itself cut off.
        return _failed_before_grace(last)
    return retry_failed and kind != "diverged"


def settled(trials: list[FrozenTrial]) -> bool:
    """Whether a plan key whose attempts are `trials` is done for now: its last attempt complete,
    diverged, or failed more than REQUEUE_GRACE ago. A worker re-queues a failed trial moments
    after failing it (or gives up), so a fresh failure may still come back."""
    if not trials:
        return False
    last = trials[-1]
    if last.state in (TrialState.WAITING, TrialState.RUNNING):
        return False
    if last.state != TrialState.FAIL or last.user_attrs.get("fail_kind") == "diverged":
        return True
    return _failed_before_grace(last)


def _failed_before_grace(trial: FrozenTrial) -> bool:
    finished = trial.datetime_complete or datetime.now()
    return datetime.now() - finished > REQUEUE_GRACE


def ensure_planned(spec: StudySpec, storage: optuna.storages.BaseStorage, n_trials: int | None = None,
                   retry_failed: bool = False, log: Callable[[str], None] | None = None,
                   allow_changed_spec: bool = False) -> int:
    """Create every cell's study and enqueue the planned trials it lacks; return how many were
    enqueued. `retry_failed` re-queues final failures other than divergence (a diverged trial
    would diverge again: same config, same seed).

    A cell planned before under another identity (the spec was edited under the same name) is a
    ConfigError naming what changed, checked for every cell before anything is enqueued; with
    `allow_changed_spec` the cell takes the new identity, its old trials stay in the storage as
    stale (not counted, not exported) and its old waiting trials are failed as "spec_changed"."""
    added = 0
    identities = {cell.name: ident.cell_identity(spec, cell) for cell in spec.cells()}
    with storage_lock(storage, plan_lock(spec), log=log):
        studies = {cell.name: open_cell_study(spec, cell, storage) for cell in spec.cells()}
        for cell in spec.cells():
            check_plasticity(spec, studies[cell.name])
            check_identity(spec, cell, studies[cell.name], identities[cell.name], allow_changed_spec)
        for cell in spec.cells():
            study = studies[cell.name]
            fields = identities[cell.name]
            adopt_identity(storage, study, fields)
            digest = ident.identity_hash(fields)
            groups = by_plan_key(ident.current(study.get_trials(deepcopy=False), study.user_attrs))
            for planned in spec.plan(n_trials, cell=cell):
                added += enqueue_planned(study, cell, planned, groups.get(planned.key, []), retry_failed, digest)
    return added


def enqueue_planned(study: optuna.Study, cell: Cell, planned: PlannedTrial, trials: list[FrozenTrial],
                    retry_failed: bool, identity: str, refine_round: int | None = None) -> int:
    """Enqueue `planned` unless its plan key's `trials` make that unnecessary; 1 if enqueued.
    `identity`: the cell's identity digest (scaling.study.identity), carried by the trial."""
    if not needs_enqueue(trials, retry_failed):
        return 0
    params: dict[str, Any] = dict(trials[-1].params) if trials else {}
    attrs: dict[str, Any] = {"plan": planned.key, "seed": planned.seed, "cell": cell.name, ident.IDENTITY: identity}
    if planned.decay is not None:
        params["decay"] = planned.decay
        attrs["planned_decay"] = planned.decay
    if planned.tau is not None:
        attrs["tau_target"] = planned.tau if math.isfinite(planned.tau) else "inf"
    if refine_round is not None:
        attrs["refine"] = refine_round
    retry_storage(lambda: study.enqueue_trial(params, user_attrs=attrs))
    return 1


def check_plasticity(spec: StudySpec, study: optuna.Study) -> None:
    """ConfigError when the cell's study was made with another plasticity objective (its
    Optuna directions and values would not match the spec's)."""
    made = study.user_attrs.get("plasticity", "score")  # studies from before the key held ft_score
    if made != spec.plasticity:
        raise ConfigError(f"{spec.path}: plasticity: the study {study.study_name!r} in this storage was made with "
                          f"plasticity = {made!r}; expected that value (or a new storage), got {spec.plasticity!r}")


def check_identity(spec: StudySpec, cell: Cell, study: optuna.Study, fields: dict[str, Any], allow: bool,
                   hint: str = "give the spec a new name, or pass --allow-changed-spec to mark the old trials "
                               "stale and run the new ones") -> None:
    """ConfigError if the cell was planned under other fields, unless `allow`; trials from before
    identities existed are compared through the RunConfig they recorded."""
    attrs = study.user_attrs
    if attrs.get(ident.IDENTITY) == ident.identity_hash(fields):
        return
    if ident.IDENTITY_FIELDS in attrs:
        old = attrs[ident.IDENTITY_FIELDS]
    else:
        old = _legacy_fields(study, fields)
        if old is None:
            return
    changed = ident.changes(old, fields)
    if not changed or allow:
        return
    raise ConfigError(f"{spec.path}: the spec changed since study {spec.study_name(cell)} was planned "
                      f"({'; '.join(changed)}); expected the same settings: {hint}")


def _legacy_fields(study: optuna.Study, fields: dict[str, Any]) -> dict[str, Any] | None:
    """The fields of a study planned before identities, from the newest trial's recorded
    RunConfig (fields it did not record taken as unchanged); None when no trial recorded one."""
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: -t.number):
        config = t.user_attrs.get("config")
        if isinstance(config, dict):
            return {k: config.get(k, fields[k]) for k in fields}
    return None


def adopt_identity(storage: optuna.storages.BaseStorage, study: optuna.Study, fields: dict[str, Any]) -> None:
    """Make `fields` the study's identity. Trials from before identities count as the first
    identity adopted if the RunConfig they recorded matches it; waiting trials of any other
    identity fail as "spec_changed" (a worker would run them with the new settings)."""
    digest = ident.identity_hash(fields)
    if study.user_attrs.get(ident.IDENTITY) == digest:
        return
    if study.user_attrs.get(ident.IDENTITY) is None and ident.LEGACY not in study.user_attrs:
        legacy = _legacy_fields(study, fields)
        same = legacy is None or not ident.changes(legacy, fields)
        retry_storage(lambda: study.set_user_attr(ident.LEGACY, digest if same else "before-identities"))
    attrs = study.user_attrs
    study_id = retry_storage(lambda: storage.get_study_id_from_name(study.study_name))
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if ident.trial_identity(t, attrs) == digest:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            retry_storage(lambda: storage.set_trial_user_attr(trial_id, "fail_kind", "spec_changed"))
            retry_storage(lambda: storage.set_trial_user_attr(
                trial_id, "fail_reason", "planned under an earlier version of the spec"))
            retry_storage(lambda: storage.set_trial_state_values(trial_id, TrialState.FAIL))
    retry_storage(lambda: study.set_user_attr(ident.IDENTITY_FIELDS, fields))
    retry_storage(lambda: study.set_user_attr(ident.IDENTITY, digest))


def requeue(study: optuna.Study, trial: FrozenTrial, count_retry: bool, max_retry: int) -> bool:
    """Queue a WAITING copy of a failed trial with the same params (and plan attrs). Counted
    retries stop after `max_retry`; an interruption is not the trial's fault and is not counted.
    Keeps the retry bookkeeping of Optuna's retry callbacks, so their public readers
    (`RetryFailedTrialCallback.retry_history`, `.retried_trial_number`) work on our retries too;
    unlike them it copies only the plan attrs, not the failed attempt's results."""
    history = list(RetryFailedTrialCallback.retry_history(trial))
    if count_retry:
        if len(history) >= max_retry:
            return False
        history.append(trial.number)
    first = RetryFailedTrialCallback.retried_trial_number(trial)
    system_attrs = {**trial.system_attrs, "failed_trial": trial.number if first is None else first,
                    "retry_history": history}
    retry_storage(lambda: study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={k: trial.user_attrs[k] for k in PLAN_ATTRS if k in trial.user_attrs},
        system_attrs=system_attrs)))
    return True


def refinement_table(spec: StudySpec, cell: Cell, trials: Iterable[FrozenTrial]) -> "pd.DataFrame":
    """The cell's completed trials as the refinement rule reads them: cell, decay, seed, tau and
    the spec's objective columns (from the trials' values)."""
    import pandas as pd

    names = [name for name, _ in spec.objectives]
    rows = [{"cell": cell.name, "decay": float(t.params["decay"]), "seed": int(t.user_attrs["seed"]),
             "tau": _float(t.user_attrs.get("tau")), **dict(zip(names, t.values))}
            for t in trials if t.state == TrialState.COMPLETE and "decay" in t.params and "seed" in t.user_attrs]
    return pd.DataFrame(rows, columns=["cell", "decay", "seed", "tau", *names])


def ensure_refined(spec: StudySpec, storage: optuna.storages.BaseStorage, round_: int,
                   log: Callable[[str], None] | None = None) -> int:
    """Enqueue refinement round `round_` of every cell at once (`refine_cell`); return how many
    trials were enqueued. The runner calls it after its workers stop: for resumes, and for cells
    the workers could not decide (`refine_due` decides each cell as soon as it is ready)."""
    with storage_lock(storage, plan_lock(spec), log=log):
        return sum(refine_cell(spec, cell, open_cell_study(spec, cell, storage), round_) for cell in spec.cells())


def refine_cell(spec: StudySpec, cell: Cell, study: optuna.Study, round_: int) -> int:
    """Enqueue refinement round `round_` of one cell; return how many trials were enqueued. The
    caller holds the plan lock (`plan_lock`).

    The first caller computes the round's proposals (`scaling.study.refine.propose`) from the
    cell's completed trials and records their plan keys on the cell's study (user attr
    "refine_round_<n>"); later callers, and resumes, enqueue the recorded keys that still lack a
    trial, so a round is decided once whoever runs it and however often it is resumed."""
    from scaling.study.refine import propose

    directions = [(name, "min" if d == "minimize" else "max") for name, d in spec.objectives]
    trials = ident.current(study.get_trials(deepcopy=False), study.user_attrs)  # not stale ones
    groups = by_plan_key(trials)
    identity = study.user_attrs.get(ident.IDENTITY, "")  # set by ensure_planned
    attr = refine_attr(round_)
    recorded = study.user_attrs.get(attr)
    if recorded is None:
        proposals = propose(refinement_table(spec, cell, trials), directions, spec.refine.trials)
        recorded = [{"key": f"refine={round_}/{p.key}", "seed": p.seed, "decay": p.decay,
                     "tau": None if p.tau is None else (p.tau if math.isfinite(p.tau) else "inf"),
                     "objective": p.objective, "reason": p.reason} for p in proposals]
        retry_storage(lambda: study.set_user_attr(attr, recorded))
    added = 0
    for r in recorded:
        tau = None if r["tau"] is None else float(r["tau"])
        planned = PlannedTrial(r["key"], int(r["seed"]), float(r["decay"]), tau)
        added += enqueue_planned(study, cell, planned, groups.get(r["key"], []), False, identity,
                                 refine_round=round_)
    return added


def refine_attr(round_: int) -> str:
    """The cell study's user attr recording refinement round `round_`'s proposals."""
    return f"refine_round_{round_}"


def due_round(spec: StudySpec, study: optuna.Study, identity: str | None = None) -> int | None:
    """The cell's first refinement round there is something to do for now, or None: a decided
    round with a recorded key lacking a trial, or the next undecided round once every plan key
    of the earlier rounds (the planned trials are round 0) has `settled`. A round depends on its
    cell's trials only, so it need not wait for other cells. None as well when refinement is
    off, or when the cell was planned under another `identity` than the caller's."""
    if not spec.refine.enabled:
        return None
    attrs = study.user_attrs
    if identity is not None and attrs.get(ident.IDENTITY) != identity:
        return None
    groups = by_plan_key(ident.current(study.get_trials(deepcopy=False), attrs))
    for round_ in range(1, spec.refine.rounds + 1):
        recorded = attrs.get(refine_attr(round_))
        if recorded is None:
            earlier = [ts for ts in groups.values() if _round(ts[-1]) < round_]
            return round_ if earlier and all(settled(ts) for ts in earlier) else None
        if any(needs_enqueue(groups.get(r["key"], []), False) for r in recorded):
            return round_
    return None


def refine_due(spec: StudySpec, storage: optuna.storages.BaseStorage, cells: Iterable[tuple[Cell, optuna.Study]],
               identities: dict[str, str | None] | None = None, log: Callable[[str], None] | None = None) -> int:
    """Decide and enqueue every refinement round that is due (`due_round`) in `cells`, each
    cell on its own while other cells still train; return how many trials were enqueued.

    Workers call it between units. It reads without the lock first (the usual answer is that
    nothing is due) and takes the plan lock only when a round is due, then asks again under it:
    of several workers (on any machines) that see a round due, the first decides it and the
    others find it recorded and enqueued (`refine_cell`). `identities`: study name -> the
    identity the caller's spec planned (a stale spec decides nothing)."""
    identities = identities or {}
    due = [(cell, study) for cell, study in cells
           if due_round(spec, study, identities.get(study.study_name)) is not None]
    if not due:
        return 0
    added = 0
    with storage_lock(storage, plan_lock(spec), log=log):
        for cell, study in due:
            for _ in range(spec.refine.rounds):  # a round with no proposals leaves the next one due at once
                round_ = due_round(spec, study, identities.get(study.study_name))
                if round_ is None:
                    break
                added += refine_cell(spec, cell, study, round_)
    return added


def _round(trial: FrozenTrial) -> int:
    """The refinement round a trial belongs to (0: planned)."""
    value = trial.user_attrs.get("refine", 0)
    return value if isinstance(value, int) else 0


def _float(x: Any) -> float:
    """A recorded number (inf may be stored as a string) as a float; NaN when absent."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan
