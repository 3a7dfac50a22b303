"""`scaling bench`: training throughput of one size, beside a plain PyTorch reference loop, and of
the batched trainer (K models stacked) against K sequential runs."""

from __future__ import annotations

import argparse
import json

from scaling.commands.common import apply_threads


def register(sub) -> None:
    p = sub.add_parser("bench", help="training tokens/s and FLOP/s for one size, against a plain PyTorch loop")
    p.add_argument("--spec", default=None,
                   help="take size, context, batch size, lr and device from a study spec "
                        "(its first size unless --size names another)")
    p.add_argument("--size", default=None, help="ladder size (default: 804k, or the spec's first size)")
    p.add_argument("--d-model", type=int, dest="d_model")
    p.add_argument("--n-layers", type=int, dest="n_layers")
    p.add_argument("--n-heads", type=int, dest="n_heads")
    p.add_argument("--context", type=int, default=None, help="default 256 (or the spec's)")
    p.add_argument("--batch-size", type=int, dest="batch_size", default=None, help="default 16 (or the spec's)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per timed run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per path; medians are reported")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or mps (or the spec's)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--k", default="1,4,8,16",
                   help="comma-separated model counts K for the batched trainer ('' to skip it)")
    p.add_argument("--compile", action="store_true", help="torch.compile the batched trainer's forward")
    p.add_argument("--unit", action="store_true",
                   help="time K whole trials (pretrain, probes, fine-tune, score) stacked against one after "
                        "another, at the config's token budget (--steps is then unused)")
    p.add_argument("--sequential-trials", type=int, default=None, dest="sequential_trials",
                   help="--unit: run at most this many trials one after another per repeat and scale "
                        "their mean time per trial to larger K (default: all K)")
    p.add_argument("--tpp", type=float, default=None, help="tokens per parameter of a --unit trial (default 20)")
    p.add_argument("--tasks", default=None, help="comma-separated fine-tuning tasks of a --unit trial "
                                                 "(default the spec's, or the toolkit's)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scaling.train.bench import run_bench
    from scaling.config import RunConfig
    from scaling.errors import ConfigError

    apply_threads(args.threads)
    if args.steps <= 0 or args.repeats <= 0:
        raise ConfigError("--steps/--repeats: expected positive integers")
    if args.spec:
        cfg = _spec_config(args)
    else:
        size = args.size if (args.size or args.d_model) else "804k"
        cfg = RunConfig(size=size, d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
                        context=args.context or 256, batch_size=args.batch_size or 16, tpp=20.0,
                        device=args.device or "auto")
    ks = _parse_ks(args.k)
    if args.tpp is not None:
        if args.tpp <= 0:
            raise ConfigError(f"--tpp: expected a positive number, got {args.tpp}")
        cfg = cfg.replace(tpp=args.tpp, tokens=None)
    if args.tasks is not None:
        tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
        cfg = cfg.replace(tasks=tasks)
    if args.unit:
        return _run_unit(cfg, ks, args)
    result = run_bench(cfg, steps=args.steps, repeats=args.repeats, ks=ks, compile=args.compile).to_dict()
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"model: {result['n_params']:,} non-embedding params, context {cfg.context}, "
          f"batch {cfg.batch_size} x {cfg.context} tokens, {result['threads']} threads")
    print(f"{'path':<22}{'tokens/s':>12}{'GFLOP/s':>10}")
    print(f"{'reference loop':<22}{result['reference_tokens_per_s']:>12,.0f}{result['reference_flops_per_s'] / 1e9:>10.2f}")
    print(f"{'scaling trainer':<22}{result['trainer_tokens_per_s']:>12,.0f}{result['trainer_flops_per_s'] / 1e9:>10.2f}")
    print(f"ratio trainer / reference (median of {args.repeats} paired repeats): {result['ratio_vs_reference']:.3f}")
    if ks:
        print(f"batched trainer{' (torch.compile)' if args.compile else ''}: K models stacked, "
              f"speedup = total tokens/s over K sequential trainer runs (median of {args.repeats} paired repeats)")
        print(f"{'K':>4}{'tokens/s/model':>16}{'total tokens/s':>16}{'GFLOP/s':>10}{'speedup':>9}{'(CPU time)':>12}")
        for k in ks:
            row = result["batched"][str(k)]
            print(f"{k:>4}{row['tokens_per_s_per_model']:>16,.0f}{row['total_tokens_per_s']:>16,.0f}"
                  f"{row['flops_per_s'] / 1e9:>10.2f}{result['speedup_batched'][str(k)]:>9.2f}"
                  f"{result['cpu_time']['speedup_batched'][str(k)]:>12.2f}")
    print(f"per CPU-second of this process (fairer on a shared machine): trainer / reference "
          f"{result['cpu_time']['ratio_vs_reference']:.3f}")
    return 0


def _run_unit(cfg, ks: tuple[int, ...], args: argparse.Namespace) -> int:
    from scaling.errors import ConfigError
    from scaling.train.bench_unit import run_unit_bench

    if not ks:
        raise ConfigError("--k: expected at least one model count K for --unit")
    if args.sequential_trials is not None and args.sequential_trials < 1:
        raise ConfigError(f"--sequential-trials: expected a positive integer, got {args.sequential_trials}")
    result = run_unit_bench(cfg, ks, repeats=args.repeats, sequential_trials=args.sequential_trials).to_dict()
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"whole trials of {cfg.size} at {cfg.tpp:g} TPP, tasks {','.join(cfg.tasks)}, {result['threads']} threads; "
          f"speedup = K trials one after another over one stacked unit (median of {args.repeats} paired repeats)")
    print(f"{'K':>4}{'trials/h stacked':>18}{'trials/h sequential':>21}{'speedup':>9}   phase shares (stacked)")
    for k in ks:
        rate, shares = result["unit_trials_per_hour"][str(k)], result["unit_phase_share"][str(k)]["stacked"]
        print(f"{k:>4}{rate['stacked']:>18,.0f}{rate['sequential']:>21,.0f}{result['unit_speedup'][str(k)]:>9.2f}   "
              + ", ".join(f"{p} {100 * v:.0f}%" for p, v in shares.items()))
    shares = result["unit_phase_share"]["sequential"]
    print("phase shares, one trial at a time: " + ", ".join(f"{p} {100 * v:.0f}%" for p, v in shares.items()))
    return 0


def _spec_config(args: argparse.Namespace):
    """The RunConfig a study spec gives its first size (or --size), with explicit flags on top."""
    from scaling.errors import ConfigError
    from scaling.study import load_spec

    if args.d_model or args.n_layers or args.n_heads:
        raise ConfigError("--spec: the shape comes from the spec's size; expected no --d-model/--n-layers/--n-heads")
    spec = load_spec(args.spec)
    names = [s.name for s in spec.sizes]
    size = args.size or names[0]
    cells = [c for c in spec.cells() if c.size.name == size]
    if not cells:
        raise ConfigError(f"--size: expected one of the spec's sizes {', '.join(names)}, got {size!r}")
    cfg = spec.run_config(cells[0], 0.1, spec.seeds[0])
    changes = {"tokens": None, "tpp": 20.0}
    for key in ("context", "batch_size", "device"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    return cfg.replace(**changes)


def _parse_ks(text: str) -> tuple[int, ...]:
    from scaling.errors import ConfigError

    ks = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) <= 0:
            raise ConfigError(f"--k: expected comma-separated positive integers, got {text!r}")
        ks.append(int(part))
    return tuple(dict.fromkeys(ks))
