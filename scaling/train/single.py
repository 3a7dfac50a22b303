"""The reference trainer: one plain `GPT` with PyTorch's AdamW, driven by the shared loop.

`pretrain` is what the stacked trainer and the cooldown branches are checked against. It raises
`TrainingDiverged` when a loss goes non-finite.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from scaling.config import RunConfig
from scaling.train.loop import PretrainResult, Run, autocast_dtype, full_run, progress_bar, resolve_device
from scaling.train.model import GPT


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
    several small kernels per tensor)."""
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


class SingleRun(Run):
    """One `GPT` and its AdamW as a `Run` of K = 1."""

    def __init__(self, cfg: RunConfig, train_tokens: np.ndarray, vocab_size: int, device: torch.device):
        super().__init__([cfg], train_tokens, vocab_size, device)
        torch.manual_seed(cfg.seed)
        self.model = GPT(self.shape, vocab_size, cfg.context).to(device)
        self.optimizer = build_optimizer(self.model, cfg, device)
        self.model.train()

    def forward_backward(self, step: int) -> torch.Tensor:
        batch = self.batch(step)
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            _, loss = self.model(batch[:, :-1], batch[:, 1:])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss.detach().view(1)

    def update(self, lr: float) -> None:
        cfg = self.configs[0]
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()

    def evaluate(self, windows: np.ndarray) -> list[float]:
        return [evaluate_loss(self.model, windows, self.device)]

    def kill(self, k: int) -> None:
        """Nothing to freeze: the loop stops once the only model has diverged."""

    def extract(self, k: int) -> GPT:
        return self.model


def pretrain(cfg: RunConfig, train_tokens: np.ndarray, val_tokens: np.ndarray, vocab_size: int,
             progress: bool = False, device: torch.device | None = None,
             on_step: Callable[[int, float], None] | None = None) -> PretrainResult:
    """Train a fresh model on `train_tokens` for the config's token budget and evaluate it.
    `on_step(step, loss)` sees every loss up to a divergence, which raises `TrainingDiverged`."""
    result = pretrain_single(cfg, train_tokens, val_tokens, vocab_size, progress, device, on_step)
    if result.error is not None:
        raise result.error
    return result


def pretrain_single(cfg: RunConfig, train_tokens: np.ndarray, val_tokens: np.ndarray, vocab_size: int,
                    progress: bool = False, device: torch.device | None = None,
                    on_step: Callable[[int, float], None] | None = None) -> PretrainResult:
    """`pretrain`, with a divergence recorded in the result's `error` instead of raised."""
    from scaling.data.tokens import eval_windows

    device = device or resolve_device(cfg.device)
    run = SingleRun(cfg, train_tokens, vocab_size, device)
    val_windows = eval_windows(val_tokens, cfg.eval_tokens, cfg.context)

    def each_step(step: int, losses: list[float]) -> None:
        error = run.errors[0]
        if on_step is not None and (error is None or step < error.step):
            on_step(step, losses[0])

    bar = progress_bar(progress, run.budget()[0], f"pretrain {cfg.size or run.shape.d_model} decay={cfg.decay:g}")
    steps, n_tokens, train_time = full_run(run, val_windows, each_step, bar)
    if bar is not None:
        bar.close()
    return run.results([cfg], steps, n_tokens, train_time, val_windows)[0]
