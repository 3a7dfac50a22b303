"""Argument helpers shared by subcommands: RunConfig flags, amounts such as 1.5B, budgets."""

from __future__ import annotations

import argparse
from typing import Any

from scaling.config import DECAY_MODES, DECAY_PARAMS, DEVICES, SCHEDULES, RunConfig
from scaling.core.numbers import parse_amount
from scaling.errors import ConfigError


def amount(text: str) -> float:
    """argparse `type=` for amounts such as 1e9, 300k, 1.5B (scaling.core.numbers.parse_amount)."""
    try:
        return parse_amount(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_budget_arguments(p: argparse.ArgumentParser, compute_help: str) -> None:
    """--params with --tokens or --tpp, or --compute alone (check them with `check_budget`)."""
    p.add_argument("--params", type=amount, default=None, help="non-embedding parameters N (e.g. 1e9, 1B)")
    p.add_argument("--tokens", type=amount, default=None, help="pretraining tokens D (e.g. 20B)")
    p.add_argument("--tpp", type=amount, default=None, help="tokens per parameter (D = TPP * N)")
    p.add_argument("--compute", type=amount, default=None, help=compute_help)


def check_budget(args: argparse.Namespace) -> None:
    if args.compute is not None:
        if any(v is not None for v in (args.params, args.tokens, args.tpp)):
            raise ConfigError("give --compute alone, or --params with --tokens or --tpp")
    elif args.params is None or (args.tokens is None) == (args.tpp is None):
        raise ConfigError("give --params with exactly one of --tokens or --tpp, or --compute alone")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--size", default=None, help="ladder size (see `scaling train --list-sizes`)")
    g.add_argument("--d-model", type=int, dest="d_model")
    g.add_argument("--n-layers", type=int, dest="n_layers")
    g.add_argument("--n-heads", type=int, dest="n_heads")
    g.add_argument("--d-ff", type=int, dest="d_ff")
    g.add_argument("--context", type=int, default=RunConfig.context)
    g = p.add_argument_group("pretraining")
    g.add_argument("--decay", type=float, default=RunConfig.decay, help="AdamW weight decay (lambda)")
    g.add_argument("--lr", type=float, default=RunConfig.lr, help="peak learning rate")
    g.add_argument("--tokens", type=float, default=None, help="token budget D")
    g.add_argument("--tpp", type=float, default=None, help="token budget as tokens per non-embedding parameter")
    g.add_argument("--batch-size", type=int, dest="batch_size", default=RunConfig.batch_size, help="sequences per step")
    g.add_argument("--schedule", choices=SCHEDULES, default=RunConfig.schedule)
    g.add_argument("--warmup-frac", type=float, dest="warmup_frac", default=RunConfig.warmup_frac)
    g.add_argument("--cooldown-frac", type=float, dest="cooldown_frac", default=RunConfig.cooldown_frac)
    g.add_argument("--decay-mode", choices=DECAY_MODES, dest="decay_mode", default=RunConfig.decay_mode)
    g.add_argument("--decay-params", choices=DECAY_PARAMS, dest="decay_params", default=RunConfig.decay_params)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", choices=DEVICES, default="auto")
    g.add_argument("--corpus", default=None, help="folder of .txt/.jsonl/.parquet or a .npy/.bin token array")
    g.add_argument("--tokenizer", default="byte", help="byte | bpe | bpe:<vocab size>")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch")


def run_config_from_args(args: argparse.Namespace, **extra: Any) -> RunConfig:
    from scaling.errors import ConfigError

    if args.tokens is not None and args.tokens != int(args.tokens):
        raise ConfigError(f"--tokens: expected a whole number of tokens, got {args.tokens}")
    tokens = int(args.tokens) if args.tokens is not None else None
    tpp = args.tpp
    size = args.size
    if size is None and args.d_model is None:
        size = RunConfig.size
    fields = dict(
        size=size, d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads, d_ff=args.d_ff,
        context=args.context, decay=args.decay, lr=args.lr, tokens=tokens, tpp=tpp,
        batch_size=args.batch_size, schedule=args.schedule, warmup_frac=args.warmup_frac,
        cooldown_frac=args.cooldown_frac, decay_mode=args.decay_mode, decay_params=args.decay_params,
        seed=args.seed, device=args.device, corpus=args.corpus, tokenizer=args.tokenizer,
    )
    fields.update(extra)
    return RunConfig(**fields)


def apply_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        from scaling.errors import ConfigError

        if threads <= 0:
            raise ConfigError(f"--threads: expected a positive integer, got {threads}")
        torch.set_num_threads(threads)
