"""`scaling fit TRIALS.csv`: loss surface, per-cell decay optima, decay laws and backtests.

Prints the tables (or, with --json, the StudyFit as JSON) and writes fits.json next to the table.
Foreign tables map their column names onto the toolkit's with --col, e.g. Epoch AI's Chinchilla
points:

    scaling fit chinchilla.csv --col n_params="Model Size" --col compute="Training FLOP" \\
        --col val_loss=loss --drop-highest-loss 5 --json
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
    p.set_defaults(func=run)


def add_table_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared with `scaling recommend`: column mapping, objectives, bootstrap, seed."""
    p.add_argument("--col", action="append", default=[], metavar="NAME=COLUMN",
                   help="use table column COLUMN as NAME (n_params, n_tokens, compute, tpp, decay, val_loss, ...); "
                        "repeatable")  # fmt: skip
    p.add_argument("--objective", action="append", default=[], metavar="COLUMN:min|max",
                   help="fit this objective (default: val_loss:min and ft_score:max, those present); repeatable")
    p.add_argument("--bootstrap", type=int, default=200, metavar="K",
                   help="bootstrap resamples for every interval (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    p.add_argument("--level", type=float, default=0.9, help="prediction-interval coverage (default 0.9)")
    p.add_argument("--delta", action="append", default=[], metavar="OBJECTIVE=DELTA",
                   help="tolerance of the decay_tol estimand in the objective's units (default 0.01); repeatable")


def parse_columns(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, column = pair.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise ConfigError(f"--col: expected NAME=COLUMN (e.g. n_params='Model Size'), got {pair!r}")
        out[name.strip()] = column.strip()
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
    if args.bootstrap < 0:
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
    return {
        "deltas": deltas or None,
        "columns": parse_columns(args.col) or None,
        "objectives": parse_objectives(args.objective),
        "n_bootstrap": args.bootstrap,
        "seed": args.seed,
        "level": args.level,
    }


def run(args: argparse.Namespace) -> int:
    from scaling.fit import fit_study, read_table

    options = fit_options(args)
    if args.drop_highest_loss < 0:
        raise ConfigError(f"--drop-highest-loss: expected a count >= 0, got {args.drop_highest_loss}")
    path = Path(args.trials)
    df = read_table(path)
    fit = fit_study(df, source=str(path), drop_highest_loss=args.drop_highest_loss, **options)
    payload = fit.to_dict()
    written = None
    if not args.no_write:
        written = Path(args.out) if args.out else path.with_name("fits.json")
        try:
            written.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
        except OSError as exc:
            raise DataError(f"{written}: cannot write fits.json ({exc.strerror}); use --out or --no-write") from None
    if args.json:
        print(json.dumps(payload, allow_nan=False))
    else:
        print(fit.summary())
        if written is not None:
            print(f"\nwrote {written}")
    return 0
