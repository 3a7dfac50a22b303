"""`scaling bench`: training throughput of one size, beside a plain PyTorch reference loop."""

from __future__ import annotations

import argparse
import json

from scaling.commands.common import apply_threads


def register(sub) -> None:
    p = sub.add_parser("bench", help="training tokens/s and FLOP/s for one size, against a plain PyTorch loop")
    p.add_argument("--size", default=None, help="ladder size (default: d_model 128, 4 layers)")
    p.add_argument("--d-model", type=int, dest="d_model")
    p.add_argument("--n-layers", type=int, dest="n_layers")
    p.add_argument("--n-heads", type=int, dest="n_heads")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--batch-size", type=int, dest="batch_size", default=16)
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per timed run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per path; medians are reported")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scaling.bench import run_bench
    from scaling.config import RunConfig
    from scaling.errors import ConfigError

    apply_threads(args.threads)
    if args.steps <= 0 or args.repeats <= 0:
        raise ConfigError("--steps/--repeats: expected positive integers")
    size = args.size if (args.size or args.d_model) else "804k"
    cfg = RunConfig(size=size, d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
                    context=args.context, batch_size=args.batch_size, tpp=20.0, device=args.device)
    result = run_bench(cfg, steps=args.steps, repeats=args.repeats).to_dict()
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"model: {result['n_params']:,} non-embedding params, context {cfg.context}, "
          f"batch {cfg.batch_size} x {cfg.context} tokens, {result['threads']} threads")
    print(f"{'path':<22}{'tokens/s':>12}{'GFLOP/s':>10}")
    print(f"{'reference loop':<22}{result['reference_tokens_per_s']:>12,.0f}{result['reference_flops_per_s'] / 1e9:>10.2f}")
    print(f"{'scaling trainer':<22}{result['trainer_tokens_per_s']:>12,.0f}{result['trainer_flops_per_s'] / 1e9:>10.2f}")
    print(f"ratio trainer / reference (median of {args.repeats}): {result['ratio_vs_reference']:.3f}")
    return 0
