"""Training-throughput benchmark: the toolkit's trainer against a plain PyTorch loop of the
same model, measured in the same process, interleaved, median of repeats (machines here are
noisy, so only ratios measured side by side mean anything)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from scaling.config import RunConfig
from scaling.model import GPT, non_embedding_params, train_flops_per_token
from scaling.train import model_shape, pretrain, resolve_device


def reference_loop(cfg: RunConfig, train_tokens: np.ndarray, vocab_size: int, steps: int,
                   device: torch.device) -> float:
    """A straightforward GPT training loop (random windows, AdamW, clip, step); tokens/s."""
    torch.manual_seed(cfg.seed)
    model = GPT(model_shape(cfg), vocab_size, cfg.context).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.decay)
    data = torch.from_numpy(np.asarray(train_tokens[: 4_000_000], dtype=np.int64))
    gen = torch.Generator().manual_seed(cfg.seed)
    start = time.perf_counter()
    for _ in range(steps):
        ix = torch.randint(len(data) - cfg.context - 1, (cfg.batch_size,), generator=gen)
        batch = torch.stack([data[i: i + cfg.context + 1] for i in ix.tolist()]).to(device)
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
    """tokens/s of `scaling.train.pretrain` itself (evaluations excluded, as it reports)."""
    run = cfg.replace(tokens=steps * cfg.batch_tokens, tpp=None, eval_every=10**9,
                      eval_tokens=cfg.batch_tokens)
    return pretrain(run, train_tokens, val_tokens, vocab_size, device=device).metrics["tokens_per_s"]


@dataclass
class BenchResult:
    config: dict[str, Any]
    n_params: int
    flops_per_token: float
    trainer_tokens_per_s: list[float] = field(default_factory=list)
    reference_tokens_per_s: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio_vs_reference(self) -> float:
        return statistics.median(self.trainer_tokens_per_s) / statistics.median(self.reference_tokens_per_s)

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
        out.update(self.extra)
        return out


def run_bench(cfg: RunConfig, steps: int = 20, repeats: int = 3) -> BenchResult:
    from scaling.data.tokens import load_pretrain_data

    device = resolve_device(cfg.device)
    data = load_pretrain_data(cfg.corpus, cfg.tokenizer)
    vocab = data.tokenizer.vocab_size
    shape = model_shape(cfg)
    result = BenchResult(config=cfg.to_dict(), n_params=non_embedding_params(shape),
                         flops_per_token=train_flops_per_token(shape, vocab, cfg.context))
    # one untimed warm-up of each path, then interleaved repeats
    reference_loop(cfg, data.train, vocab, 2, device)
    trainer_throughput(cfg, data.train, data.val, vocab, 2, device)
    for _ in range(repeats):
        result.reference_tokens_per_s.append(reference_loop(cfg, data.train, vocab, steps, device))
        result.trainer_tokens_per_s.append(trainer_throughput(cfg, data.train, data.val, vocab, steps, device))
    return result
