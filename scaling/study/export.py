"""`export_study`: the storage's trials as tidy tables for the fits and the report.

results/<name>/trials.csv   one row per completed trial (columns: docs/architecture.md)
results/<name>/curves.csv   the training curves, long format, keyed by (cell, trial_number)
results/<name>/failed.csv   one row per planned trial that finally failed (diverged, ...)

An export never silently loses results: it refuses a storage holding none of the spec's
studies, and refuses to replace a trials.csv that has more trials than the new one unless
`force=True`. Each file is written whole (temp file + rename) or not at all.

`trial_number` is Optuna's number inside the cell's study, so (cell, trial_number) is the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from scaling.errors import DataError
from scaling.io import write_atomic

if TYPE_CHECKING:
    import pandas as pd
from scaling.study.identity import cell_identity, current
from scaling.study.plan import by_plan_key, check_identity, open_cell_study
from scaling.study.spec import StudySpec
from scaling.study.storage import open_storage, safe_url, sqlite_file_missing

LEAD_COLUMNS = ("study", "cell", "trial_number", "size", "seed", "schedule", "decay", "lr", "n_params",
                "n_params_total", "n_tokens", "tpp", "batch_tokens", "steps", "tau", "epochs", "val_loss",
                "train_loss", "gap", "ft_score", "ft_gain", "probe_acc", "qk_rank")
TAIL_COLUMNS = ("wall_s", "tokens_per_s", "device", "code_version", "git_commit", "host")
CURVE_COLUMNS = ("cell", "trial_number", "step", "tokens", "lr", "train_loss", "val_loss")
FAILED_COLUMNS = ("study", "cell", "trial_number", "size", "seed", "decay", "fail_kind", "fail_reason")


@dataclass(frozen=True)
class ExportResult:
    trials_csv: Path
    curves_csv: Path
    failed_csv: Path
    n_trials: int
    n_curve_rows: int
    n_failed: int
    replaced_trials: int | None = None  # trials in the trials.csv this export replaced (None: there was none)
    n_stale: int = 0  # completed trials of an earlier version of the spec, left out (docs/studies.md)


def trial_row(spec: StudySpec, cell: str, t: FrozenTrial) -> dict[str, Any]:
    attrs = t.user_attrs
    row: dict[str, Any] = {k: attrs.get(k) for k in attrs.get("metric_keys", [])}
    config = attrs.get("config") or {}
    row.update(study=spec.name, cell=cell, trial_number=t.number, size=attrs.get("size", row.get("size")),
               seed=attrs.get("seed", row.get("seed")), schedule=config.get("schedule"),
               decay=t.params.get("decay", row.get("decay")))
    if row.get("wall_s") is None:
        row["wall_s"] = attrs.get("trial_wall_s")
    for key in ("code_version", "git_commit", "host"):
        row[key] = attrs.get(key)
    # the spec's plasticity objective (the fits read it), and the refinement round (0: planned)
    row.update(plasticity=spec.plasticity, refine=attrs.get("refine", 0))
    return row


def order_columns(columns: list[str]) -> list[str]:
    """The fixed lead columns, then ft_<task>_before/after pairs, other metrics, provenance."""
    present = set(columns)
    tasks = [c[3:-7] for c in columns if c.startswith("ft_") and c.endswith("_before")]
    pairs = [c for t in tasks for c in (f"ft_{t}_before", f"ft_{t}_after")]
    known = set(LEAD_COLUMNS) | set(TAIL_COLUMNS) | set(pairs)
    rest = sorted(c for c in present if c not in known)
    return [*LEAD_COLUMNS, *pairs, *rest, *TAIL_COLUMNS]


def export_study(spec: StudySpec, storage: str | None = None, out_dir: str | Path | None = None, *,
                 force: bool = False) -> ExportResult:
    """Write the spec's trials, curves and failed trials from `storage` (default the spec's) to
    `out_dir` (default results/<name>). DataError, writing nothing, when the storage holds none
    of the spec's studies or when it would replace a trials.csv with fewer trials (unless `force`)."""
    url = storage or spec.storage_url
    out = Path(out_dir) if out_dir is not None else Path("results", spec.name)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: is a file; expected the folder to export into")
    if sqlite_file_missing(url):
        raise DataError(f"{spec.path}: no trials yet: {safe_url(url)} does not exist (run `scaling study run` first)")
    store = open_storage(url, spec.worker)
    names = set(optuna.get_all_study_names(store))
    if not any(spec.study_name(cell) in names for cell in spec.cells()):
        store.engine.dispose()
        raise DataError(f"{safe_url(url)}: holds no study of spec {spec.name!r} (expected names like "
                        f"{spec.study_name(spec.cells()[0])!r}); wrong --storage? nothing was written")
    rows, curves, failed = [], [], []
    stale = 0
    for cell in spec.cells():
        if spec.study_name(cell) not in names:
            continue
        study = open_cell_study(spec, cell, store, create=False)
        # Rows come from what each trial recorded; refuse to file old settings' trials under an edited spec.
        check_identity(spec, cell, study, cell_identity(spec, cell), allow=False,
                       hint="export with the spec they were run with, or `scaling study run --allow-changed-spec` "
                            "first; nothing was written")
        every = study.get_trials(deepcopy=False)
        trials = current(every, study.user_attrs)  # not those of an edited spec
        stale += sum(t.state == TrialState.COMPLETE for t in every) - sum(t.state == TrialState.COMPLETE for t in trials)
        for t in trials:
            if t.state != TrialState.COMPLETE:
                continue
            rows.append(trial_row(spec, cell.name, t))
            for point in t.user_attrs.get("curve") or []:
                curves.append({"cell": cell.name, "trial_number": t.number, **point})
        for attempts in by_plan_key(trials).values():
            last = attempts[-1]
            if last.state == TrialState.FAIL:
                failed.append({"study": spec.name, "cell": cell.name, "trial_number": last.number,
                               "size": cell.size.name, "seed": last.user_attrs.get("seed"),
                               "decay": last.params.get("decay"), "fail_kind": last.user_attrs.get("fail_kind", "stale"),
                               "fail_reason": last.user_attrs.get("fail_reason", "no heartbeat from its worker")})
    store.engine.dispose()
    import pandas as pd  # here, not at import time: spawned workers never need it

    trials_df = pd.DataFrame(rows)
    trials_df = trials_df.reindex(columns=order_columns(list(trials_df.columns)))
    curve_df = pd.DataFrame(curves)
    extra = sorted(c for c in curve_df.columns if c not in CURVE_COLUMNS)
    curve_df = curve_df.reindex(columns=[*CURVE_COLUMNS, *extra])
    failed_df = pd.DataFrame(failed).reindex(columns=list(FAILED_COLUMNS))
    paths = (out / "trials.csv", out / "curves.csv", out / "failed.csv")
    try:
        replaced = existing_trials(paths[0])
    except DataError:
        if not force:
            raise
        replaced = None
    if replaced is not None and replaced > len(trials_df) and not force:
        raise DataError(f"{paths[0]}: holds {replaced} trials, the export from {safe_url(url)} only "
                        f"{len(trials_df)}; nothing was written (use --force to replace it, or --out elsewhere)")
    # trials.csv last: an export interrupted between files leaves the old trials table in place
    for df, path in reversed(list(zip((trials_df, curve_df, failed_df), paths))):
        write_atomic(path, df.to_csv(index=False))
    return ExportResult(*paths, len(trials_df), len(curve_df), len(failed_df), replaced, stale)


def existing_trials(path: Path) -> int | None:
    """Rows of an existing trials.csv (None when there is none); DataError if it cannot be read,
    since then nobody can tell what replacing it would lose."""
    if not path.exists():
        return None
    import pandas as pd

    try:
        return len(pd.read_csv(path))
    except pd.errors.EmptyDataError:
        return 0
    except Exception as exc:  # noqa: BLE001 - pandas raises many types; the user needs one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot read the existing table to compare ({reason}); "
                        f"move it away, or use --force to replace it") from None
