"""`study_status`: where every cell of a spec stands, read from the storage.

Counts are per planned trial (its plan key), not per Optuna trial: a trial that was retried
after a crash counts once, by its latest attempt; `retried` says how many attempts failed and
were run again.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from scaling.study.identity import current
from scaling.study.plan import by_plan_key, open_cell_study
from scaling.study.spec import StudySpec
from scaling.study.storage import open_storage, safe_url, sqlite_file_missing


@dataclass(frozen=True)
class TrialSummary:
    number: int
    decay: float | None
    seed: int | None
    val_loss: float | None
    ft_score: float | None
    ft_nll: float | None = None

    @classmethod
    def of(cls, t: FrozenTrial) -> "TrialSummary":
        values = t.values or [None, None]
        score = t.user_attrs.get("ft_score", values[1])
        return cls(t.number, t.params.get("decay"), t.user_attrs.get("seed"), values[0], score,
                   t.user_attrs.get("ft_nll"))

    def describe(self) -> str:
        nll = "" if self.ft_nll is None else f" ft_nll={_g(self.ft_nll)}"
        return (f"#{self.number} decay={_g(self.decay)} seed={self.seed} "
                f"val_loss={_g(self.val_loss)} ft_score={_g(self.ft_score)}{nll}")


@dataclass(frozen=True)
class CellStatus:
    cell: str
    study_name: str
    planned: int
    complete: int = 0
    running: int = 0
    waiting: int = 0
    failed: int = 0  # final failures (diverged, or retries used up)
    retried: int = 0  # failed attempts that were run again
    failures: tuple[str, ...] = ()  # "decay=10 seed=0: diverged at step 3 ..." per final failure
    best_val_loss: TrialSummary | None = None
    best_ft_score: TrialSummary | None = None
    pareto: tuple[TrialSummary, ...] = ()
    started: bool = True
    refinement: int = 0  # trials added by adaptive refinement (scaling.study.refine), beside `planned`
    fail_reasons: tuple[str, ...] = ()  # the reason of each final failure

    @property
    def finished(self) -> bool:
        return (self.started and self.running == 0 and self.waiting == 0
                and self.complete + self.failed >= self.planned + self.refinement)


@dataclass(frozen=True)
class StudyStatus:
    spec: str
    storage: str
    cells: tuple[CellStatus, ...]
    plasticity: str = "ft_score"  # the plasticity objective's column

    @property
    def finished(self) -> bool:
        return all(c.finished for c in self.cells)

    def to_text(self) -> str:
        lines = [f"study {self.spec}  storage {self.storage}"]
        header = f"{'cell':<18} {'planned':>7} {'refine':>6} {'complete':>8} {'running':>7} {'waiting':>7} {'failed':>6} {'retried':>7}"
        lines.append(header)
        for c in self.cells:
            if not c.started:
                lines.append(f"{c.cell:<18} {c.planned:>7}  (not started)")
                continue
            lines.append(f"{c.cell:<18} {c.planned:>7} {c.refinement:>6} {c.complete:>8} {c.running:>7} {c.waiting:>7} "
                         f"{c.failed:>6} {c.retried:>7}")
        for c in self.cells:
            if not (c.best_val_loss or c.failures):
                continue
            lines.append(f"\n{c.cell}")
            if c.best_val_loss:
                lines.append(f"  best val_loss : {c.best_val_loss.describe()}")
            if c.best_ft_score:
                lines.append(f"  best {self.plasticity:<8}: {c.best_ft_score.describe()}")
            if c.pareto:
                way = "down" if self.plasticity == "ft_nll" else "up"
                lines.append(f"  Pareto front (val_loss down, {self.plasticity} {way}):")
                lines.extend(f"    {p.describe()}" for p in c.pareto)
            for f in c.failures:
                lines.append(f"  failed: {f}")
        lines.append("\n" + ("finished" if self.finished else "not finished"))
        return "\n".join(lines)


def cell_status(spec: StudySpec, study: optuna.Study, cell_name: str, planned: int) -> CellStatus:
    trials = current(study.get_trials(deepcopy=False), study.user_attrs)  # not those of an edited spec
    groups = by_plan_key(trials)
    counts = {TrialState.COMPLETE: 0, TrialState.RUNNING: 0, TrialState.WAITING: 0, TrialState.FAIL: 0}
    refinement = sum(1 for attempts in groups.values() if attempts[-1].user_attrs.get("refine") is not None)
    retried = 0
    failures, reasons = [], []
    for attempts in groups.values():
        last = attempts[-1]
        counts[last.state] = counts.get(last.state, 0) + 1
        retried += sum(1 for t in attempts[:-1] if t.state == TrialState.FAIL)
        if last.state == TrialState.FAIL:
            reason = last.user_attrs.get("fail_reason", "no heartbeat from its worker (killed?), retries used up")
            reasons.append(reason)
            failures.append(f"decay={_g(last.params.get('decay'))} seed={last.user_attrs.get('seed')}: {reason}")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best_loss = min(complete, key=lambda t: t.values[0], default=None)
    plastic_sign = -1 if spec.objectives[1][1] == "maximize" else 1
    best_ft = min(complete, key=lambda t: plastic_sign * t.values[1], default=None)
    pareto = sorted((TrialSummary.of(t) for t in _pareto(complete, study.directions)),
                    key=lambda s: (s.decay or 0.0, s.number))
    return CellStatus(
        cell=cell_name, study_name=study.study_name, planned=max(planned, len(groups) - refinement),
        refinement=refinement,
        complete=counts[TrialState.COMPLETE], running=counts[TrialState.RUNNING],
        waiting=counts[TrialState.WAITING], failed=counts[TrialState.FAIL], retried=retried,
        failures=tuple(failures), fail_reasons=tuple(reasons),
        best_val_loss=TrialSummary.of(best_loss) if best_loss else None,
        best_ft_score=TrialSummary.of(best_ft) if best_ft else None,
        pareto=tuple(pareto))


def study_status(spec: StudySpec, storage: str | None = None) -> StudyStatus:
    url = storage or spec.storage_url
    if sqlite_file_missing(url):
        store, existing = None, set()
    else:
        store = open_storage(url, spec.worker)
        existing = set(optuna.get_all_study_names(store))
    planned = len(spec.plan())
    cells = []
    for cell in spec.cells():
        name = spec.study_name(cell)
        if name not in existing:
            cells.append(CellStatus(cell.name, name, planned, started=False))
            continue
        study = open_cell_study(spec, cell, store, create=False)
        cells.append(cell_status(spec, study, cell.name, planned))
    if store is not None:
        store.engine.dispose()
    return StudyStatus(spec.name, safe_url(url), tuple(cells), spec.objectives[1][0])


def _pareto(complete: list[FrozenTrial], directions: list[optuna.study.StudyDirection]) -> list[FrozenTrial]:
    """The current trials no other beats on every objective (Study.best_trials would include stale ones)."""
    signs = [1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in directions]

    def beats(a: FrozenTrial, b: FrozenTrial) -> bool:
        pairs = [(s * x, s * y) for s, x, y in zip(signs, a.values, b.values)]
        return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)
    return [t for t in complete if not any(beats(o, t) for o in complete)]


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"
