"""`scaling fit TRIALS.csv`: loss surface, per-cell decay optima, decay laws and backtests.

Prints the tables (or, with --json, the StudyFit as JSON) and writes fits.json next to the table.
Foreign tables map their column names onto the toolkit's with --col, e.g. Epoch AI's Chinchilla
points:

    scaling fit chinchilla.csv --col n_params="Model Size" --col compute="Training FLOP" \\
        --col val_loss=loss --drop-highest-loss 5 --json

A table without a decay column (or with --surface-only) gets the loss surface alone, with
constraints (--tie, --fix), a row filter (--where) and a bad-row policy (--drop-invalid); see
docs/surface.md.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from scaling.errors import ConfigError, DataError


def register(sub) -> None:
    p = sub.add_parser(
        "fit",
        help="fit the loss surface, per-cell decay optima, decay laws and backtests of a trials table",
        description="Fit everything design.md section 4 describes; writes fits.json next to the table.",
    )
    p.add_argument("trials", help="trials table (CSV or Parquet), one row per trial")
    add_table_arguments(p)
    p.add_argument("--json", action="store_true", help="print the fits as one JSON object")
    p.add_argument("--out", default=None, help="where to write fits.json (default: next to the table)")
    p.add_argument("--no-write", action="store_true", dest="no_write", help="do not write fits.json")
    p.add_argument("--drop-highest-loss", type=int, default=0, dest="drop_highest_loss", metavar="K",
                   help="surface-only tables: leave out the K highest losses (Epoch AI drop 5 of Chinchilla's)")
    g = p.add_argument_group("loss surface only (docs/surface.md)")
    g.add_argument("--surface-only", action="store_true", dest="surface_only",
                   help="fit only L(N, D), ignoring decay and other study columns (automatic without a decay column)")
    g.add_argument("--where", default=None, metavar="EXPR", help="fit the rows matching a pandas query, e.g. "
                   "\"n_params < 1e9 and dataset == 'c4'\" (mapped names)")
    g.add_argument("--tie", action="append", default=[], metavar="alpha=beta", help="fit one exponent for N and D")
    g.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                   help="hold E, A, B, alpha or beta at VALUE; repeatable")
    g.add_argument("--drop-invalid", action="store_true", dest="drop_invalid",
                   help="drop rows with an empty, non-numeric, infinite, zero or negative N, D or loss, and list "
                        "them (default: such a row is an error)")  # fmt: skip
    p.set_defaults(func=run)


def add_table_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared with `scaling recommend`: column mapping, objectives, bootstrap, seed."""
    p.add_argument("--col", action="append", default=[], metavar="NAME=COLUMN",
                   help="use table column COLUMN as NAME (n_params, n_tokens, compute, tpp, decay, val_loss, ...); "
                        "repeatable")  # fmt: skip
    p.add_argument("--objective", action="append", default=[], metavar="COLUMN:min|max",
                   help="fit this objective (default: val_loss:min and the table's plasticity objective, ft_nll:min "
                        "or ft_score:max, those present); repeatable")
    p.add_argument("--bootstrap", type=int, default=None, metavar="K",
                   help="bootstrap resamples for every interval (default 200; a surface-only fit: 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    p.add_argument("--level", type=float, default=0.9,
                   help="coverage of prediction and per-cell intervals, and of every interval of a surface-only fit "
                        "(default 0.9)")  # fmt: skip
    p.add_argument("--delta", action="append", default=[], metavar="OBJECTIVE=DELTA",
                   help="tolerance of the decay_tol estimand in the objective's units (default 0.01); repeatable")


def parse_columns(pairs: list[str], objectives: dict[str, str] | None = None) -> dict[str, str]:
    from scaling.fit.table import check_column_targets

    out = {}
    for pair in pairs:
        name, sep, column = pair.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise ConfigError(f"--col: expected NAME=COLUMN (e.g. n_params='Model Size'), got {pair!r}")
        out[name.strip()] = column.strip()
    check_column_targets(out, also=tuple(objectives or ()))
    return out


def parse_fix(pairs: list[str]) -> dict[str, float]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(f"--fix: expected NAME=VALUE (e.g. E=1.69), got {pair!r}")
    return out


def parse_objectives(pairs: list[str]) -> dict[str, str] | None:
    from scaling.fit.table import direction_of

    if not pairs:
        return None
    out = {}
    for pair in pairs:
        column, sep, direction = pair.partition(":")
        column = column.strip()
        direction = direction.strip() if sep else (direction_of(column) or "")
        if direction not in ("min", "max"):
            raise ConfigError(f"--objective: expected COLUMN:min or COLUMN:max, got {pair!r}")
        out[column] = direction
    return out


def fit_options(args: argparse.Namespace) -> dict:
    if args.bootstrap is not None and args.bootstrap < 0:
        raise ConfigError(f"--bootstrap: expected a count >= 0, got {args.bootstrap}")
    if not 0 < args.level < 1:
        raise ConfigError(f"--level: expected a coverage between 0 and 1, got {args.level}")
    deltas = {}
    for pair in args.delta:
        name, sep, value = pair.partition("=")
        try:
            deltas[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--delta: expected OBJECTIVE=DELTA (e.g. val_loss=0.01), got {pair!r}") from None
        if not sep or not (math.isfinite(deltas[name.strip()]) and deltas[name.strip()] > 0):
            raise ConfigError(f"--delta: expected OBJECTIVE=DELTA with DELTA > 0, got {pair!r}")
    objectives = parse_objectives(args.objective)
    return {
        "deltas": deltas or None,
        "columns": parse_columns(args.col, objectives) or None,
        "objectives": objectives,
        "n_bootstrap": 200 if args.bootstrap is None else args.bootstrap,
        "seed": args.seed,
        "level": args.level,
    }


def run(args: argparse.Namespace) -> int:
    from scaling.fit import fit_study, read_table
    from scaling.io import write_atomic

    options = fit_options(args)
    if args.drop_highest_loss < 0:
        raise ConfigError(f"--drop-highest-loss: expected a count >= 0, got {args.drop_highest_loss}")
    path = Path(args.trials)
    df = read_table(path)
    if args.surface_only or not _has_decay(df, options["columns"]):
        fit = _fit_surface(args, df, str(path), options)
    else:
        if args.where or args.tie or args.fix or args.drop_invalid:
            raise ConfigError(
                "--where, --tie, --fix and --drop-invalid apply to a surface-only fit; add --surface-only"
            )
        fit = fit_study(df, source=str(path), drop_highest_loss=args.drop_highest_loss, **options)
    payload = fit.to_dict()
    written = None
    if not args.no_write:
        written = Path(args.out) if args.out else path.with_name("fits.json")
        try:
            write_atomic(written, json.dumps(payload, indent=2, allow_nan=False) + "\n")
        except DataError as exc:
            raise DataError(f"{exc}; use --out or --no-write") from None
    if args.json:
        print(json.dumps(payload, allow_nan=False))
    else:
        print(fit.summary())
        if written is not None:
            print(f"\nwrote {written}")
    return 0


def _has_decay(df, columns: dict[str, str] | None) -> bool:
    """A decay column mapped with --col, or one named decay that no mapping renames away."""
    columns = columns or {}
    return "decay" in columns or ("decay" in df.columns and "decay" not in columns.values())


def _fit_surface(args: argparse.Namespace, df, source: str, options: dict):
    from scaling.fit.surface import DEFAULT_BOOTSTRAP
    from scaling.fit.surfacefit import fit_surface_table

    if len(args.tie) > 1:
        raise ConfigError(f"--tie: give it once (alpha=beta), got {len(args.tie)}")
    return fit_surface_table(
        df, columns=options["columns"], where=args.where, drop_invalid=args.drop_invalid,
        drop_highest_loss=args.drop_highest_loss, tie=args.tie[0] if args.tie else None, fix=parse_fix(args.fix),
        n_bootstrap=DEFAULT_BOOTSTRAP if args.bootstrap is None else args.bootstrap, seed=args.seed,
        level=args.level, source=source,
    )  # fmt: skip
