"""What the report reads: a study folder's tables, checked once so the figures can trust them.

    results/<name>/trials.csv   required: one row per completed trial
    results/<name>/curves.csv   optional: training curves, long format, keyed by (cell, trial_number)
    results/<name>/failed.csv   optional: planned trials that finally failed (diverged, ...)

A trials table needs at least n_params, n_tokens, decay and val_loss; everything else (ft_*
columns, mechanisms, curves) is drawn when present and reported missing when not.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.errors import DataError
from scaling.fit.table import cell_label, prepare_table, read_table

REQUIRED = ("n_params", "n_tokens", "decay", "val_loss")
CURVE_REQUIRED = ("trial_number", "step", "train_loss")
MECHANISMS = ("probe_acc", "qk_rank", "gap")
_TASK_AFTER = re.compile(r"^ft_(.+)_after$")


@dataclass(frozen=True)
class StudyTables:
    """A study's tables after checking: `trials` always has cell, tpp and trial_number columns."""

    trials: pd.DataFrame
    curves: pd.DataFrame | None = None
    failed: pd.DataFrame | None = None
    source: str = "trials table"
    notes: tuple[str, ...] = field(default=())  # what could not be read, in plain words

    @property
    def tasks(self) -> tuple[str, ...]:
        return tasks_of(self.trials)

    @property
    def cells(self) -> tuple[str, ...]:
        """Cell labels ordered by (N, D)."""
        order = self.trials.groupby("cell")[["n_params", "n_tokens"]].median().sort_values(["n_params", "n_tokens"])
        return tuple(order.index)

    def has(self, column: str) -> bool:
        return column in self.trials.columns and bool(np.isfinite(self.trials[column].to_numpy(dtype=float)).any())


def tasks_of(trials: pd.DataFrame) -> tuple[str, ...]:
    """Task names T with an ft_T_after column, in table order."""
    return tuple(m.group(1) for c in trials.columns if (m := _TASK_AFTER.match(str(c))))


def timescale_constants(trials: pd.DataFrame) -> pd.Series | None:
    """k = B/(lr D) of every trial (batch_tokens, peak lr, n_tokens), so that its timescale is
    tau = k / decay (Bergsma et al. 2025); computed from the settings rather than read from a
    `tau` column, so tables written before there was one work too. None when any trial lacks a
    finite positive lr, batch_tokens or n_tokens: such a table is drawn against decay."""
    if any(c not in trials.columns for c in ("lr", "batch_tokens", "n_tokens")) or trials.empty:
        return None
    lr, batch, tokens = (pd.to_numeric(trials[c], errors="coerce").to_numpy(dtype=float)
                         for c in ("lr", "batch_tokens", "n_tokens"))  # fmt: skip
    settings = np.stack([lr, batch, tokens])
    if not (np.isfinite(settings).all() and (settings > 0).all()):
        return None
    return pd.Series(batch / (lr * tokens), index=trials.index, name="k")


def timescales(k, decay) -> np.ndarray:
    """tau = k / decay, inf at decay 0 (no decay: an infinitely long EMA) and 0 at decay inf."""
    k, d = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(decay, dtype=float))
    with np.errstate(divide="ignore"):
        return np.where(d > 0, k / np.where(d > 0, d, 1.0), np.where(d == 0, np.inf, np.nan))


def check_trials(df: pd.DataFrame, source: str = "trials table") -> pd.DataFrame:
    """The table the report draws: required columns present and valid (DataError otherwise),
    numeric metric columns, a `cell` label and a `trial_number` on every row."""
    derivable = {"n_tokens": "tpp"}  # D = tpp * N when only the ratio was recorded
    missing = [c for c in REQUIRED if c not in df.columns and derivable.get(c) not in df.columns]
    if missing:
        raise DataError(
            f"{source}: missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
            f"a trials table needs {', '.join(REQUIRED)}"
        )
    out = prepare_table(df, source=source, require=REQUIRED)
    for col in out.columns:
        if col in ("cell", "study", "size", "schedule", "device", "host", "code_version", "git_commit"):
            continue
        if out[col].dtype == object:
            converted = pd.to_numeric(out[col], errors="coerce")
            if converted.notna().sum() >= out[col].notna().sum():  # a numeric column read as text
                out[col] = converted
    if not np.isfinite(out["val_loss"].to_numpy(dtype=float)).any():
        raise DataError(f"{source}: column 'val_loss' has no finite value")
    if "cell" not in out.columns or out["cell"].isna().any():
        labels = [cell_label(n, t) for n, t in zip(out["n_params"], out["tpp"])]
        out["cell"] = out["cell"].fillna(pd.Series(labels, index=out.index)) if "cell" in out.columns else labels
    out["cell"] = out["cell"].astype(str)
    out["tpp"] = snap_budgets(out["tpp"])
    if "trial_number" not in out.columns:
        out["trial_number"] = np.arange(len(out))
    return out.reset_index(drop=True)


def snap_budgets(tpp: pd.Series, rtol: float = 0.02) -> pd.Series:
    """One value per token budget. Budgets are rounded to whole optimizer steps, so cells of
    one nominal budget record slightly different realised ratios (5, 5.02, 5.04); values within
    `rtol` of a group's smallest member are drawn as one budget, at the group's median."""
    values = np.sort(tpp.dropna().unique().astype(float))
    mapping: dict[float, float] = {}
    group: list[float] = []
    for v in values:
        if group and v > group[0] * (1 + rtol):
            mapping.update({g: float(np.median(group)) for g in group})
            group = []
        group.append(v)
    mapping.update({g: float(np.median(group)) for g in group})
    return tpp.map(lambda v: mapping.get(float(v), v) if pd.notna(v) else v)


def check_curves(df: pd.DataFrame, source: str = "curves table") -> pd.DataFrame:
    missing = [c for c in CURVE_REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"{source}: missing column {missing[0]!r}; a curves table needs {', '.join(CURVE_REQUIRED)}")
    out = df.copy()
    for col in ("trial_number", "step", "tokens", "lr", "train_loss", "val_loss"):
        if col in out.columns:
            out[col] = pd.to_numeric(out[col], errors="coerce")
    return out


def load_study(folder: str | Path) -> StudyTables:
    """Read and check results/<name>/. DataError if the folder or its trials.csv is missing or
    malformed; a malformed optional table is skipped with a note instead."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (expected results/<name> with a trials.csv)")
    trials_path = folder / "trials.csv"
    if not trials_path.is_file():
        raise DataError(f"{trials_path}: no such file (run `scaling study export` first)")
    trials = check_trials(read_table(trials_path), source=str(trials_path))
    notes: list[str] = []
    curves = _optional(folder / "curves.csv", check_curves, notes)
    failed = _optional(folder / "failed.csv", lambda df, source: df, notes)
    return StudyTables(trials=trials, curves=curves, failed=failed, source=str(trials_path), notes=tuple(notes))


def _optional(path: Path, check, notes: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None
    except Exception as exc:  # an unreadable optional table must not cost the whole report
        notes.append(f"{path.name} could not be read ({type(exc).__name__}: {exc}); left out")
        return None
    if df.empty:
        return None
    try:
        return check(df, source=str(path))
    except DataError as exc:
        notes.append(f"{exc}; left out")
        return None


def curves_with_decay(tables: StudyTables, max_points: int = 200) -> pd.DataFrame | None:
    """Curves joined to their trial's cell and decay, thinned to at most `max_points` per trial
    (keeps the page small; the first and last points are always kept)."""
    curves = tables.curves
    if curves is None or curves.empty:
        return None
    keys = ["cell", "trial_number"] if "cell" in curves.columns else ["trial_number"]
    meta = tables.trials[["cell", "trial_number", "decay", "n_params", "n_tokens", "tpp"]].drop_duplicates(keys)
    joined = curves.merge(meta, on=keys, how="inner")
    if joined.empty:
        return None
    parts = []
    for _, g in joined.groupby(keys, sort=False):
        g = g.sort_values("step")
        if len(g) > max_points:
            idx = np.unique(np.round(np.linspace(0, len(g) - 1, max_points)).astype(int))
            evaluated = np.flatnonzero(g["val_loss"].notna().to_numpy()) if "val_loss" in g.columns else []
            g = g.iloc[np.union1d(idx, evaluated[:: max(1, math.ceil(len(evaluated) / max_points))])]
        parts.append(g)
    return pd.concat(parts, ignore_index=True)
