"""`fit_surface_table`: the loss surface alone from anyone's scaling table.

Columns other than N, D and the loss (lr, wd, seed, data set, ...) are ignored, except in a
`where` filter. Steps, in order: map names (`columns`), parse numbers (unit suffixes allowed),
derive n_tokens from compute or tpp, filter rows (`where`, pandas query syntax, on the mapped
names), check every row, drop the `drop_highest_loss` highest losses, fit.

Bad rows (an empty, non-numeric, infinite, zero or negative n_params, n_tokens or val_loss):
by default the first one is a DataError naming its row and column; with `drop_invalid=True`
they are all dropped and listed in `rows.invalid`. Rows are numbered as data rows of the
original table (1 = the first row under the header).

fits.json (schema "scaling.fits/1", mode "surface"): the same top-level keys as a study fit
(scaling.fit.studyfit), plus `rows` {table, where, after_where, invalid [{row, column, value}],
n_invalid, highest_loss_dropped, fitted}. The surface entry carries the bootstrap draws and the
constraints, so `scaling predict` needs nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from scaling.errors import DataError
from scaling.fit import text
from scaling.fit.surface import Constraints, LossSurface, fit_loss_surface
from scaling.fit.table import apply_columns, human, parse_number, plain

SCHEMA = "scaling.fits/1"
SURFACE_COLUMNS = ("n_params", "n_tokens", "val_loss")


@dataclass(frozen=True)
class InvalidRow:
    row: int  # 1-based data row of the original table
    column: str
    value: str  # as a person reads it: 2.81e+09, -1, empty, 'abc'

    def to_dict(self) -> dict:
        return {"row": self.row, "column": self.column, "value": self.value}


@dataclass(frozen=True)
class SurfaceFit:
    """The surface fitted to a table, with what was filtered and dropped on the way."""

    source: str
    surface: LossSurface
    n_table: int
    where: str | None
    n_after_where: int
    invalid: tuple[InvalidRow, ...]
    highest_loss_dropped: int
    settings: tuple[tuple[str, Any], ...]

    @property
    def warnings(self) -> tuple[str, ...]:
        out = list(self.surface.warnings)
        if self.invalid:
            plural = "s" if len(self.invalid) > 1 else ""
            out.append(f"dropped {len(self.invalid)} invalid row{plural} (--drop-invalid): {_rows_text(self.invalid)}")
        return tuple(out)

    def to_dict(self) -> dict:
        s = self.surface
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "source": self.source,
            "mode": "surface",
            "n_trials": s.n_points,
            "n_cells": s.n_points,
            "settings": dict(self.settings),
            "n_range": list(s.n_range),
            "d_range": list(s.d_range),
            **s.to_dict()["params"],
            "surface": s.to_dict(),
            "rows": {
                "table": self.n_table,
                "where": self.where,
                "after_where": self.n_after_where,
                "n_invalid": len(self.invalid),
                "invalid": [r.to_dict() for r in self.invalid],
                "highest_loss_dropped": self.highest_loss_dropped,
                "fitted": s.n_points,
            },
            "objectives": {},
            "optima": [],
            "laws": {},
            "tau_laws": {},
            "backtests": {},
            "warnings": list(self.warnings),
        }
        return out

    def summary(self) -> str:
        s = self.surface
        rows = f"{self.n_table} rows"
        if self.where:
            rows += f", {self.n_after_where} where {self.where}"
        if self.invalid:
            rows += f", {len(self.invalid)} invalid dropped"
        if self.highest_loss_dropped:
            rows += f", {self.highest_loss_dropped} highest losses dropped"
        out = [f"{self.source}: {rows} -> {s.n_points} points fitted", "", surface_text(s)]
        if self.warnings:
            out += ["", "Warnings:"] + [f"  - {w}" for w in self.warnings]
        return "\n".join(out)


def fit_surface_table(
    df: pd.DataFrame,
    *,
    columns: Mapping[str, str] | None = None,
    where: str | None = None,
    drop_invalid: bool = False,
    drop_highest_loss: int = 0,
    tie: bool | str | None = None,
    fix: Mapping[str, float] | None = None,
    n_bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
    source: str = "table",
) -> SurfaceFit:
    """Fit L(N, D) to a table's n_params, n_tokens (or compute / tpp) and val_loss columns.

    columns: {design name: table column}; where: a pandas query on the mapped table; tie /
    fix: constraints (scaling.fit.surface.Constraints); level: coverage of every interval.
    """
    if not isinstance(df, pd.DataFrame) or df.empty:
        raise DataError(f"{source}: the table has no rows")
    constraints = Constraints.make(tie=tie, fix=fix)
    table = apply_columns(df, columns, source).copy()
    table["_row"] = np.arange(1, len(table) + 1)
    raw = {c: table[c].copy() for c in ("n_params", "n_tokens", "compute", "tpp", "val_loss") if c in table.columns}
    for col, values in raw.items():
        table[col] = values.map(parse_number).astype(float)
    origin = {c: c for c in SURFACE_COLUMNS}  # design column -> the raw column its values come from
    if "n_tokens" not in table.columns:
        if {"n_params", "compute"} <= set(table.columns):
            table["n_tokens"] = table["compute"] / (6.0 * table["n_params"])
            origin["n_tokens"] = "compute"
        elif {"n_params", "tpp"} <= set(table.columns):
            table["n_tokens"] = table["tpp"] * table["n_params"]
            origin["n_tokens"] = "tpp"
    named = dict(columns or {})  # design name -> the table's own name, for messages
    missing = [c for c in SURFACE_COLUMNS if c not in table.columns]
    if missing:
        hint = "n_tokens (or compute, or tpp)" if missing[0] == "n_tokens" else repr(missing[0])
        raise DataError(f"{source}: missing column {hint}; have {', '.join(map(str, df.columns))} "
                        "(map names with --col NAME=COLUMN)")  # fmt: skip
    if where:
        try:
            table = table.query(where, engine="python")
        except Exception as exc:  # noqa: BLE001 - pandas raises many types; the user needs one line
            raise DataError(f"{source}: --where {where!r}: {type(exc).__name__}: {exc}") from None
        if table.empty:
            raise DataError(f"{source}: --where {where!r} leaves no rows (of {len(df)})")
    n_after_where = len(table)

    invalid: list[InvalidRow] = []
    bad_rows = np.zeros(len(table), dtype=bool)
    for col in SURFACE_COLUMNS:
        values = table[col].to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (np.nan_to_num(values, nan=-1.0) <= 0)
        for i in np.flatnonzero(bad & ~bad_rows):
            row = int(table["_row"].iloc[i])
            src = origin[col]
            label = named.get(src, src) if src == col else f"{named.get(src, src)} (for {col})"
            invalid.append(InvalidRow(row, label, _shown(raw[src].iloc[row - 1])))
        bad_rows |= bad
    invalid.sort(key=lambda r: r.row)
    if invalid and not drop_invalid:
        first = invalid[0]
        more = f" ({len(invalid) - 1} more bad rows)" if len(invalid) > 1 else ""
        raise DataError(
            f"{source}: data row {first.row}, column {first.column!r}: expected a finite number > 0, got "
            f"{first.value}{more}; fix the table or pass --drop-invalid"
        )
    table = table[~bad_rows]
    if drop_highest_loss:
        if drop_highest_loss < 0 or drop_highest_loss >= len(table):
            raise DataError(f"{source}: cannot drop {drop_highest_loss} highest-loss points of {len(table)}")
        table = table.sort_values("val_loss", kind="stable").iloc[:-drop_highest_loss]
    surface = fit_loss_surface(
        table["n_params"], table["n_tokens"], table["val_loss"],
        n_bootstrap=n_bootstrap, ci_level=level, seed=seed, constraints=constraints,
    )  # fmt: skip
    settings = (("n_bootstrap", n_bootstrap), ("seed", seed), ("level", level), ("ci_level", level),
                ("drop_highest_loss", drop_highest_loss), ("drop_invalid", drop_invalid), ("where", where),
                ("constraints", constraints.to_dict()))  # fmt: skip
    return SurfaceFit(
        source=source, surface=surface, n_table=len(df), where=where, n_after_where=n_after_where,
        invalid=tuple(invalid), highest_loss_dropped=int(drop_highest_loss), settings=settings,
    )  # fmt: skip


def surface_text(s: LossSurface) -> str:
    """The surface as a text table: estimates, intervals at the fit's level, diagnostics."""
    head = (f"Loss surface  L(N, D) = E + A N^-alpha + B D^-beta   ({s.n_points} points, Huber delta 1e-3, "
            f"{s.n_starts} starts, {s.n_bootstrap} bootstrap refits)")  # fmt: skip
    level = f"{round(100 * s.ci_level)}% CI"
    fixed = dict(s.constraints.fixed)
    rows = []
    for name, value in s.params().items():
        low, high = s.interval(name) if s.intervals else (math.nan, math.nan)
        se = dict(s.std_errors).get(name, math.nan)
        note = "fixed" if name in fixed else ("= alpha" if name == "beta" and s.constraints.tie_exponents else "")
        rows.append([name, text.fmt(value, 5), text.interval(low, high, 4), text.fmt(se, 3), note])
    lines = [head, text.table(["param", "estimate", level, "bootstrap se", ""], rows)]
    if s.alpha > 0 and s.beta > 0:
        a = s.beta / (s.alpha + s.beta)
        lines.append(f"  compute-optimal allocation (C = 6ND): N* ~ C^{a:.3f}, D* ~ C^{1 - a:.3f}")
    lines.append(f"  constraints: {s.constraints.describe()}")
    lines.append(f"  log residuals: RMS {s.rms_log_residual:.4f}, max |r| {s.max_log_residual:.4f}; lowest loss "
                 f"{s.min_loss:.4g}; N in [{human(s.n_range[0])}, {human(s.n_range[1])}], "
                 f"D in [{human(s.d_range[0])}, {human(s.d_range[1])}]")  # fmt: skip
    return "\n".join(lines)


def _shown(value) -> str:
    """A bad cell as the user wrote it: -1, 0, inf, empty, 'abc'."""
    number = parse_number(value)
    if not math.isnan(number):
        return plain(number)
    blank = value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""
    return "empty" if blank else plain(value)


def _rows_text(rows: tuple[InvalidRow, ...], limit: int = 10) -> str:
    shown = "; ".join(f"row {r.row} {r.column}={r.value}" for r in rows[:limit])
    return shown + (f"; ... {len(rows) - limit} more" if len(rows) > limit else "")
