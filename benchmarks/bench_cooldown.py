"""Benchmark: token budgets from one WSD run (cooldown branches) against separate full runs.

    .venv/bin/python benchmarks/bench_cooldown.py [--size 13k] [--tpp 5,10,20,40] [--decays 0,0.1,1]
        [--context 128] [--batch-size 32] [--warmup-frac 0.1] [--threads 1] [--json]

For each decay (trained together by the batched trainer) one shared warmup-stable phase gives a
cooldown branch at every budget (`scaling.train.cooldown`); separate full WSD runs at the same budgets
are the reference. Prints val_loss of both, their difference, whether the branch's schedule is
exact (its own warmup equals the shared one), and the optimizer steps and wall time each way.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from scaling.config import RunConfig, model_shape
from scaling.core.shapes import non_embedding_params
from scaling.data.tokens import load_pretrain_data
from scaling.train.cooldown import compare_with_full_runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="13k")
    p.add_argument("--tpp", default="5,10,20,40", help="budgets as tokens per non-embedding parameter")
    p.add_argument("--decays", default="0,0.1,1")
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup-frac", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    data = load_pretrain_data(None, "byte")
    base = RunConfig(size=args.size, context=args.context, batch_size=args.batch_size, schedule="wsd",
                     warmup_frac=args.warmup_frac, seed=args.seed, tasks=(), device="cpu")
    n_params = non_embedding_params(model_shape(base))
    budgets = [round(float(t) * n_params) for t in args.tpp.split(",")]
    configs = [base.replace(decay=float(d)) for d in args.decays.split(",")]
    start = time.perf_counter()
    rows = compare_with_full_runs(configs, budgets, data.train, data.val, data.tokenizer.vocab_size)
    if args.json:
        print(json.dumps({"config": base.to_dict(), "rows": rows, "wall_s": time.perf_counter() - start}))
        return
    print(f"{args.size}: {n_params:,} non-embedding params, context {args.context}, batch {args.batch_size}, "
          f"WSD warmup_frac {args.warmup_frac}, cooldown_frac {base.cooldown_frac}, {args.threads} thread(s)")
    print(f"{'decay':>7}{'tpp':>6}{'steps':>7}{'branch@':>9}{'warmup own/shared':>19}{'exact':>7}"
          f"{'val branch':>12}{'val full':>10}{'diff':>10}")
    for r in rows:
        print(f"{r['decay']:>7g}{r['tokens'] / n_params:>6.1f}{r['steps']:>7}{r['branch_step']:>9}"
              f"{r['own_warmup_steps']:>12}/{r['shared_warmup_steps']:<6}{str(r['schedule_exact']):>7}"
              f"{r['val_loss_branch']:>12.4f}{r['val_loss_full']:>10.4f}{r['val_loss_diff']:>+10.4f}")
    r = rows[0]
    print(f"optimizer steps (per model): branched {r['steps_branched']}, full runs {r['steps_full']} "
          f"({r['steps_full'] / r['steps_branched']:.2f}x)")
    print(f"training time (all {len(configs)} decays, evaluations excluded): branched {r['train_s_branched']:.1f} s, "
          f"full {r['train_s_full']:.1f} s; wall with evaluations: branched {r['wall_s_branched']:.1f} s, "
          f"full {r['wall_s_full']:.1f} s")


if __name__ == "__main__":
    main()
