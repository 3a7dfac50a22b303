"""K `GPT`s of one shape as one model with a leading model axis, and their AdamW.

All of model k's parameters live in row k of one flat (K, P) buffer; each named parameter is a
leaf tensor viewing its columns, and its `.grad` views the same columns of a flat gradient
buffer, so the optimizer is a few vectorised operations on (K, P) tensors: per-model grad norm
is a row norm, per-model decay a (K, 1) factor. Matrices come first in the row and the RMSNorm
gains last, so `decay_params="matrices"` decays a column prefix. Attention's wq/wk/wv and the
MLP's gate/up are stored fused, W_Q and W_K with each head's rows reordered so rotary is one
complex product, and RMSNorm gains are folded into the following weight; `extract(k)` undoes all
of it into a plain `GPT`. Nothing mixes models: every product, norm and reduction is per model.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from scaling.config import RunConfig
from scaling.core.shapes import ModelShape
from scaling.train import stacked_ops as ops
from scaling.train.model import GPT, rotary_tables
from scaling.train.threads import map_threads

# The gradient buffers deliberately view a strided (K, P) buffer; autograd warns that such a
# layout "may impair performance" of grad stealing, which we never rely on (we accumulate in place).
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")

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
    x^T @ dy for the weight gradient are then the fast orientation of a batched product on CPU."""
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
        self.rope_real = ops.real_rope(self.rope)  # the same table for torch.compile (no complex codegen)
        self.real_rotary = False  # True: rotate with the real table in eager mode too
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
        real = self.real_rotary or torch.compiler.is_compiling()
        rope = (self.rope_real if real else self.rope)[:t]
        for i in range(self.shape.n_layers):
            pre = f"blocks.{i}"
            qkv = ops.linear(ops.rms_normalize(x), ops.with_gain(p[f"{pre}.wqkv"], p[f"{pre}.attn_norm"]))
            q, kk, v = ops.rotary_split(qkv, rope, b, h)
            y = F.scaled_dot_product_attention(q, kk, v, is_causal=True)
            x = x + ops.linear(y.transpose(1, 2).reshape(k, b * t, d), p[f"{pre}.wo"])
            gate_up = ops.linear(ops.rms_normalize(x), ops.with_gain(p[f"{pre}.w_gate_up"], p[f"{pre}.mlp_norm"]))
            x = x + ops.linear(ops.swiglu(gate_up), p[f"{pre}.w_down"])
        return x

    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        """Final normalised hidden states (K, B, T, d), as `GPT.hidden_states` gives each model."""
        k, (b, t) = self.k, idx.shape[-2:]
        x = ops.rms_normalize(self._trunk(idx)) * self.params["norm"].unsqueeze(1)
        return x.view(k, b, t, self.shape.d_model)

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-token logits (K, B, T, V). idx: (K, B, T) or shared (B, T)."""
        k, (b, t) = self.k, idx.shape[-2:]
        head = ops.with_gain(self.params["head"], self.params["norm"])
        return ops.linear(ops.rms_normalize(self._trunk(idx)), head).view(k, b, t, self.vocab_size)

    def masked_losses(self, idx: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
        """Per-model mean loss (K,) over the targets (K, B, T) that are not `ignore_index`, as
        `GPT.forward` computes it for each model."""
        logits = self.logits(idx).float()
        if targets.dim() == 2:
            targets = targets.unsqueeze(0).expand(self.k, -1, -1)
        per_token = F.cross_entropy(logits.view(-1, self.vocab_size), targets.reshape(-1),
                                    ignore_index=ignore_index, reduction="none").view(self.k, -1)
        counts = (targets != ignore_index).reshape(self.k, -1).sum(1).clamp(min=1)
        return per_token.sum(1) / counts

    def copy_rows(self, rows: Sequence[int] | None = None) -> "StackedGPT":
        """An independent copy of models `rows` (all by default), with zeroed gradients."""
        flat = self.flat.detach().clone() if rows is None else self.flat.detach()[list(rows)].clone()
        return StackedGPT(self.shape, self.vocab_size, self.context, flat.shape[0], self.device, flat=flat)

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
        wd = [c.decay if c.decay_mode == "coupled" else c.decay / c.lr for c in configs]
        self._setup(model, wd, (cfg.beta1, cfg.beta2), cfg.grad_clip, cfg.decay_params == "all")

    @classmethod
    def plain(cls, model: StackedGPT, weight_decay: float, betas: tuple[float, float], grad_clip: float,
              ) -> "StackedAdamW":
        """torch.optim.AdamW(params, betas=betas, weight_decay=weight_decay) on every parameter of
        every model, with each model's gradient clipped to norm `grad_clip` (0: none)."""
        opt = cls.__new__(cls)
        opt._setup(model, [weight_decay] * model.k, betas, grad_clip, True)
        return opt

    def _setup(self, model: StackedGPT, weight_decay: Sequence[float], betas: tuple[float, float],
               grad_clip: float, decay_all: bool) -> None:
        self.model = model
        self.beta1, self.beta2, self.eps = betas[0], betas[1], 1e-8
        self.grad_clip = grad_clip
        self.weight_decay = torch.tensor(list(weight_decay), dtype=torch.float64, device=model.device).view(-1, 1)
        self.decayed_cols = model.n_flat if decay_all else model.n_matrix
        self.exp_avg = torch.zeros_like(model.flat)
        self.exp_avg_sq = torch.zeros_like(model.flat)
        self.alive = torch.ones(model.k, 1, device=model.device)
        self.t = 0

    def step(self, lr: float, groups: Sequence[tuple[int, int]] = ()) -> None:
        """One AdamW step of every model; with `groups` (row ranges), one thread per group."""
        self.t += 1
        if len(groups) > 1:
            map_threads(lambda rows: self._update(lr, slice(*rows)), groups)
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


