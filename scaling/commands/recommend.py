"""`scaling recommend`: the decay to pretrain with for a budget, for base loss and for plasticity.

    scaling recommend --trials results/ladder/trials.csv --params 1B --tokens 20B
    scaling recommend --trials results/ladder/trials.csv --params 1e9 --tpp 140 --json
    scaling recommend --trials results/ladder/trials.csv --compute 1e21
    scaling recommend --trials results/ladder/trials.csv --params 0.5B --tpp 20 --lr 2.5e-4 --batch-tokens 1M
"""

from __future__ import annotations

import argparse
import json

from scaling.commands.common import add_budget_arguments, check_budget
from scaling.commands.fit import add_table_arguments, fit_options
from scaling.core.numbers import parse_amount
from scaling.errors import ConfigError, FitError


def register(sub) -> None:
    p = sub.add_parser(
        "recommend",
        help="recommend a weight decay for a budget (base-loss optimum and plasticity optimum, with 90%% PIs)",
        description="Give --params with --tokens or --tpp, or --compute alone.",
    )
    p.add_argument("--trials", required=True, help="trials table (CSV or Parquet) of a finished study")
    add_budget_arguments(p, "FLOP budget C = 6ND; N and D from the loss surface's compute-optimal allocation")
    p.add_argument("--lr", default=None, help="the target run's peak learning rate (default: the study's)")
    p.add_argument("--batch-tokens", default=None, dest="batch_tokens",
                   help="the target run's tokens per optimizer step (default: the study's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_table_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scaling.fit import read_table
    from scaling.fit.recommend import recommend

    check_budget(args)
    recipe = {}
    for name, flag in (("lr", "--lr"), ("batch_tokens", "--batch-tokens")):
        value = getattr(args, name)
        if value is not None:
            try:
                recipe[name] = parse_amount(value)
            except ValueError as exc:
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
