"""`scaling train`: one model end to end (pretrain, probes, fine-tune and score)."""

from __future__ import annotations

import argparse
import json
import math
import sys

from scaling.commands.common import add_run_arguments, apply_threads, run_config_from_args


def register(sub) -> None:
    p = sub.add_parser("train", help="pretrain one model, probe it, fine-tune it on tasks, print every metric")
    add_run_arguments(p)
    p.add_argument("--tasks", default="arithmetic,code,source",
                   help="comma-separated: arithmetic, code, source, jsonl:<path>; '' for none")
    p.add_argument("--no-probes", action="store_true", help="skip the linear probe")
    p.add_argument("--eval-tokens", type=int, default=65536, dest="eval_tokens")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--curve", action="store_true", help="include the training curve in --json output")
    p.add_argument("--list-sizes", action="store_true", help="print the size ladder and exit")
    p.set_defaults(func=run)


def list_sizes() -> None:
    from scaling.core.shapes import LADDER, non_embedding_params

    print(f"{'size':>6} {'d_model':>7} {'n_layers':>8} {'n_heads':>7} {'d_ff':>5} {'n_params':>10}")
    for name, s in LADDER.items():
        print(f"{name:>6} {s.d_model:>7} {s.n_layers:>8} {s.n_heads:>7} {s.d_ff:>5} {non_embedding_params(s):>10,}")


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def run(args: argparse.Namespace) -> int:
    if args.list_sizes:
        list_sizes()
        return 0
    from scaling.train.preflight import check_inputs
    from scaling.train.pipeline import run_pipeline

    apply_threads(args.threads)
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    cfg = run_config_from_args(args, tasks=tasks, probes=not args.no_probes, eval_tokens=args.eval_tokens)
    check_inputs([cfg])  # corpus, device and every task file now, not after the pretraining
    metrics = run_pipeline(cfg, progress=not args.json and sys.stderr.isatty())
    curve = metrics.pop("curve")
    if args.json:
        if args.curve:
            metrics["curve"] = curve
        print(json.dumps({k: _json_safe(v) for k, v in metrics.items()}))
        return 0
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {text}")
    return 0
