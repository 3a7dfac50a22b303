"""Training-throughput benchmark: the toolkit's trainer against a plain PyTorch loop of the
same model, and the batched trainer (K models stacked, `scaling.train.stacked`) against K sequential
runs of the toolkit's trainer; measured in the same process, interleaved, median of repeats
(machines here are noisy, so only ratios measured side by side mean anything)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from scaling.config import RunConfig
from scaling.config import model_shape
from scaling.core.shapes import non_embedding_params, train_flops_per_token
from scaling.train.loop import autocast_dtype, resolve_device
from scaling.train.model import GPT
from scaling.train.single import pretrain


def reference_loop(cfg: RunConfig, train_tokens: np.ndarray, vocab_size: int, steps: int,
                   device: torch.device) -> float:
    """A straightforward GPT training loop (random windows, AdamW, clip, step); tokens/s. In the
    trainer's precision (bf16 autocast on CUDA), so the two differ only in how they train."""
    dtype = autocast_dtype(device)
    torch.manual_seed(cfg.seed)
    model = GPT(model_shape(cfg), vocab_size, cfg.context).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.decay)
    data = torch.from_numpy(np.asarray(train_tokens[: 4_000_000], dtype=np.int64))
    gen = torch.Generator().manual_seed(cfg.seed)
    start = time.perf_counter()
    for _ in range(steps):
        ix = torch.randint(len(data) - cfg.context - 1, (cfg.batch_size,), generator=gen)
        batch = torch.stack([data[i: i + cfg.context + 1] for i in ix.tolist()]).to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            _, loss = model(batch[:, :-1], batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    loss.item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * cfg.batch_tokens / (time.perf_counter() - start)


def trainer_throughput(cfg: RunConfig, train_tokens: np.ndarray, val_tokens: np.ndarray, vocab_size: int,
                       steps: int, device: torch.device) -> float:
    """tokens/s of `scaling.train.single.pretrain` itself (evaluations excluded, as it reports)."""
    run = cfg.replace(tokens=steps * cfg.batch_tokens, tpp=None, eval_every=10**9,
                      eval_tokens=cfg.batch_tokens)
    return pretrain(run, train_tokens, val_tokens, vocab_size, device=device).metrics["tokens_per_s"]


def batched_throughput(cfg: RunConfig, train_tokens: np.ndarray, val_tokens: np.ndarray, vocab_size: int,
                       k: int, steps: int, device: torch.device, compile: bool = False) -> float:
    """Total tokens/s (all K models) of `scaling.train.stacked.pretrain_batched` training K models that
    differ in decay, evaluations excluded as it reports."""
    from scaling.train.stacked import pretrain_batched

    run = cfg.replace(tokens=steps * cfg.batch_tokens, tpp=None, eval_every=10**9, eval_tokens=cfg.batch_tokens)
    configs = [run.replace(decay=run.decay * (i + 1)) for i in range(k)]
    results = pretrain_batched(configs, train_tokens, val_tokens, vocab_size, device=device, compile=compile)
    return results[0].metrics["batch_tokens_per_s"]


def _paired(numerators: list[float], denominators: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(numerators, denominators))


@dataclass
class BenchResult:
    config: dict[str, Any]
    n_params: int
    flops_per_token: float
    trainer_tokens_per_s: list[float] = field(default_factory=list)
    reference_tokens_per_s: list[float] = field(default_factory=list)
    batched_tokens_per_s: dict[int, list[float]] = field(default_factory=dict)  # K -> total tokens/s per run
    # the same runs per CPU-second of this process (whole call: setup included) - fairer under load
    cpu_tokens_per_s: dict[str, list[float]] = field(default_factory=dict)  # "reference"/"trainer"/"K=8"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def speedup_batched(self) -> dict[str, float]:
        """K (as a string) -> total tokens/s of the batched trainer over K sequential trainer runs
        (whose total rate is the single trainer's rate): the median over repeats of each repeat's
        own ratio, so a machine that drifts in speed between repeats cancels out."""
        return {str(k): _paired(runs, self.trainer_tokens_per_s) for k, runs in sorted(self.batched_tokens_per_s.items())}

    @property
    def ratio_vs_reference(self) -> float:
        """Trainer tokens/s over the reference loop's, median of the per-repeat ratios."""
        return _paired(self.trainer_tokens_per_s, self.reference_tokens_per_s)

    def to_dict(self) -> dict[str, Any]:
        trainer = statistics.median(self.trainer_tokens_per_s)
        reference = statistics.median(self.reference_tokens_per_s)
        out = {
            "config": self.config,
            "n_params": self.n_params,
            "flops_per_token": self.flops_per_token,
            "threads": torch.get_num_threads(),
            "trainer_tokens_per_s": trainer,
            "reference_tokens_per_s": reference,
            "trainer_flops_per_s": trainer * self.flops_per_token,
            "reference_flops_per_s": reference * self.flops_per_token,
            "ratio_vs_reference": self.ratio_vs_reference,
            "trainer_runs": self.trainer_tokens_per_s,
            "reference_runs": self.reference_tokens_per_s,
        }
        if self.batched_tokens_per_s:
            out["batched"] = {
                str(k): {
                    "total_tokens_per_s": statistics.median(runs),
                    "tokens_per_s_per_model": statistics.median(runs) / k,
                    "flops_per_s": statistics.median(runs) * self.flops_per_token,
                    "runs": runs,
                }
                for k, runs in sorted(self.batched_tokens_per_s.items())
            }
            out["speedup_batched"] = self.speedup_batched
        if self.cpu_tokens_per_s:
            cpu = self.cpu_tokens_per_s
            out["cpu_time"] = {
                "tokens_per_cpu_s": {name: statistics.median(runs) for name, runs in cpu.items()},
                "ratio_vs_reference": _paired(cpu["trainer"], cpu["reference"]),
                "speedup_batched": {str(k): _paired(cpu[f"K={k}"], cpu["trainer"])
                                    for k in sorted(self.batched_tokens_per_s)},
            }
        out.update(self.extra)
        return out


def run_bench(cfg: RunConfig, steps: int = 20, repeats: int = 3, ks: tuple[int, ...] = (),
              compile: bool = False) -> BenchResult:
    """Interleaved repeats of: reference loop and toolkit trainer (in alternating order), then
    the batched trainer at each K in `ks`; ratios are medians of per-repeat ratios.
    `compile` applies `torch.compile` to the batched trainer's forward (the other paths stay eager)."""
    from scaling.train.stacked import tune_cpu_allocator
    from scaling.data.tokens import load_pretrain_data

    device = resolve_device(cfg.device)
    # process-wide, so every path below runs on the same allocator settings
    allocator_tuned = tune_cpu_allocator() if device.type == "cpu" else False
    data = load_pretrain_data(cfg.corpus, cfg.tokenizer)
    vocab = data.tokenizer.vocab_size
    shape = model_shape(cfg)
    result = BenchResult(config=cfg.to_dict(), n_params=non_embedding_params(shape),
                         flops_per_token=train_flops_per_token(shape, vocab, cfg.context))
    result.extra.update({"cpu_allocator_tuned": allocator_tuned, "steps": steps, "repeats": repeats,
                         "compile": compile, "device": str(device)})
    # one untimed warm-up of each path, then interleaved repeats
    reference_loop(cfg, data.train, vocab, 2, device)
    trainer_throughput(cfg, data.train, data.val, vocab, 2, device)
    for k in ks:
        batched_throughput(cfg, data.train, data.val, vocab, k, 2, device, compile)
    def timed(name: str, tokens: int, fn, *args) -> float:
        start = time.process_time()
        tokens_per_s = fn(*args)
        result.cpu_tokens_per_s.setdefault(name, []).append(tokens / max(time.process_time() - start, 1e-9))
        return tokens_per_s

    tokens = steps * cfg.batch_tokens
    pair = {"reference": (result.reference_tokens_per_s, reference_loop, (cfg, data.train, vocab, steps, device)),
            "trainer": (result.trainer_tokens_per_s, trainer_throughput,
                        (cfg, data.train, data.val, vocab, steps, device))}
    for repeat in range(repeats):
        # alternate which of the pair goes first, so neither always inherits the other's leftovers
        for name in (("reference", "trainer") if repeat % 2 == 0 else ("trainer", "reference")):
            runs, fn, args = pair[name]
            runs.append(timed(name, tokens, fn, *args))
        for k in ks:
            result.batched_tokens_per_s.setdefault(k, []).append(timed(
                f"K={k}", k * tokens, batched_throughput, cfg, data.train, data.val, vocab, k, steps, device, compile))
    return result
