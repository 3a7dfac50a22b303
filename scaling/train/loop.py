"""The one training loop, for a single model and for K stacked models alike.

A `Run` is K models in training (K = 1 for a plain `GPT`, `scaling.train.single.SingleRun`; any
K for `scaling.train.stacked.StackedRun`). `train_steps` drives any `Run` from a start step to a
stop step at the learning rate its `lr_at(step)` gives: a full pretraining run is steps
0..S-1 with the config's schedule, a cooldown branch is steps start..S_b-1 with its own.

Divergence has one representation: a model whose loss goes non-finite (or explodes,
`check_finite`) gets its `TrainingDiverged` in `Run.errors[k]` and stops training; its
`PretrainResult` carries that `error`, `model=None` and metrics with `error`, `diverged_step`,
`diverged_phase` (`divergence_fields`) and NaN losses.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from scaling.config import RunConfig, model_shape, token_budget
from scaling.core.budget import tau
from scaling.core.schedule import lr_multiplier
from scaling.core.shapes import ModelShape, non_embedding_params, total_params, train_flops_per_token
from scaling.errors import ConfigError, TrainingDiverged

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
    """bf16 autocast on CUDA; fp32 elsewhere (bf16 matmuls are far slower on common CPUs)."""
    return torch.bfloat16 if device.type == "cuda" else None


def check_finite(loss: float, step: int, vocab_size: int, phase: str = "pretraining") -> None:
    if not math.isfinite(loss) or loss > DIVERGENCE_FACTOR * math.log(vocab_size) + 10:
        raise TrainingDiverged(step, loss, phase)


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on `device` without stopping the host: on CUDA through pinned memory, since a
    copy from pageable memory waits for every kernel queued before it (one host sync per step)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def readback_interval(device: torch.device) -> int:
    """Steps between reading the losses back to the host: 1 on CPU, where it is free; 16 on a GPU,
    where a per-step `.item()` would stop the host from queueing the next steps' kernels."""
    return 1 if device.type == "cpu" else 16


class LossReadback:
    """Losses kept on the device and read back in one transfer every `every` steps.

    `add(step, losses)` returns the (step, values) pairs read back by this call (empty if none), in
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
    """One pretrained model: the plain `GPT` (None if it diverged), its metrics, its curve, and the
    `TrainingDiverged` it ended with, if any."""

    model: Any
    metrics: dict[str, Any]
    curve: list[dict[str, Any]] = field(default_factory=list)
    error: TrainingDiverged | None = None


def divergence_fields(error: TrainingDiverged) -> dict[str, Any]:
    """The metrics keys that record a divergence: the message, its step and its phase."""
    return {"error": str(error), "diverged_step": error.step, "diverged_phase": error.phase}


def seen_sample_steps(steps: int, batch_tokens: int, eval_tokens: int) -> list[int]:
    """Steps whose batches form the fixed sample of already-seen tokens for train_loss."""
    n = max(1, min(steps, math.ceil(eval_tokens / batch_tokens)))
    return sorted({int(s) for s in np.linspace(0, steps - 1, n).round()})


def curve_windows(val_windows: np.ndarray) -> np.ndarray:
    """The quarter of the validation windows that the curve points are evaluated on."""
    return val_windows[: max(1, len(val_windows) // 4)]


def pretrain_metrics(cfg: RunConfig, shape: ModelShape, vocab_size: int, steps: int, n_tokens: int,
                     n_train_tokens: int, val_loss: float, train_loss: float, train_time: float,
                     device: torch.device) -> dict[str, Any]:
    """The metrics dict of one pretrained model."""
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


class Run(ABC):
    """K models of one shape in training: their data, liveness, losses since the last curve point,
    curves, and final results. Subclasses hold the model(s) and implement `forward_backward`,
    `update`, `evaluate`, `kill` and `extract`."""

    stacked = False  # True: results report `batch_models`, `batch_tokens_per_s` and `compiled`
    compile = False  # the training step runs under torch.compile (`StackedRun(compile=True)`)

    def __init__(self, configs: Sequence[RunConfig], train_tokens: np.ndarray, vocab_size: int,
                 device: torch.device):
        from scaling.data.tokens import Batches

        self.configs = list(configs)
        cfg = self.configs[0]
        self.device, self.vocab_size, self.train_tokens = device, vocab_size, train_tokens
        self.shape = model_shape(cfg)
        self.k = len(self.configs)
        seeds = [c.seed for c in self.configs]
        self.shared_data = len(set(seeds)) == 1
        self.batches = [Batches(train_tokens, cfg.batch_size, cfg.context, s)
                        for s in (seeds[:1] if self.shared_data else seeds)]
        self.errors: list[TrainingDiverged | None] = [None] * self.k
        self.curves: list[list[dict[str, Any]]] = [[] for _ in range(self.k)]
        self.recent: list[list[float]] = [[] for _ in range(self.k)]
        self.autocast = autocast_dtype(device)
        self.readback = LossReadback(readback_interval(device))

    # -- what a model implementation provides

    @abstractmethod
    def forward_backward(self, step: int) -> torch.Tensor:
        """Gradients of every model on its batch of `step`; returns the K losses (on the device)."""

    @abstractmethod
    def update(self, lr: float) -> None:
        """One optimizer step of every live model at learning rate `lr`."""

    @abstractmethod
    def evaluate(self, windows: np.ndarray) -> list[float]:
        """Per-model mean next-token loss over windows (n, T+1) shared, or (K, n, T+1) per model."""

    @abstractmethod
    def kill(self, k: int) -> None:
        """Stop model k after it diverged."""

    @abstractmethod
    def extract(self, k: int) -> Any:
        """Model k as a plain `GPT`."""

    # -- shared

    def budget(self) -> tuple[int, int]:
        """(steps, n_tokens): the configs' token budget in whole optimizer steps."""
        return token_budget(self.configs[0], non_embedding_params(self.shape))

    @property
    def any_alive(self) -> bool:
        return any(e is None for e in self.errors)

    def batch(self, step: int) -> torch.Tensor:
        """(B, T+1) shared by all models, or (K, B, T+1) when seeds differ."""
        arrays = [b.get(step) for b in self.batches]
        array = arrays[0] if self.shared_data else np.stack(arrays)
        return to_device(array, self.device)

    def train_step(self, step: int, lr: float) -> list[tuple[int, list[float]]]:
        """One optimizer step of every live model at learning rate `lr`. Returns the (step, K losses)
        pairs read back from the device by this call (see `readback_interval`)."""
        losses = self.forward_backward(step)
        # read before the update, so on CPU a model that just diverged is stopped before it steps
        pairs = self._absorb(self.readback.add(step, losses))
        self.update(lr)
        return pairs

    def sync(self) -> list[tuple[int, list[float]]]:
        """Read back and check every loss still on the device (before evaluations and branching)."""
        return self._absorb(self.readback.flush())

    def _absorb(self, pairs: list[tuple[int, list[float]]]) -> list[tuple[int, list[float]]]:
        """Check read-back losses; a model that diverged is stopped (`kill`). On a GPU that happens
        up to `readback_interval - 1` steps late."""
        for step, values in pairs:
            for k, value in enumerate(values):
                if self.errors[k] is None:
                    try:
                        check_finite(value, step, self.vocab_size)
                    except TrainingDiverged as exc:
                        self.errors[k] = exc
                        self.kill(k)
                        continue
                    self.recent[k].append(value)
        return pairs

    def record_curve(self, step: int, tokens: int, lr: float, windows: np.ndarray) -> None:
        self.sync()
        val = self.evaluate(windows)
        for k in range(self.k):
            if self.errors[k] is None:
                self.curves[k].append({"step": step, "tokens": tokens, "lr": lr,
                                       "train_loss": float(np.mean(self.recent[k])) if self.recent[k] else math.nan,
                                       "val_loss": val[k]})
            self.recent[k] = []

    def seen_windows(self, steps: int, batch_tokens: int, eval_tokens: int) -> np.ndarray:
        chosen = seen_sample_steps(steps, batch_tokens, eval_tokens)
        per = [np.concatenate([b.get(s) for s in chosen]) for b in self.batches]
        return per[0] if self.shared_data else np.stack(per)

    def results(self, configs: Sequence[RunConfig], steps: int, n_tokens: int, train_time: float,
                val_windows: np.ndarray, extra: dict[str, Any] | None = None,
                k_total: int | None = None) -> list[PretrainResult]:
        """Final evaluation and one `PretrainResult` per model. `k_total`: the models trained side
        by side in all (this run may be one group of them)."""
        self.sync()
        k_total = k_total or self.k
        cfg = configs[0]
        if self.any_alive:
            val = self.evaluate(val_windows)
            train = self.evaluate(self.seen_windows(steps, cfg.batch_tokens, cfg.eval_tokens))
        else:
            val = train = [math.nan] * self.k
        out = []
        for k, c in enumerate(configs):
            if self.errors[k] is None:
                try:
                    check_finite(val[k], steps, self.vocab_size, "evaluation")
                except TrainingDiverged as exc:
                    self.errors[k] = exc
            metrics = pretrain_metrics(c, self.shape, self.vocab_size, steps, n_tokens, len(self.train_tokens),
                                       val[k], train[k], train_time, self.device)
            if self.stacked:
                metrics["batch_models"] = k_total
                metrics["batch_tokens_per_s"] = k_total * n_tokens / train_time
                metrics["compiled"] = bool(self.compile)
            metrics.update(extra or {})
            error = self.errors[k]
            if error is not None:
                metrics.update({"val_loss": math.nan, "train_loss": math.nan, "gap": math.nan,
                                **divergence_fields(error)})
            model = self.extract(k) if error is None else None
            out.append(PretrainResult(model=model, metrics=metrics, curve=self.curves[k], error=error))
        return out


def train_steps(run: Run, start: int, stop: int, lr_at: Callable[[int], float], eval_at: Callable[[int], bool],
                curve_val: np.ndarray, on_step: Callable[[int, list[float]], None] | None = None,
                bar: Any = None) -> float:
    """The training loop: steps start..stop-1 of `run` at learning rate `lr_at(step)`, a curve point
    after every step where `eval_at(steps done)` holds, `on_step(step, K losses)` for each step as
    its losses are read back. Stops early when every model has diverged. Returns the training
    time in seconds, evaluations excluded."""
    cfg = run.configs[0]
    eval_time = 0.0
    t0 = time.perf_counter()
    for step in range(start, stop):
        if not run.any_alive:
            break
        lr = lr_at(step)
        pairs = run.train_step(step, lr)
        done = step + 1
        at_eval = eval_at(done)
        if at_eval:
            pairs += run.sync()
        if on_step is not None:
            for s, losses in pairs:
                on_step(s, losses)
        if at_eval:
            eval_start = time.perf_counter()
            run.record_curve(done, done * cfg.batch_tokens, lr, curve_val)
            eval_time += time.perf_counter() - eval_start
        if bar is not None:
            bar.update(1)
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0 - eval_time


def full_run(run: Run, val_windows: np.ndarray, on_step: Callable[[int, list[float]], None] | None = None,
             bar: Any = None) -> tuple[int, int, float]:
    """`run` trained start to finish on its config's budget and schedule, with a curve point every
    `eval_every` steps (about 10 points by default) and at the end. Returns (steps, n_tokens,
    training seconds)."""
    cfg = run.configs[0]
    steps, n_tokens = run.budget()
    every = cfg.eval_every or max(1, steps // 10)

    def lr_at(step: int) -> float:
        return cfg.lr * lr_multiplier(step, steps, cfg.schedule, cfg.warmup_frac, cfg.final_lr_frac,
                                      cfg.cooldown_frac)

    train_time = train_steps(run, 0, steps, lr_at, lambda done: done % every == 0 or done == steps,
                             curve_windows(val_windows), on_step, bar)
    return steps, n_tokens, train_time


def progress_bar(enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False)
