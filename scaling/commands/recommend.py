"""`scaling recommend`: the decay to pretrain with for a budget, for base loss and for plasticity.

    scaling recommend --trials results/ladder/trials.csv --params 1B --tokens 20B
    scaling recommend --trials results/ladder/trials.csv --params 1e9 --tpp 140 --json
    scaling recommend --trials results/ladder/trials.csv --compute 1e21
    scaling recommend --trials results/ladder/trials.csv --params 0.5B --tpp 20 --lr 2.5e-4 --batch-tokens 1M
"""

from __future__ import annotations

import argparse
import json
import math
import re

from scaling.commands.fit import add_table_arguments, fit_options
from scaling.errors import ConfigError, FitError

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15}


def parse_amount(text: str) -> float:
    """'1e9', '300k', '1.5B', '20M', '2T' -> float (k, M, B/G, T, P; case-insensitive)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMbBgGtTpP]?)\s*", str(text))
    if not match:
        raise argparse.ArgumentTypeError(f"expected a positive number such as 1e9, 300k or 1.5B, got {text!r}")
    value = float(match.group(1)) * _SUFFIX[match.group(2).lower()]
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def register(sub) -> None:
    p = sub.add_parser(
        "recommend",
        help="recommend a weight decay for a budget (base-loss optimum and plasticity optimum, with 90%% PIs)",
        description="Give --params with --tokens or --tpp, or --compute alone.",
    )
    p.add_argument("--trials", required=True, help="trials table (CSV or Parquet) of a finished study")
    p.add_argument("--params", type=parse_amount, default=None, help="non-embedding parameters N (e.g. 1e9, 1B)")
    p.add_argument("--tokens", type=parse_amount, default=None, help="pretraining tokens D (e.g. 20B)")
    p.add_argument("--tpp", type=parse_amount, default=None, help="tokens per parameter (D = TPP * N)")
    p.add_argument("--compute", type=parse_amount, default=None,
                   help="FLOP budget C = 6ND; N and D from the loss surface's compute-optimal allocation")
    p.add_argument("--lr", default=None, help="the target run's peak learning rate (default: the study's)")
    p.add_argument("--batch-tokens", default=None, dest="batch_tokens",
                   help="the target run's tokens per optimizer step (default: the study's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_table_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scaling.fit import read_table
    from scaling.fit.recommend import recommend

    if args.compute is not None:
        if any(v is not None for v in (args.params, args.tokens, args.tpp)):
            raise ConfigError("give --compute alone, or --params with --tokens or --tpp")
    elif args.params is None or (args.tokens is None) == (args.tpp is None):
        raise ConfigError("give --params with exactly one of --tokens or --tpp, or --compute alone")
    recipe = {}
    for name, flag in (("lr", "--lr"), ("batch_tokens", "--batch-tokens")):
        value = getattr(args, name)
        if value is not None:
            try:
                recipe[name] = parse_amount(value)
            except argparse.ArgumentTypeError as exc:
                raise ConfigError(f"{flag}: {exc}") from None
    options = fit_options(args)
    df = read_table(args.trials)
    rec = recommend(
        df, n_params=args.params, n_tokens=args.tokens, tpp=args.tpp, compute=args.compute, **recipe,
        source=str(args.trials), **options,
    )  # fmt: skip
    if args.json:
        try:
            print(json.dumps(rec.to_dict(), allow_nan=False))
        except ValueError:
            raise FitError("the recommendation has a non-finite number (the budget is too far from the study)") from None
    else:
        print(rec.summary())
    return 0
