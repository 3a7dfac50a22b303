"""Batched decay sweeps: K models of one shape trained together as one stacked model.

Small models waste the hardware: each matrix product is too small to fill a GPU or a core, and
per-operation overheads dominate. Every decay value of a study cell trains the same architecture
on the same data, so K of them can run as one model whose parameters carry a leading model axis
(K, ...) and whose matrix products are batched (`bmm`).

Where the time goes on CPU (measured at 13k params, context 128, batch 32): not in Python
overhead (a step of 4,096 tokens is already large) but in streaming activation-sized tensors
through memory. So the CPU gains come from (1) kernels that make fewer passes over them
(`scaling.batched_ops`), (2) keeping freed memory in the heap instead of faulting fresh pages
(`tune_cpu_allocator`), and (3) on several threads, one group of models per thread with
single-threaded kernels (`_group_bounds`) instead of OpenMP splitting each small kernel, which
scales poorly and collapses on a shared machine. On GPU the stack is one model and bf16
autocast applies as in `pretrain`.

Exactness. Model k starts from exactly the weights `GPT` gets under `torch.manual_seed(seed_k)`,
sees exactly the batches `pretrain` feeds it (`Batches(train, batch, context, seed_k).get(step)`),
and is updated by the same AdamW arithmetic (PyTorch's single-tensor AdamW, written out over the
stack) with its own decay and its own gradient-norm clip. Nothing mixes models: every product,
norm and reduction runs per model. So results match K separate `pretrain` runs up to float
rounding (different summation orders in the batched kernels; about 1e-6 relative on CPU).

Layout. All of model k's parameters live in row k of one flat (K, P) buffer; each named
parameter is a leaf tensor viewing its columns, and its `.grad` views the same columns of a flat
gradient buffer, so autograd accumulates straight into it. The optimizer is then ~10 vectorised
operations on (K, P) tensors whatever the depth: per-model grad norm is a row norm, per-model
decay a (K, 1) factor. Matrices come first in the row and the 1-D RMSNorm gains last, so
`decay_params="matrices"` decays a column prefix. Attention's wq/wk/wv and the MLP's gate/up are
stored fused (one product each), W_Q and W_K with each head's rows reordered so rotary is one
complex product, and RMSNorm gains are folded into the following weight (W diag g);
`extract(k)` undoes all of it into a plain `GPT`. With the fused output-head cross-entropy these
cut the passes over activation-sized tensors, which is where a small model spends its time.

Divergence. A model whose loss goes non-finite (or explodes, `check_finite`) is marked dead at
that step: its row of weights and optimizer state is zeroed and frozen (no gradient, no decay),
so nothing non-finite is ever computed again and the other models train on bit-identically.
Its result has `error` set to the `TrainingDiverged` it would have raised, `model=None`, and its
metrics carry `error` (the message), `diverged_step`, `diverged_phase` and NaN losses.

Using it from a study (ask/tell). A worker asks Optuna for K trials of one cell, builds one
`RunConfig` per trial differing only in `decay` (and `seed` if the study repeats seeds), runs
them together, and tells each result::

    trials = [study.ask() for _ in range(k)]
    configs = [base.replace(decay=t.suggest_float("decay", lo, hi, log=True)) for t in trials]
    for trial, metrics in zip(trials, run_pipeline_batched(configs)):
        if "error" in metrics:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)   # or record and prune
        else:
            study.tell(trial, [metrics["val_loss"], metrics["ft_score"]])

`pretrain_batched` is the pretraining half alone (a list of `BatchedResult`, one per config, each
with a plain `GPT` in `.model`); `run_pipeline_batched` adds probes and fine-tuning per model and
returns the same metrics dicts as `scaling.pipeline.run_pipeline`. Token budgets from one run
(cooldown branches of a WSD schedule) are in `scaling.cooldown`.

Metrics differ from `pretrain`'s only in timing: `train_s` is the shared wall time of all K,
`tokens_per_s` = n_tokens / train_s per model, and `batch_models` (K) and `batch_tokens_per_s`
(all K together) are added.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from scaling import batched_ops as ops
from scaling.config import RunConfig
from scaling.errors import ConfigError, TrainingDiverged
from scaling.model import GPT, ModelShape, non_embedding_params, rotary_tables
from scaling.train import (LossReadback, PretrainResult, autocast_dtype, check_finite, lr_multiplier, model_shape,
                           pretrain_metrics, readback_interval, resolve_device, seen_sample_steps, token_budget)

# The gradient buffers deliberately view a strided (K, P) buffer; autograd warns that such a
# layout "may impair performance" of grad stealing, which we never rely on (we accumulate in place).
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")

_ALLOCATOR_TUNED = False


def tune_cpu_allocator() -> bool:
    """Keep freed memory in the process heap (glibc: no mmap for large blocks, no trimming).

    The stacked model's activations are tens of MB; glibc serves blocks above its mmap threshold
    (at most 32 MB) with fresh mmap pages, so every step would pay a page fault per 4 KB of every
    large tensor (measured: an exp over 34 MB costs 20 ms instead of 6 ms). This is what
    jemalloc/tcmalloc are recommended for in PyTorch CPU training; it is process-wide and only
    means memory is reused instead of returned to the OS. No-op (False) where glibc is not the
    allocator."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        _ALLOCATOR_TUNED = bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        _ALLOCATOR_TUNED = False
    return _ALLOCATOR_TUNED


# The only RunConfig fields the models of one batch may differ in.
STACKABLE_FIELDS = ("decay", "seed")


def check_stackable(configs: Sequence[RunConfig]) -> None:
    """Raise ConfigError unless the configs share every field but decay and seed."""
    if not configs:
        raise ConfigError("configs: expected at least one run config to train")
    base = configs[0].to_dict()
    for i, cfg in enumerate(configs[1:], start=1):
        other = cfg.to_dict()
        for key, value in base.items():
            if key not in STACKABLE_FIELDS and other[key] != value:
                raise ConfigError(f"configs[{i}].{key}: batched runs must share everything but decay and seed; "
                                  f"expected {value!r} (as configs[0]), got {other[key]!r}")


# ---------------------------------------------------------------- the stacked model


@dataclass(frozen=True)
class _Slot:
    name: str  # stacked name, e.g. "blocks.0.wqkv"
    shape: tuple[int, ...]  # per-model shape as stored
    offset: int  # first column in the flat row
    parts: tuple[str, ...]  # GPT state-dict keys concatenated (along dim 0) into this slot
    transposed: bool  # stored as (in, out), the transpose of nn.Linear's (out, in)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _layout(shape: ModelShape, vocab_size: int) -> tuple[list[_Slot], int, int]:
    """Slots in flat-row order (matrices first, then gains), the number of matrix columns, P.

    Linear weights are stored transposed, (in, out): x @ W_t in the forward and, above all,
    x^T @ dy for the weight gradient are then the fast orientation of a batched product on CPU
    (measured 2x for the output head against dy^T @ x)."""
    d, ff = shape.d_model, shape.d_ff
    Spec = tuple[str, tuple[int, ...], tuple[str, ...], bool]
    matrices: list[Spec] = [("embed", (vocab_size, d), ("embed.weight",), False)]
    gains: list[Spec] = []
    for i in range(shape.n_layers):
        b = f"blocks.{i}"
        matrices += [
            (f"{b}.wqkv", (d, 3 * d), (f"{b}.attn.wq.weight", f"{b}.attn.wk.weight", f"{b}.attn.wv.weight"), True),
            (f"{b}.wo", (d, d), (f"{b}.attn.wo.weight",), True),
            (f"{b}.w_gate_up", (d, 2 * ff), (f"{b}.mlp.w_gate.weight", f"{b}.mlp.w_up.weight"), True),
            (f"{b}.w_down", (ff, d), (f"{b}.mlp.w_down.weight",), True),
        ]
        gains += [(f"{b}.attn_norm", (d,), (f"{b}.attn_norm.weight",), False),
                  (f"{b}.mlp_norm", (d,), (f"{b}.mlp_norm.weight",), False)]
    matrices.append(("head", (d, vocab_size), ("head.weight",), True))
    gains.append(("norm", (d,), ("norm.weight",), False))
    slots, offset, n_matrix = [], 0, 0
    for name, shp, parts, transposed in matrices + gains:
        slots.append(_Slot(name, shp, offset, parts, transposed))
        offset += math.prod(shp)
        if len(shp) >= 2:
            n_matrix = offset
    return slots, n_matrix, offset


class StackedGPT:
    """K `GPT`s of one shape as one model with a leading model axis (see the module docstring).

    Not an nn.Module on purpose: its parameters are views into one flat buffer, which `.to()`,
    `state_dict` and friends would silently break. Build it on its device with `from_models`.
    """

    def __init__(self, shape: ModelShape, vocab_size: int, context: int, k: int, device: torch.device,
                 flat: torch.Tensor | None = None, grad: torch.Tensor | None = None):
        self.shape, self.vocab_size, self.context, self.k = shape, vocab_size, context, k
        self.device = device
        self.slots, self.n_matrix, self.n_flat = _layout(shape, vocab_size)
        self.flat = flat if flat is not None else torch.zeros(k, self.n_flat, device=device)
        self.grad = grad if grad is not None else torch.zeros(k, self.n_flat, device=device)
        self.params: dict[str, torch.Tensor] = {}
        for slot in self.slots:
            cols = slice(slot.offset, slot.offset + slot.numel)
            p = torch.nn.Parameter(self.flat[:, cols].view(k, *slot.shape))
            p.grad = self.grad[:, cols].view(k, *slot.shape)
            self.params[slot.name] = p
        cos, sin = rotary_tables(context, shape.head_dim)
        # e^(i angle) per (position, head, pair), expanded over heads: a broadcast in a middle dim
        # would cost the complex product its vectorisation
        self.rope = torch.complex(cos, sin).unsqueeze(1).expand(context, shape.n_heads, shape.head_dim // 2)
        self.rope = self.rope.contiguous().to(device)
        self._model_index = torch.arange(k, device=device).view(k, 1, 1)

    def rows(self, start: int, stop: int) -> "StackedGPT":
        """Models start..stop-1 as a StackedGPT sharing this one's weights and gradients."""
        return StackedGPT(self.shape, self.vocab_size, self.context, stop - start, self.device,
                          flat=self.flat[start:stop], grad=self.grad[start:stop])

    # -- conversion to and from plain models

    def _stack_value(self, slot: _Slot, state: dict[str, torch.Tensor]) -> torch.Tensor:
        pieces = [state[key] for key in slot.parts]
        if slot.name.endswith(".wqkv"):
            pieces[0] = ops.interleave_heads(pieces[0], self.shape.n_heads)
            pieces[1] = ops.interleave_heads(pieces[1], self.shape.n_heads)
        value = torch.cat(pieces, dim=0)
        return value.t() if slot.transposed else value

    def _unstack_value(self, slot: _Slot, value: torch.Tensor) -> dict[str, torch.Tensor]:
        value = value.t() if slot.transposed else value
        pieces = list(torch.split(value, value.shape[0] // len(slot.parts), dim=0))
        if slot.name.endswith(".wqkv"):
            pieces[0] = ops.split_heads(pieces[0], self.shape.n_heads)
            pieces[1] = ops.split_heads(pieces[1], self.shape.n_heads)
        return {key: piece.detach().contiguous().clone().cpu() for key, piece in zip(slot.parts, pieces)}

    @classmethod
    def from_models(cls, models: Sequence[GPT], device: torch.device) -> "StackedGPT":
        first = models[0]
        stacked = cls(first.shape, first.vocab_size, first.context, len(models), device)
        with torch.no_grad():
            for k, model in enumerate(models):
                state = model.state_dict()
                for slot in stacked.slots:
                    stacked.params[slot.name][k].copy_(stacked._stack_value(slot, state).to(device))
        return stacked

    @classmethod
    def from_seeds(cls, shape: ModelShape, vocab_size: int, context: int, seeds: Sequence[int],
                   device: torch.device) -> "StackedGPT":
        """Model k gets exactly the weights `GPT` gets under torch.manual_seed(seeds[k])."""
        models = []
        for seed in seeds:
            torch.manual_seed(seed)
            models.append(GPT(shape, vocab_size, context))
        return cls.from_models(models, device)

    def extract(self, k: int) -> GPT:
        """Model k as a plain, independent `GPT` on the same device (leaves the global RNG alone)."""
        with torch.random.fork_rng(devices=[]):
            model = GPT(self.shape, self.vocab_size, self.context)
        state: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for slot in self.slots:
                state.update(self._unstack_value(slot, self.params[slot.name][k]))
        model.load_state_dict(state)
        return model.to(self.device)

    # -- forward

    def _trunk(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (K, B, T) or (B, T) shared by all models -> residual stream (K, B*T, d)."""
        k, p = self.k, self.params
        d, h = self.shape.d_model, self.shape.n_heads
        if idx.dim() == 2:
            idx = idx.unsqueeze(0).expand(k, -1, -1)
        _, b, t = idx.shape
        x = p["embed"][self._model_index, idx].view(k, b * t, d)
        rope = self.rope[:t]
        for i in range(self.shape.n_layers):
            pre = f"blocks.{i}"
            qkv = ops.linear(ops.rms_normalize(x), ops.with_gain(p[f"{pre}.wqkv"], p[f"{pre}.attn_norm"]))
            q, kk, v = ops.rotary_split(qkv, rope, b, h)
            y = F.scaled_dot_product_attention(q, kk, v, is_causal=True)
            x = x + ops.linear(y.transpose(1, 2).reshape(k, b * t, d), p[f"{pre}.wo"])
            gate_up = ops.linear(ops.rms_normalize(x), ops.with_gain(p[f"{pre}.w_gate_up"], p[f"{pre}.mlp_norm"]))
            x = x + ops.linear(ops.swiglu(gate_up), p[f"{pre}.w_down"])
        return x

    def losses(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-model mean next-token loss, shape (K,). idx/targets: (K, B, T) or shared (B, T)."""
        x = ops.rms_normalize(self._trunk(idx))
        if targets.dim() == 2:
            targets = targets.unsqueeze(0).expand(self.k, -1, -1)
        head = ops.with_gain(self.params["head"], self.params["norm"])
        return ops.head_cross_entropy(x, head, targets.reshape(self.k, -1))


# ---------------------------------------------------------------- the stacked optimizer


class StackedAdamW:
    """AdamW over the flat (K, P) buffers: per-model decay, per-model grad-norm clip, shared LR.

    The arithmetic is PyTorch's single-tensor AdamW step, operation for operation:
    p *= 1 - lr*wd; m = lerp(m, g, 1-b1); v = b2 v + (1-b2) g^2;
    p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
    Coupled decay uses wd = decay; LR-independent decay wd = decay / peak lr (as `param_groups`).
    """

    def __init__(self, model: StackedGPT, configs: Sequence[RunConfig]):
        cfg = configs[0]
        self.model = model
        self.beta1, self.beta2, self.eps = cfg.beta1, cfg.beta2, 1e-8
        self.grad_clip = cfg.grad_clip
        wd = [c.decay if c.decay_mode == "coupled" else c.decay / c.lr for c in configs]
        self.weight_decay = torch.tensor(wd, dtype=torch.float64, device=model.device).view(-1, 1)
        self.decayed_cols = model.n_flat if cfg.decay_params == "all" else model.n_matrix
        self.exp_avg = torch.zeros_like(model.flat)
        self.exp_avg_sq = torch.zeros_like(model.flat)
        self.alive = torch.ones(model.k, 1, device=model.device)
        self.t = 0

    def step(self, lr: float, groups: Sequence[tuple[int, int]] = ()) -> None:
        """One AdamW step of every model; with `groups` (row ranges), one thread per group."""
        self.t += 1
        if len(groups) > 1:
            _map_threads(lambda rows: self._update(lr, slice(*rows)), groups)
        else:
            self._update(lr, slice(None))

    @torch.no_grad()
    def _update(self, lr: float, rows: slice) -> None:
        p, g = self.model.flat[rows], self.model.grad[rows]
        m, v, alive = self.exp_avg[rows], self.exp_avg_sq[rows], self.alive[rows]
        if self.grad_clip > 0:
            norms = torch.linalg.vector_norm(g, dim=1, keepdim=True)
            g.mul_((self.grad_clip / (norms + 1e-6)).clamp_(max=1.0) * alive)
        else:
            g.mul_(alive)
        shrink = (1.0 - lr * self.weight_decay[rows]).to(p.dtype)
        if self.decayed_cols == p.shape[1]:
            p.mul_(shrink)
        elif self.decayed_cols:
            p[:, :self.decayed_cols].mul_(shrink)
        m.lerp_(g, 1 - self.beta1)
        v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
        step_size = lr / (1 - self.beta1 ** self.t)
        denom = (v.sqrt() / math.sqrt(1 - self.beta2 ** self.t)).add_(self.eps)
        p.addcdiv_(m, denom, value=-step_size)

    @torch.no_grad()
    def kill(self, k: int) -> None:
        """Freeze model k at all-zero weights and state: finite forever, invisible to the others."""
        for buf in (self.model.flat, self.model.grad, self.exp_avg, self.exp_avg_sq):
            buf[k].zero_()
        self.alive[k] = 0.0
        self.weight_decay[k] = 0.0


# ---------------------------------------------------------------- training


def _group_bounds(k: int, device: torch.device, compile: bool) -> list[tuple[int, int]]:
    """Split K models into one contiguous group per CPU thread.

    On CPU the models are independent work, so each group runs forward and backward on its own
    thread with single-threaded kernels: two cores then do two models' work at once, instead of
    splitting every small kernel in two (OpenMP), which scales poorly at these sizes and collapses
    when the machine is shared. One group (the stacked model as a whole) on GPU, with compile,
    or with one thread."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or compile or threads <= 1 or k <= 1:
        return [(0, k)]
    groups = min(k, threads)
    edges = [round(i * k / groups) for i in range(groups + 1)]
    return list(zip(edges[:-1], edges[1:]))


_POOL: Any = None
_POOL_SIZE = 0


def _map_threads(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """fn over items, one item per thread, kernels single-threaded inside (see `_group_bounds`)."""
    global _POOL, _POOL_SIZE
    if len(items) == 1:
        return [fn(items[0])]
    from concurrent.futures import ThreadPoolExecutor

    if _POOL is None or _POOL_SIZE < len(items):
        if _POOL is not None:
            _POOL.shutdown(wait=False)
        _POOL, _POOL_SIZE = ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="scaling-batched"), len(items)

    def single_threaded(item: Any) -> Any:
        if torch.get_num_threads() != 1:  # per thread; the caller's setting is untouched
            torch.set_num_threads(1)
        return fn(item)

    return list(_POOL.map(single_threaded, items))


@dataclass
class BatchedResult(PretrainResult):
    """A `PretrainResult` (model may be None) plus the divergence, if this model diverged."""

    error: TrainingDiverged | None = None


class StackedRun:
    """K models in training: stacked model, optimizer, data, liveness, curves.

    The unit the batched trainer and the cooldown branches (scaling.cooldown) share. `clone()`
    copies weights and optimizer state, so a branch can continue from any step.
    """

    def __init__(self, configs: Sequence[RunConfig], train_tokens: np.ndarray, vocab_size: int,
                 device: torch.device, compile: bool = False, split: bool = True):
        from scaling.data.tokens import Batches

        check_stackable(configs)
        self.configs = list(configs)
        cfg = self.configs[0]
        self.device, self.vocab_size, self.train_tokens = device, vocab_size, train_tokens
        if device.type == "cpu":
            tune_cpu_allocator()
        self.shape = model_shape(cfg)
        self.k = len(self.configs)
        seeds = [c.seed for c in self.configs]
        self.model = StackedGPT.from_seeds(self.shape, vocab_size, cfg.context, seeds, device)
        self.optimizer = StackedAdamW(self.model, self.configs)
        self.shared_data = len(set(seeds)) == 1
        self.batches = [Batches(train_tokens, cfg.batch_size, cfg.context, s)
                        for s in (seeds[:1] if self.shared_data else seeds)]
        self.errors: list[TrainingDiverged | None] = [None] * self.k
        self.curves: list[list[dict[str, Any]]] = [[] for _ in range(self.k)]
        self.recent: list[list[float]] = [[] for _ in range(self.k)]
        self.autocast = autocast_dtype(device)
        self.compile = compile
        self.split = split  # False: one group, even on several threads (a caller runs the groups)
        self.readback = LossReadback(readback_interval(device))
        self._set_model(self.model)

    def _set_model(self, model: StackedGPT) -> None:
        """Use `model`, split into one group of models per CPU thread (see `_group_bounds`)."""
        self.model = model
        bounds = _group_bounds(model.k, self.device, self.compile) if self.split else [(0, model.k)]
        self.groups = [(a, b, model if b - a == model.k else model.rows(a, b)) for a, b in bounds]
        self._losses = torch.compile(model.losses, dynamic=False) if self.compile else model.losses

    @property
    def any_alive(self) -> bool:
        return any(e is None for e in self.errors)

    def batch(self, step: int) -> torch.Tensor:
        """(B, T+1) shared by all models, or (K, B, T+1) when seeds differ."""
        arrays = [b.get(step) for b in self.batches]
        array = arrays[0] if self.shared_data else np.stack(arrays)
        return torch.from_numpy(array).to(self.device, non_blocking=True)

    def _forward_backward(self, model: StackedGPT, losses_fn: Callable[..., torch.Tensor],
                          batch: torch.Tensor) -> torch.Tensor:
        # zeroed here, on the group's own thread: an (K, P) fill on the calling thread would
        # start OpenMP workers that then spin on the cores the groups run on
        model.grad.zero_()
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            losses = losses_fn(batch[..., :-1], batch[..., 1:])
        losses.sum().backward()
        return losses.detach()

    def train_step(self, step: int, lr: float) -> list[tuple[int, list[float]]]:
        """One optimizer step of every live model at learning rate `lr`.

        Returns the (step, K losses) pairs read back from the device by this call: every step on
        CPU, every `readback_interval` steps elsewhere (see `sync`)."""
        batch = self.batch(step)
        if len(self.groups) == 1:
            losses = self._forward_backward(self.model, self._losses, batch)
        else:
            parts = [(model, model.losses, batch if self.shared_data else batch[a:b]) for a, b, model in self.groups]
            losses = torch.cat(_map_threads(lambda part: self._forward_backward(*part), parts))
        # read before the update, so on CPU a model that just diverged is frozen before it steps
        pairs = self._absorb(self.readback.add(step, losses))
        self.optimizer.step(lr, [(a, b) for a, b, _ in self.groups])
        return pairs

    def sync(self) -> list[tuple[int, list[float]]]:
        """Read back and check every loss still on the device (before evaluations and branching)."""
        return self._absorb(self.readback.flush())

    def _absorb(self, pairs: list[tuple[int, list[float]]]) -> list[tuple[int, list[float]]]:
        """Check read-back losses; a model that diverged is frozen (`StackedAdamW.kill`). On a GPU
        that happens up to `readback_interval - 1` steps late: its own row may hold non-finite
        values meanwhile, which nothing mixes into the other models' rows."""
        for step, values in pairs:
            for k, value in enumerate(values):
                if self.errors[k] is None:
                    try:
                        check_finite(value, step, self.vocab_size)
                    except TrainingDiverged as exc:
                        self.errors[k] = exc
                        self.optimizer.kill(k)
                        continue
                    self.recent[k].append(value)
        return pairs

    @torch.no_grad()
    def evaluate(self, windows: np.ndarray, batch_size: int = 32) -> list[float]:
        """Per-model mean loss over windows (n, T+1) shared, or (K, n, T+1) per model; chunked as
        `train.evaluate_loss` does, so each model's number equals what it would report alone."""
        shared = windows.ndim == 2
        n = windows.shape[0] if shared else windows.shape[1]

        def group_totals(group: tuple[int, int, StackedGPT]) -> torch.Tensor:
            a, b, model = group
            total = torch.zeros(b - a, dtype=torch.float64)
            for start in range(0, n, batch_size):
                chunk = windows[start:start + batch_size] if shared else windows[a:b, start:start + batch_size]
                x = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.int64)).to(self.device)
                with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
                    losses = model.losses(x[..., :-1], x[..., 1:])
                total += losses.double().cpu() * chunk.shape[-2]
            return total

        total = torch.cat(_map_threads(group_totals, self.groups))
        return (total / max(n, 1)).tolist()

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

    def clone(self) -> "StackedRun":
        """An independent copy (weights, optimizer state, liveness, curves) to branch from."""
        self.sync()
        other = StackedRun.__new__(StackedRun)
        other.__dict__.update(self.__dict__)
        model = StackedGPT(self.shape, self.vocab_size, self.configs[0].context, self.k, self.device)
        with torch.no_grad():
            model.flat.copy_(self.model.flat)
        other._set_model(model)
        opt = StackedAdamW.__new__(StackedAdamW)
        opt.__dict__.update(self.optimizer.__dict__)
        opt.model = model
        for name in ("exp_avg", "exp_avg_sq", "alive", "weight_decay"):
            setattr(opt, name, getattr(self.optimizer, name).clone())
        other.optimizer = opt
        other.readback = LossReadback(self.readback.every)
        other.errors = list(self.errors)
        other.curves = [list(c) for c in self.curves]
        other.recent = [list(r) for r in self.recent]
        return other

    def results(self, configs: Sequence[RunConfig], steps: int, n_tokens: int, train_time: float,
                val_windows: np.ndarray, extra: dict[str, Any] | None = None,
                k_total: int | None = None) -> list[BatchedResult]:
        """Final evaluation and one `BatchedResult` per model (metrics as `pretrain` reports).
        `k_total`: the models trained side by side in all (this run may be one group of them)."""
        self.sync()
        k_total = k_total or self.k
        cfg = configs[0]
        val = self.evaluate(val_windows)
        train = self.evaluate(self.seen_windows(steps, cfg.batch_tokens, cfg.eval_tokens))
        out = []
        for k, c in enumerate(configs):
            if self.errors[k] is None:
                try:
                    check_finite(val[k], steps, self.vocab_size, "evaluation")
                except TrainingDiverged as exc:
                    self.errors[k] = exc
            metrics = pretrain_metrics(c, self.shape, self.vocab_size, steps, n_tokens, len(self.train_tokens),
                                       val[k], train[k], train_time, self.device)
            metrics["batch_models"] = k_total
            metrics["batch_tokens_per_s"] = k_total * n_tokens / train_time
            metrics.update(extra or {})
            error = self.errors[k]
            if error is not None:
                metrics.update({"val_loss": math.nan, "train_loss": math.nan, "gap": math.nan,
                                "error": str(error), "diverged_step": error.step, "diverged_phase": error.phase})
            model = self.model.extract(k) if error is None else None
            out.append(BatchedResult(model=model, metrics=metrics, curve=self.curves[k], error=error))
        return out


def pretrain_batched(configs: Sequence[RunConfig], train_tokens: np.ndarray, val_tokens: np.ndarray,
                     vocab_size: int, progress: bool = False, device: torch.device | None = None,
                     compile: bool = False,
                     on_step: Callable[[int, list[float]], None] | None = None) -> list[BatchedResult]:
    """Train one model per config together; configs may differ only in decay and seed.

    Returns one `BatchedResult` per config, in order: the same metrics dict `pretrain` returns
    (with `tokens_per_s` per model and `batch_tokens_per_s` for all K together; `train_s` is the
    shared wall time), the curve, and the trained model as a plain `GPT` (None if it diverged;
    see the module docstring). `compile=True` wraps the forward in `torch.compile`.

    On several CPU threads each group of models (`_group_bounds`) is trained start to finish on
    its own thread: groups are independent, so they need not wait for each other at every step
    (on a shared machine one late thread would stall both twice a step). `on_step(step, losses)`
    is then called once all groups are done, in step order; otherwise as losses are read back.
    """
    from scaling.data.tokens import eval_windows

    check_stackable(configs)
    cfg = configs[0]
    device = device or resolve_device(cfg.device)
    steps, n_tokens = token_budget(cfg, non_embedding_params(model_shape(cfg)))
    val_windows = eval_windows(val_tokens, cfg.eval_tokens, cfg.context)
    bar = _progress_bar(progress, steps, f"pretrain {cfg.size or model_shape(cfg).d_model} x{len(configs)}")
    groups = _group_bounds(len(configs), device, compile)

    # built here, one after the other: model init seeds the global RNG (`StackedGPT.from_seeds`)
    runs = [StackedRun(configs[a:b], train_tokens, vocab_size, device, compile=compile, split=False)
            for a, b in groups]

    if len(runs) == 1:
        (run,) = runs
        train_time = _train_steps(run, steps, val_windows, on_step or (lambda step, losses: None), bar)
        results = run.results(configs, steps, n_tokens, train_time, val_windows)
    else:
        logs: list[list[tuple[int, list[float]]]] = [[] for _ in runs]
        times = _map_threads(lambda i: _train_steps(runs[i], steps, val_windows,
                                                    lambda step, losses: logs[i].append((step, losses)),
                                                    bar if i == 0 else None), range(len(runs)))
        # the groups ran side by side: the batch took as long as its slowest group
        train_time = max(times)
        results = []
        for (a, b), run in zip(groups, runs):
            results += run.results(configs[a:b], steps, n_tokens, train_time, val_windows, k_total=len(configs))
        if on_step is not None:
            by_step: dict[int, list[float]] = {}
            for log in logs:
                for step, losses in log:
                    by_step.setdefault(step, []).extend(losses)
            for step in sorted(by_step):
                on_step(step, by_step[step])
    if bar is not None:
        bar.close()
    return results


def _train_steps(run: StackedRun, steps: int, val_windows: np.ndarray,
                 on_step: Callable[[int, list[float]], None], bar) -> float:
    """The pretraining loop of one StackedRun; returns its training time (evaluations excluded)."""
    cfg = run.configs[0]
    curve_val = val_windows[: max(1, len(val_windows) // 4)]
    eval_every = cfg.eval_every or max(1, steps // 10)
    eval_time = 0.0
    start = time.perf_counter()
    for step in range(steps):
        mult = lr_multiplier(step, steps, cfg.schedule, cfg.warmup_frac, cfg.final_lr_frac, cfg.cooldown_frac)
        pairs = run.train_step(step, cfg.lr * mult)
        at_eval = (step + 1) % eval_every == 0 or step == steps - 1
        if at_eval:
            pairs += run.sync()
        for done, losses in pairs:
            on_step(done, losses)
        if at_eval:
            eval_start = time.perf_counter()
            run.record_curve(step + 1, (step + 1) * cfg.batch_tokens, cfg.lr * mult, curve_val)
            eval_time += time.perf_counter() - eval_start
        if bar is not None:
            bar.update(1)
        if not run.any_alive:
            break
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start - eval_time


def _progress_bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False)


def run_pipeline_batched(configs: Sequence[RunConfig], progress: bool = False,
                         compile: bool = False) -> list[dict[str, Any]]:
    """`scaling.pipeline.run_pipeline` for K configs at once: pretrain them stacked, then probe
    and fine-tune each extracted model exactly as `run_pipeline` does.

    Returns one metrics dict per config, in order, with `run_pipeline`'s keys. A model that
    diverged does not raise: its dict has `error` (the message), `diverged_step`,
    `diverged_phase`, NaN losses, no fine-tuning keys, and `curve`. A divergence during
    fine-tuning of one model is recorded the same way (phase "fine-tuning on <task>").
    `wall_s` is the shared pretraining time divided by K plus this model's own probe and
    fine-tuning time.
    """
    from scaling.data.tokens import load_pretrain_data

    check_stackable(configs)
    cfg = configs[0]
    device = resolve_device(cfg.device)
    data = load_pretrain_data(cfg.corpus, cfg.tokenizer)
    start = time.perf_counter()
    results = pretrain_batched(configs, data.train, data.val, data.tokenizer.vocab_size, progress=progress,
                               device=device, compile=compile)
    share = (time.perf_counter() - start) / len(configs)
    return [finish_pipeline(c, result, data, device, share) for c, result in zip(configs, results)]


def finish_pipeline(cfg: RunConfig, result: BatchedResult, data: Any, device: torch.device,
                    pretrain_share: float) -> dict[str, Any]:
    """The rest of `run_pipeline` for one model of a stacked run: probes and fine-tuning
    (`scaling.pipeline.evaluate_pretrained`), or, for a model that diverged in pretraining or
    diverges in fine-tuning, its pretraining metrics with `error`, `diverged_step`,
    `diverged_phase` and `curve` instead of a raise. `wall_s` counts `pretrain_share` (this
    model's part of the shared pretraining time) plus its own time here."""
    from scaling.pipeline import evaluate_pretrained

    own_start = time.perf_counter() - pretrain_share
    if result.error is None:
        try:
            return evaluate_pretrained(cfg, result, data, device, own_start)
        except TrainingDiverged as exc:
            result.metrics.update({"error": str(exc), "diverged_step": exc.step, "diverged_phase": exc.phase})
    metrics = dict(result.metrics)
    metrics["wall_s"] = time.perf_counter() - own_start
    metrics["curve"] = result.curve
    return metrics
