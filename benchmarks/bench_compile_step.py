"""The stacked training step eager vs under torch.compile (`compile = true`), side by side in
one process (`scaling.train.bench_compile.compare_compiled_step`): interleaved blocks of steps,
medians, the one-time compile cost, TFLOP/s, and on CUDA host syncs per step.

    python benchmarks/bench_compile_step.py --size 56k --k 5 [--device cuda] [--blocks 6 --steps 20]

On CUDA the compiled side is the CUDA-graph ("reduce-overhead") step that studies use.
"""

from __future__ import annotations

import argparse
import json

import torch

from scaling.config import RunConfig
from scaling.train.bench_compile import compare_compiled_step, describe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="56k")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--blocks", type=int, default=6)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = RunConfig(size=args.size, lr=6e-3, batch_size=args.batch_size, context=args.context, device=args.device,
                    decay_params="matrices", tpp=80)
    result = compare_compiled_step(cfg, args.k, torch.device(args.device), args.blocks, args.steps)
    print(json.dumps(result, indent=1) if args.json else describe(result))


if __name__ == "__main__":
    main()
