"""Reading and checking a trials table before any fit touches it.

Every fit takes a tidy table, one row per completed trial, with design.md's column names. Tables
made elsewhere (e.g. Epoch AI's Chinchilla points) are mapped onto those names with `columns`
({design name: table column}); a missing `n_tokens` is derived from `compute` (C = 6 N D) or
`tpp` (D = tpp * N). Numeric columns accept unit suffixes as the command line does ("2.81B",
"300k"). Problems a user can cause raise DataError naming the table, the row and the column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.core.numbers import human, parse_amount  # human: the one number shortener, re-exported here
from scaling.errors import ConfigError, DataError

# Objective columns with a natural direction (design.md section 2). `ft_<task>_after` columns
# are maximised too; mechanism metrics (probe_acc, qk_rank) describe, they are not objectives.
DIRECTIONS: dict[str, str] = {
    "val_loss": "min",
    "train_loss": "min",
    "gap": "min",
    "ft_score": "max",
    "ft_gain": "max",
    "ft_nll": "min",  # mean held-out NLL after fine-tuning (nats per target token)
    "ft_nll_gain": "max",  # NLL before minus after
}
DEFAULT_OBJECTIVES: dict[str, str] = {"val_loss": "min", "ft_score": "max"}
# A study's plasticity objective: trials.csv's `plasticity` column (the spec's choice) names it.
PLASTICITY_OBJECTIVES: dict[str, tuple[str, str]] = {"nll": ("ft_nll", "min"), "score": ("ft_score", "max")}


def plasticity_objective(table: pd.DataFrame) -> tuple[str, str]:
    """(column, direction) of the table's plasticity objective: its `plasticity` column's choice
    ("nll" -> ft_nll minimised, "score" -> ft_score maximised); ft_score for tables without one."""
    chosen = table["plasticity"].dropna().unique() if "plasticity" in table.columns else []
    if len(chosen) > 1:
        raise DataError(f"column 'plasticity': one objective per table, got {', '.join(map(str, chosen))}")
    return PLASTICITY_OBJECTIVES.get(str(chosen[0]) if len(chosen) else "score", PLASTICITY_OBJECTIVES["score"])


# What a plasticity objective measures, for output that names it.
OBJECTIVE_MEANINGS: dict[str, str] = {
    "ft_nll": "held-out NLL after fine-tuning, lower is better",
    "ft_score": "mean task score after fine-tuning, higher is better",
}


def describe_objective(column: str) -> str:
    """'ft_nll (held-out NLL after fine-tuning, lower is better)'; other columns by their direction."""
    if column in OBJECTIVE_MEANINGS:
        return f"{column} ({OBJECTIVE_MEANINGS[column]})"
    direction = direction_of(column)
    return f"{column} ({'lower' if direction == 'min' else 'higher'} is better)" if direction else column


# Names a --col mapping may target (design.md section 2, plus the table's bookkeeping columns);
# `ft_<task>_before` / `ft_<task>_after` and any --objective column are accepted too.
COLUMN_NAMES = (
    "n_params", "n_tokens", "compute", "tpp", "decay", "lr", "batch_tokens", "steps", "tau", "val_loss",
    "train_loss", "gap", "ft_score", "ft_gain", "probe_acc", "qk_rank", "cell", "seed",
    "ft_nll", "ft_nll_gain", "tau_mean_lr", "plasticity",
)  # fmt: skip


def check_column_targets(columns: Mapping[str, str], also: tuple[str, ...] = ()) -> None:
    """ConfigError for a --col NAME that is not a column name the toolkit knows."""
    for name in columns:
        if name in COLUMN_NAMES or name in also or (name.startswith("ft_") and name.endswith(("_after", "_before"))):
            continue
        raise ConfigError(
            f"--col {name}=...: unknown name {name!r}; expected one of {', '.join(COLUMN_NAMES)}, "
            "ft_<task>_after or an --objective column"
        )


def parse_number(value) -> float:
    """A table cell as a float: numbers, numeric strings and unit suffixes ("2.81B", "300k", as
    `--params` accepts); NaN for anything else (the caller names the row)."""
    if value is None:
        return math.nan
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_amount(text)
    except ValueError:  # the caller reports the row
        return math.nan


def plain(value) -> str:
    """A table value for an error message: 2.81e+09, -1, nan, 'abc' (never a numpy repr)."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return f"{float(value):.6g}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "empty"
    return repr(str(value))


def direction_of(column: str) -> str | None:
    """The optimisation direction design.md gives a metric column, or None if it has none."""
    if column in DIRECTIONS:
        return DIRECTIONS[column]
    if column.startswith("ft_") and column.endswith(("_nll_after", "_nll_before")):
        return "min"
    if column.startswith("ft_") and column.endswith("_after"):
        return "max"
    return None


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (or Parquet) trials table; DataError if it is missing, unreadable or empty."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected a trials table, one row per trial)")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - pandas raises many types; the user needs one line
        raise DataError(f"{path}: cannot read as a table: {type(exc).__name__}: {exc}") from None
    if df.empty:
        raise DataError(f"{path}: the table has no rows")
    return df


def apply_columns(df: pd.DataFrame, columns: Mapping[str, str] | None, source: str) -> pd.DataFrame:
    """Rename table columns to design names ({design name: table column})."""
    if not columns:
        return df
    missing = [col for col in columns.values() if col not in df.columns]
    if missing:
        have = ", ".join(map(str, df.columns))
        raise DataError(f"{source}: mapped column {missing[0]!r} is not in the table (columns: {have})")
    renamed = df.rename(columns={col: name for name, col in columns.items()})
    dup = renamed.columns[renamed.columns.duplicated()]
    if len(dup):
        raise DataError(f"{source}: column {dup[0]!r} appears twice after mapping --col names")
    return renamed


def prepare_table(
    df: pd.DataFrame,
    *,
    source: str = "table",
    columns: Mapping[str, str] | None = None,
    require: tuple[str, ...] = ("n_params", "n_tokens"),
) -> pd.DataFrame:
    """Map, derive and check the columns the fits need; returns a new table.

    Checks: required columns present and numeric; n_params, n_tokens > 0; decay >= 0 (0 allowed:
    it is a real setting, it just cannot go on a log axis); at least one row.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{source}: expected a pandas DataFrame, got {type(df).__name__}")
    if df.empty:
        raise DataError(f"{source}: the table has no rows")
    out = apply_columns(df, columns, source).copy()
    _numeric(out, [c for c in ("n_params", "compute", "tpp", "n_tokens") if c in out.columns], source)
    if "n_tokens" not in out.columns:
        if "n_params" in out.columns and "compute" in out.columns:
            out["n_tokens"] = out["compute"] / (6.0 * out["n_params"])
        elif "n_params" in out.columns and "tpp" in out.columns:
            out["n_tokens"] = out["tpp"] * out["n_params"]
    missing = [c for c in require if c not in out.columns]
    if missing:
        hint = " (map foreign names with --col NAME=COLUMN)" if columns is None else ""
        raise DataError(
            f"{source}: missing column {missing[0]!r}; have {', '.join(map(str, df.columns))}{hint}"
        )
    _numeric(out, [c for c in require if c != "cell"], source)
    for col in ("n_params", "n_tokens"):
        _check(out, col, source, lambda v: v > 0, "> 0")
    if "decay" in out.columns:
        _numeric(out, ["decay"], source)
        _check(out, "decay", source, lambda v: v >= 0, ">= 0 (0 means no weight decay)")
    if "tpp" not in out.columns or out["tpp"].isna().any():
        out["tpp"] = out["n_tokens"] / out["n_params"]
    return out


def _numeric(df: pd.DataFrame, cols: list[str], source: str) -> None:
    for col in cols:
        if col not in df.columns:
            continue
        raw = df[col]
        if pd.api.types.is_bool_dtype(raw):
            raise DataError(f"{source}: column {col!r} must be numeric, got a true/false column")
        values = pd.to_numeric(raw, errors="coerce")
        todo = values.isna() & raw.notna()
        if todo.any():  # strings: unit suffixes such as "2.81B"
            values = values.astype(float)
            values[todo] = [parse_number(v) for v in raw[todo]]
        bad = values.isna() & raw.notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{source}: column {col!r} must be numeric (data row {row + 1}: {plain(raw.iloc[row])})")
        df[col] = values.astype(float)


def _check(df: pd.DataFrame, col: str, source: str, ok, expected: str) -> None:
    values = df[col].to_numpy(dtype=float)
    bad = ~np.isfinite(values) | ~ok(np.nan_to_num(values, nan=-math.inf))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source}: column {col!r} must be finite and {expected} (data row {row + 1}: {plain(values[row])})"
        )


def cell_label(n_params: float, tpp: float) -> str:
    """A readable cell name when the table has no `cell` column, e.g. '1.2M@20tpp'."""
    return f"{human(n_params)}@{tpp:.3g}tpp"
