"""Argument helpers shared by subcommands that build a RunConfig."""

from __future__ import annotations

import argparse
from typing import Any

from scaling.config import DECAY_MODES, DECAY_PARAMS, DEVICES, SCHEDULES, RunConfig


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
