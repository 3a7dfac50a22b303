"""Where a stacked CPU step's time goes, kernel by kernel: the batched products of a model shape
(forward and both backward orientations) against a large square product (what this core's BLAS
reaches at best), and causal attention's fused CPU kernel against plain products + softmax.
Single thread, medians of repeats. Evidence for docs/performance.md's CPU ceiling.

    python benchmarks/cpu_kernels.py --size 56k --k 5 --tokens 2048
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from scaling.config import RunConfig, model_shape


def timed(fn, repeats: int = 15) -> float:
    for _ in range(3):
        fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="56k")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--tokens", type=int, default=2048, help="tokens per model per step (batch x context)")
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--vocab", type=int, default=258)
    args = p.parse_args()
    torch.set_num_threads(1)
    shape = model_shape(RunConfig(size=args.size))
    d, ff, k, n = shape.d_model, shape.d_ff, args.k, args.tokens
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    square = 2 * 1024 ** 3 / timed(lambda: a @ b)
    print(f"square 1024 product: {square / 1e9:.1f} GFLOP/s (this core's practical peak)")
    print(f"{args.size} (d {d}, ff {ff}), K = {k}, {n} tokens per model:")
    for name, (i, o) in {"wqkv": (d, 3 * d), "wo": (d, d), "gate_up": (d, 2 * ff), "down": (ff, d),
                         "head": (d, args.vocab)}.items():
        x, w, dy = torch.randn(k, n, i), torch.randn(k, i, o), torch.randn(k, n, o)
        flops = 2 * k * n * i * o
        rates = [flops / timed(f) for f in (lambda: torch.bmm(x, w), lambda: torch.bmm(x.transpose(1, 2), dy),
                                            lambda: torch.bmm(dy, w.transpose(1, 2)))]
        print(f"  {name:8s} {i:>4}x{o:<4} x@W {rates[0] / 1e9:5.1f}, x^T@dy {rates[1] / 1e9:5.1f}, "
              f"dy@W^T {rates[2] / 1e9:5.1f} GFLOP/s ({100 * statistics.mean(rates) / square:.0f}% of the square product)")
    heads, hd, t = shape.n_heads, d // shape.n_heads, args.context
    q, kk, v = (torch.randn(k * n // t, heads, t, hd, requires_grad=True) for _ in range(3))
    g = torch.randn(k * n // t, heads, t, hd)
    mask = torch.ones(t, t, dtype=torch.bool).tril()

    def fused():
        F.scaled_dot_product_attention(q, kk, v, is_causal=True).backward(g)

    def plain():
        s = (q @ kk.transpose(-1, -2) * hd ** -0.5).masked_fill(~mask, float("-inf"))
        (s.softmax(-1) @ v).backward(g)

    f, m = timed(fused, 7), timed(plain, 7)
    print(f"  attention fwd+bwd ({k * n // t} x {heads} heads x {t} x {hd}): fused {1e3 * f:.1f} ms, "
          f"plain products + softmax {1e3 * m:.1f} ms")


if __name__ == "__main__":
    main()
