"""`export_study`: the storage's trials as tidy tables for the fits and the report.

results/<name>/trials.csv   one row per completed trial (columns: docs/architecture.md)
results/<name>/curves.csv   the training curves, long format, keyed by (cell, trial_number)
results/<name>/failed.csv   one row per planned trial that finally failed (diverged, ...)

`trial_number` is Optuna's number inside the cell's study, so (cell, trial_number) is the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from scaling.errors import DataError

if TYPE_CHECKING:
    import pandas as pd
from scaling.study.plan import by_plan_key, open_cell_study
from scaling.study.spec import StudySpec
from scaling.study.storage import open_storage, sqlite_file_missing

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
    return row


def order_columns(columns: list[str]) -> list[str]:
    """The fixed lead columns, then ft_<task>_before/after pairs, other metrics, provenance."""
    present = set(columns)
    tasks = [c[3:-7] for c in columns if c.startswith("ft_") and c.endswith("_before")]
    pairs = [c for t in tasks for c in (f"ft_{t}_before", f"ft_{t}_after")]
    known = set(LEAD_COLUMNS) | set(TAIL_COLUMNS) | set(pairs)
    rest = sorted(c for c in present if c not in known)
    return [*LEAD_COLUMNS, *pairs, *rest, *TAIL_COLUMNS]


def export_study(spec: StudySpec, storage: str | None = None, out_dir: str | Path | None = None) -> ExportResult:
    url = storage or spec.storage_url
    if sqlite_file_missing(url):
        raise DataError(f"{spec.path}: no trials yet: {url} does not exist (run `scaling study run` first)")
    store = open_storage(url, spec.worker)
    names = set(optuna.get_all_study_names(store))
    rows, curves, failed = [], [], []
    for cell in spec.cells():
        if spec.study_name(cell) not in names:
            continue
        study = open_cell_study(spec, cell, store, create=False)
        trials = study.get_trials(deepcopy=False)
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

    out = Path(out_dir) if out_dir is not None else Path("results", spec.name)
    out.mkdir(parents=True, exist_ok=True)
    trials_df = pd.DataFrame(rows)
    trials_df = trials_df.reindex(columns=order_columns(list(trials_df.columns)))
    curve_df = pd.DataFrame(curves)
    extra = sorted(c for c in curve_df.columns if c not in CURVE_COLUMNS)
    curve_df = curve_df.reindex(columns=[*CURVE_COLUMNS, *extra])
    failed_df = pd.DataFrame(failed).reindex(columns=list(FAILED_COLUMNS))
    paths = (out / "trials.csv", out / "curves.csv", out / "failed.csv")
    for df, path in zip((trials_df, curve_df, failed_df), paths):
        _write_csv(df, path)
    return ExportResult(*paths, len(trials_df), len(curve_df), len(failed_df))


def _write_csv(df: "pd.DataFrame", path: Path) -> None:
    """Write next to the target, then rename: a reader never sees half a table."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
