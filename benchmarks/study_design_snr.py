"""Paired-seed measurement for the study design (docs/study-design.md): one cell, a tau grid
with decay 0, several seeds, trained as one stacked model; prints one JSON row per trial.

    python benchmarks/study_design_snr.py --size 13k --tpp 20 --seeds 0 1 2 \
        --taus inf 4 1 0.5 0.25 --decay-params matrices > rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from scaling.config import RunConfig, model_shape, token_budget
from scaling.core.budget import decay_for_tau
from scaling.core.shapes import non_embedding_params

KEEP = ("size", "tpp", "steps", "decay", "decay_params", "seed", "tau", "val_loss", "ft_score", "ft_gain", "ft_nll",
        "ft_nll_gain", "qk_rank", "wall_s", "train_s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="13k")
    ap.add_argument("--tpp", type=float, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--taus", type=float, nargs="+", default=[math.inf, 4, 1, 0.5, 0.25])
    ap.add_argument("--decay-params", default="matrices")
    ap.add_argument("--tasks", nargs="+", default=["arithmetic", "source"])
    ap.add_argument("--lr", type=float, default=6e-3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--eval-tokens", type=int, default=32768)
    args = ap.parse_args()
    from scaling.train.pipeline import run_pipeline_batched

    base = RunConfig(size=args.size, tpp=args.tpp, lr=args.lr, batch_size=args.batch_size, decay=0.0,
                     decay_params=args.decay_params, tasks=tuple(args.tasks), eval_tokens=args.eval_tokens,
                     device="cpu")
    n_tokens = token_budget(base, non_embedding_params(model_shape(base)))[1]
    configs = [base.replace(decay=decay_for_tau(t, base.batch_tokens, base.lr, n_tokens), seed=s)
               for s in args.seeds for t in args.taus]
    start, cpu = time.perf_counter(), time.process_time()
    rows = run_pipeline_batched(configs)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    for row in rows:
        out = {k: row.get(k) for k in KEEP}
        out.update({k: v for k, v in row.items() if k.startswith("ft_") and k.endswith(("_after", "_before"))})
        out["stack_wall_s"] = wall
        out["stack_cpu_s"] = cpu
        out["stack_models"] = len(configs)
        print(json.dumps(out), flush=True)
    print(f"{len(configs)} models in {wall:.0f} s wall, {cpu:.0f} s CPU", file=sys.stderr)


if __name__ == "__main__":
    main()
