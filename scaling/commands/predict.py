"""`scaling predict`: val_loss at (N, D), or the compute-optimal N*, D*, from a fitted surface.

    scaling predict --fit fits.json --params 7e10 --tokens 1.4T
    scaling predict --fit fits.json --compute 5.76e23 --json
"""

from __future__ import annotations

import argparse
import json

from scaling.commands.common import add_budget_arguments, check_budget
from scaling.errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="predict val_loss at (N, D), or N*, D* for a FLOP budget, from the loss surface in fits.json",
        description="Give --params with --tokens or --tpp, or --compute alone. Intervals come from the surface's "
                    "bootstrap refits stored in fits.json.",
    )  # fmt: skip
    p.add_argument("--fit", required=True, help="fits.json written by `scaling fit`")
    add_budget_arguments(p, "FLOP budget C = 6ND: the compute-optimal N*, D*")
    p.add_argument("--level", type=float, default=None, help="interval coverage (default: the fit's level)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scaling.fit.predict import load_surface, predict_allocation, predict_loss
    from scaling.fit.table import human

    check_budget(args)
    if args.level is not None and not 0 < args.level < 1:
        raise ConfigError(f"--level: expected a coverage between 0 and 1, got {args.level}")
    surface = load_surface(args.fit)
    if args.compute is not None:
        pred = predict_allocation(surface, args.compute, level=args.level)
        pct = round(100 * pred.level)
        lines = [
            f"compute-optimal at C = {pred.compute:.3g} FLOP (C = 6ND), {pct}% intervals from "
            f"{surface.n_bootstrap} bootstrap refits:",
            f"  N* = {human(pred.n_params)}  [{human(pred.n_params_ci[0])}, {human(pred.n_params_ci[1])}]",
            f"  D* = {human(pred.n_tokens)}  [{human(pred.n_tokens_ci[0])}, {human(pred.n_tokens_ci[1])}]"
            f"  ({pred.n_tokens / pred.n_params:.3g} tokens per parameter)",
            f"  a = beta / (alpha + beta) = {pred.exponent:.4f}  [{pred.exponent_ci[0]:.4f}, {pred.exponent_ci[1]:.4f}]"
            "  (N* ~ C^a, D* ~ C^(1 - a))",
            f"  val_loss there = {pred.loss:.4f}  [{pred.loss_ci[0]:.4f}, {pred.loss_ci[1]:.4f}]",
        ]  # fmt: skip
    else:
        tokens = args.tokens if args.tokens is not None else args.tpp * args.params
        pred = predict_loss(surface, args.params, tokens, level=args.level)
        pct = round(100 * pred.level)
        lines = [
            f"val_loss at N = {human(pred.n_params)}, D = {human(pred.n_tokens)} "
            f"({pred.n_tokens / pred.n_params:.3g} tokens per parameter): {pred.loss:.4f}",
            f"  {pct}% interval of the surface: [{pred.ci[0]:.4f}, {pred.ci[1]:.4f}]",
            f"  {pct}% interval for a new run:   [{pred.pi[0]:.4f}, {pred.pi[1]:.4f}]",
        ]
    if pred.extrapolation:
        lines.append(f"  extrapolation: {pred.extrapolation}")
    if surface.warnings:
        lines += ["  fit warnings:"] + [f"    - {w}" for w in surface.warnings]
    if args.json:
        print(json.dumps({**pred.to_dict(), "fit_warnings": list(surface.warnings)}, allow_nan=False))
    else:
        print("\n".join(lines))
    return 0
