"""How far float rounding alone moves one trial's val_loss: the same single-model pretraining on
1 and 2 torch threads, and the same model stacked with a second one (batched kernels sum in
another order). The scale against which "equal up to float rounding" is read.

    python benchmarks/rounding_drift.py --size 56k --tpp 20 --decay 0.3
"""

from __future__ import annotations

import argparse

import torch

from scaling.config import RunConfig
from scaling.data.tokens import load_pretrain_data
from scaling.train.single import pretrain
from scaling.train.stacked import pretrain_batched


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="56k")
    p.add_argument("--tpp", type=float, default=20)
    p.add_argument("--decay", type=float, default=0.3)
    args = p.parse_args()
    cfg = RunConfig(size=args.size, lr=6e-3, batch_size=16, context=128, device="cpu", decay_params="matrices",
                    tpp=args.tpp, decay=args.decay, eval_tokens=32768)
    data = load_pretrain_data(None, "byte")
    vocab = data.tokenizer.vocab_size
    losses = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        losses[f"alone, {threads} thread(s)"] = pretrain(cfg, data.train, data.val, vocab).metrics["val_loss"]
    torch.set_num_threads(1)
    stacked = pretrain_batched([cfg, cfg.replace(decay=0.0)], data.train, data.val, vocab)
    losses["stacked with decay 0, 1 thread"] = stacked[0].metrics["val_loss"]
    ref = losses["alone, 1 thread(s)"]
    print(f"{args.size} at {args.tpp:g} TPP, decay {args.decay:g}: val_loss")
    for name, value in losses.items():
        print(f"  {name:32s} {value:.6f}  ({(value - ref) / ref:+.1e} relative)")


if __name__ == "__main__":
    main()
