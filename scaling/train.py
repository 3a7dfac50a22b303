"""Pretraining: AdamW, learning-rate schedules, a token budget, evaluation.

Free of Optuna: a `RunConfig` and token arrays in, a model plus a metrics dict out. The maths
(schedules, budgets, tau) are small pure functions so tests and the batched trainer share them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from scaling.config import RunConfig
from scaling.errors import ConfigError, TrainingDiverged
from scaling.model import GPT, LADDER, ModelShape, ladder_shape, non_embedding_params, total_params, train_flops_per_token

# A loss this far above log(vocab) means the run has blown up even if it is still finite.
DIVERGENCE_FACTOR = 3.0


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but no CUDA device is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device: 'mps' requested but MPS is not available")
    return torch.device(name)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA; fp32 elsewhere (bf16 matmuls are ~200x slower on common CPUs)."""
    return torch.bfloat16 if device.type == "cuda" else None


def model_shape(cfg: RunConfig) -> ModelShape:
    """The ladder rung named by `cfg.size`, with any explicit shape override applied."""
    if cfg.size is not None:
        base = LADDER[cfg.size]
        d_model = cfg.d_model or base.d_model
        if cfg.d_model is None:
            return ModelShape(
                d_model=d_model,
                n_layers=cfg.n_layers or base.n_layers,
                n_heads=cfg.n_heads or base.n_heads,
                d_ff=cfg.d_ff or base.d_ff,
            )
    else:
        d_model = cfg.d_model
    return ladder_shape(d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff)


def token_budget(cfg: RunConfig, n_params: int) -> tuple[int, int]:
    """(steps, n_tokens): the budget rounded to whole optimizer steps (at least one)."""
    target = cfg.tokens if cfg.tokens is not None else cfg.tpp * n_params
    steps = max(1, round(target / cfg.batch_tokens))
    return steps, steps * cfg.batch_tokens


def warmup_steps(steps: int, warmup_frac: float) -> int:
    return min(steps, round(warmup_frac * steps)) if warmup_frac > 0 else 0


def lr_multiplier(step: int, steps: int, schedule: str = "cosine", warmup_frac: float = 0.1,
                  final_lr_frac: float = 0.1, cooldown_frac: float = 0.2) -> float:
    """Multiplier of the peak LR for update `step` (0-based) of `steps`.

    cosine: linear warmup to 1, then cosine to `final_lr_frac` reached at the last step.
    wsd: linear warmup, constant, then a (1 - sqrt) cooldown to `final_lr_frac` over the last
    `cooldown_frac` of steps (Hagele et al. 2024, "Scaling Laws and Compute-Optimal Training
    Beyond Fixed Training Durations").
    """
    w = warmup_steps(steps, warmup_frac)
    if step < w:
        return (step + 1) / w
    if schedule == "cosine":
        span = steps - w - 1
        progress = 1.0 if span <= 0 else (step - w) / span
        return final_lr_frac + (1 - final_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if schedule == "wsd":
        cool = max(1, round(cooldown_frac * steps)) if cooldown_frac > 0 else 0
        start = steps - cool
        if cool == 0 or step < start:
            return 1.0
        progress = (step - start + 1) / cool
        return final_lr_frac + (1 - final_lr_frac) * (1 - math.sqrt(min(progress, 1.0)))
    raise ConfigError(f"schedule: expected cosine or wsd, got {schedule!r}")


def tau(batch_tokens: int, lr: float, decay: float, n_tokens: int, decay_mode: str = "coupled") -> float:
    """EMA timescale of AdamW as a fraction of the run (Wang & Aitchison 2024; Bergsma et al.
    2025): tau = B / (lr * decay * D). With LR-independent decay the per-step shrink is `decay`
    itself, so tau = B / (decay * D). Infinite when decay is 0."""
    rate = decay if decay_mode == "independent" else lr * decay
    if rate == 0:
        return math.inf
    return batch_tokens / (rate * n_tokens)


def param_groups(model: torch.nn.Module, cfg: RunConfig) -> list[dict[str, Any]]:
    """Split parameters into decayed and not decayed. Default (as in the study): all decay.
    `matrices`: only tensors with 2+ dims (embeddings, projections, head) decay; gains do not.

    PyTorch's AdamW multiplies weight_decay by the scheduled LR (coupled). For LR-independent
    decay we set weight_decay = decay / peak_lr, so the per-step shrink is decay * schedule(t)."""
    wd = cfg.decay if cfg.decay_mode == "coupled" else cfg.decay / cfg.lr
    decayed, plain = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decayed if cfg.decay_params == "all" or p.dim() >= 2 else plain).append(p)
    groups = [{"params": decayed, "weight_decay": wd}]
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0})
    return groups


def build_optimizer(model: torch.nn.Module, cfg: RunConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with PyTorch's fused kernel on CPU and CUDA (one pass over all parameters instead of
    ~10 small kernels per tensor: ~0.8 -> 0.3 ms per step at 13k on CPU, where steps are ~15 ms)."""
    kwargs: dict[str, Any] = {}
    if device.type in ("cpu", "cuda"):
        kwargs["fused"] = True
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             eps=1e-8, **kwargs)


@torch.no_grad()
def evaluate_loss(model: GPT, windows: np.ndarray, device: torch.device, batch_size: int = 32) -> float:
    """Mean next-token loss (nats/token) over windows of shape (n, context + 1)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    dtype = autocast_dtype(device)
    for start in range(0, len(windows), batch_size):
        chunk = torch.from_numpy(np.asarray(windows[start:start + batch_size], dtype=np.int64)).to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            _, loss = model(chunk[:, :-1], chunk[:, 1:])
        total += loss.item() * chunk.shape[0]
        count += chunk.shape[0]
    model.train(was_training)
    return total / max(count, 1)


def check_finite(loss: float, step: int, vocab_size: int, phase: str = "pretraining") -> None:
    if not math.isfinite(loss) or loss > DIVERGENCE_FACTOR * math.log(vocab_size) + 10:
        raise TrainingDiverged(step, loss, phase)


def readback_interval(device: torch.device) -> int:
    """Steps between reading the losses back to the host. Reading a loss waits for the device, so
    on a GPU a per-step `.item()` would stop the host from queueing the next steps' kernels while
    the current ones run, which is most of a small model's speed. 1 on CPU, where it is free."""
    return 1 if device.type == "cpu" else 16


class LossReadback:
    """Losses kept on the device and read back in one transfer every `every` steps.

    `add(step, loss)` returns the (step, value) pairs read back by this call (empty if none), in
    step order; `flush()` reads whatever is pending. A divergence is therefore noticed up to
    `every - 1` steps late on a GPU, but reported at the step it happened."""

    def __init__(self, every: int):
        self.every = max(1, every)
        self._steps: list[int] = []
        self._losses: list[torch.Tensor] = []

    def add(self, step: int, loss: torch.Tensor) -> list[tuple[int, Any]]:
        self._steps.append(step)
        self._losses.append(loss.detach())
        return self.flush() if len(self._steps) >= self.every else []

    def flush(self) -> list[tuple[int, Any]]:
        if not self._steps:
            return []
        out = list(zip(self._steps, torch.stack(self._losses).tolist()))
        self._steps, self._losses = [], []
        return out


@dataclass
class PretrainResult:
    model: GPT
    metrics: dict[str, Any]
    curve: list[dict[str, Any]] = field(default_factory=list)


def seen_sample_steps(steps: int, batch_tokens: int, eval_tokens: int) -> list[int]:
    """Steps whose batches form the fixed sample of already-seen tokens for train_loss."""
    n = max(1, min(steps, math.ceil(eval_tokens / batch_tokens)))
    return sorted({int(s) for s in np.linspace(0, steps - 1, n).round()})


def pretrain(cfg: RunConfig, train_tokens: np.ndarray, val_tokens: np.ndarray, vocab_size: int,
             progress: bool = False, device: torch.device | None = None,
             on_step: Callable[[int, float], None] | None = None) -> PretrainResult:
    """Train a fresh model on `train_tokens` for the config's token budget and evaluate it."""
    from scaling.data.tokens import Batches, eval_windows

    device = device or resolve_device(cfg.device)
    shape = model_shape(cfg)
    n_params = non_embedding_params(shape)
    steps, n_tokens = token_budget(cfg, n_params)

    torch.manual_seed(cfg.seed)
    model = GPT(shape, vocab_size, cfg.context).to(device)
    optimizer = build_optimizer(model, cfg, device)
    batches = Batches(train_tokens, cfg.batch_size, cfg.context, cfg.seed)
    val_windows = eval_windows(val_tokens, cfg.eval_tokens, cfg.context)
    curve_val = val_windows[: max(1, len(val_windows) // 4)]
    eval_every = cfg.eval_every or max(1, steps // 10)
    dtype = autocast_dtype(device)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc=f"pretrain {cfg.size or shape.d_model} decay={cfg.decay:g}",
                   unit="step", leave=False)
    curve: list[dict[str, Any]] = []
    recent: list[float] = []
    readback = LossReadback(readback_interval(device))

    def record(pairs: list[tuple[int, float]]) -> None:
        for done, value in pairs:
            check_finite(value, done, vocab_size)
            recent.append(value)
            if on_step is not None:
                on_step(done, value)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}")

    eval_time = 0.0
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        mult = lr_multiplier(step, steps, cfg.schedule, cfg.warmup_frac, cfg.final_lr_frac, cfg.cooldown_frac)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * mult
        batch = torch.from_numpy(batches.get(step)).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            _, loss = model(batch[:, :-1], batch[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        record(readback.add(step, loss))
        if (step + 1) % eval_every == 0 or step == steps - 1:
            record(readback.flush())
            eval_start = time.perf_counter()
            curve.append({
                "step": step + 1,
                "tokens": (step + 1) * cfg.batch_tokens,
                "lr": cfg.lr * mult,
                "train_loss": float(np.mean(recent)),
                "val_loss": evaluate_loss(model, curve_val, device),
            })
            recent = []
            eval_time += time.perf_counter() - eval_start
    if device.type == "cuda":
        torch.cuda.synchronize()
    # Throughput counts optimizer steps only, not the curve evaluations in between.
    train_time = time.perf_counter() - start - eval_time
    if bar is not None:
        bar.close()

    val_loss = evaluate_loss(model, val_windows, device)
    seen = np.concatenate([batches.get(s) for s in seen_sample_steps(steps, cfg.batch_tokens, cfg.eval_tokens)])
    train_loss = evaluate_loss(model, seen, device)
    check_finite(val_loss, steps, vocab_size, "evaluation")
    metrics = pretrain_metrics(cfg, shape, vocab_size, steps, n_tokens, len(train_tokens), val_loss, train_loss,
                               train_time, device)
    return PretrainResult(model=model, metrics=metrics, curve=curve)


def pretrain_metrics(cfg: RunConfig, shape: ModelShape, vocab_size: int, steps: int, n_tokens: int,
                     n_train_tokens: int, val_loss: float, train_loss: float, train_time: float,
                     device: torch.device) -> dict[str, Any]:
    """The metrics dict of one pretraining run (shared by `pretrain` and the batched trainer)."""
    n_params = non_embedding_params(shape)
    metrics = {
        "size": cfg.size,
        "d_model": shape.d_model,
        "n_layers": shape.n_layers,
        "n_heads": shape.n_heads,
        "d_ff": shape.d_ff,
        "context": cfg.context,
        "n_params": n_params,
        "n_params_total": total_params(shape, vocab_size),
        "n_tokens": n_tokens,
        "tpp": n_tokens / n_params,
        "decay": cfg.decay,
        "lr": cfg.lr,
        "batch_tokens": cfg.batch_tokens,
        "steps": steps,
        "schedule": cfg.schedule,
        "decay_mode": cfg.decay_mode,
        "decay_params": cfg.decay_params,
        "tau": tau(cfg.batch_tokens, cfg.lr, cfg.decay, n_tokens, cfg.decay_mode),
        "epochs": n_tokens / max(1, n_train_tokens),
        "val_loss": val_loss,
        "train_loss": train_loss,
        "gap": val_loss - train_loss,
        "train_s": train_time,
        "tokens_per_s": n_tokens / train_time,
        "flops_per_token": train_flops_per_token(shape, vocab_size, cfg.context),
        "seed": cfg.seed,
        "device": str(device),
    }
    metrics["flops_per_s"] = metrics["tokens_per_s"] * metrics["flops_per_token"]
    return metrics
