"""A small Llama-style decoder and its size ladder.

RMSNorm, rotary position embeddings, SwiGLU MLP, no biases, causal attention through
`scaled_dot_product_attention`, untied input embedding and output head (as in Llama-2, the
architecture of Han et al. 2026).

Ladder rule (stated once, applied to every rung): head_dim = 16 for d_model <= 64, else 32;
n_layers = max(1, round(d_model / 32)); d_ff = 8/3 * d_model rounded up to a multiple of 16
(SwiGLU keeps the MLP's parameter count at 8 d_model^2, as Llama does). The rung's name is its
non-embedding parameter count, rounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class ModelShape:
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            from scaling.errors import ConfigError

            raise ConfigError(
                f"n_heads: d_model {self.d_model} is not divisible by n_heads {self.n_heads}"
            )
        if (self.d_model // self.n_heads) % 2:
            from scaling.errors import ConfigError

            raise ConfigError(f"n_heads: head dimension {self.d_model // self.n_heads} must be even (rotary)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def ladder_shape(d_model: int, n_layers: int | None = None, n_heads: int | None = None,
                 d_ff: int | None = None) -> ModelShape:
    """Apply the ladder rule to `d_model`, keeping any explicit override."""
    head_dim = 16 if d_model <= 64 else 32
    return ModelShape(
        d_model=d_model,
        n_layers=n_layers if n_layers is not None else max(1, round(d_model / 32)),
        n_heads=n_heads if n_heads is not None else max(1, d_model // head_dim),
        d_ff=d_ff if d_ff is not None else 16 * math.ceil(8 * d_model / 3 / 16),
    )


_LADDER_WIDTHS = (32, 48, 64, 96, 128, 192, 256, 320)


def non_embedding_params(shape: ModelShape) -> int:
    """Hand count: per block 4 d^2 (attention) + 3 d d_ff (SwiGLU) + 2 d (two RMSNorm gains),
    plus the final RMSNorm gain. Embedding and output head are excluded (Kaplan et al. 2020)."""
    d = shape.d_model
    per_block = 4 * d * d + 3 * d * shape.d_ff + 2 * d
    return shape.n_layers * per_block + d


def total_params(shape: ModelShape, vocab_size: int) -> int:
    """Non-embedding parameters plus the (untied) input embedding and output head."""
    return non_embedding_params(shape) + 2 * vocab_size * shape.d_model


def train_flops_per_token(shape: ModelShape, vocab_size: int, context: int) -> float:
    """Training FLOPs per token: 6N for the weights (N = non-embedding params plus the output
    head, whose matmul is real work at these tiny sizes) plus the attention term
    6 * n_layers * context * d_model (forward 2 * n_layer * n_ctx * d_attn, Kaplan et al. 2020,
    times 3 for forward + backward)."""
    n = non_embedding_params(shape) + vocab_size * shape.d_model
    return 6.0 * n + 6.0 * shape.n_layers * context * shape.d_model


def _name(n: int) -> str:
    if n >= 1_000_000:
        value = n / 1e6
        return f"{value:.1f}m".replace(".0m", "m") if value < 10 else f"{round(value)}m"
    return f"{round(n / 1e3)}k"


LADDER: dict[str, ModelShape] = {}
for _w in _LADDER_WIDTHS:
    _shape = ladder_shape(_w)
    LADDER[_name(non_embedding_params(_shape))] = _shape


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.float().pow(2).mean(-1, keepdim=True).add(self.eps).rsqrt()
        return (x.float() * norm).type_as(x) * self.weight


def rotary_tables(context: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(context, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :h/2], x[..., h/2:]) by position-dependent angles (the GPT-NeoX /
    Llama half-split convention). x: (batch, heads, time, head_dim)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos = cos[: x.shape[-2]].to(x.dtype)
    sin = sin[: x.shape[-2]].to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Attention(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        d = shape.d_model
        self.n_heads = shape.n_heads
        self.wq = nn.Linear(d, d, bias=False)
        self.wk = nn.Linear(d, d, bias=False)
        self.wv = nn.Linear(d, d, bias=False)
        self.wo = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.n_heads
        q = self.wq(x).view(b, t, h, d // h).transpose(1, 2)
        k = self.wk(x).view(b, t, h, d // h).transpose(1, 2)
        v = self.wv(x).view(b, t, h, d // h).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.w_gate = nn.Linear(shape.d_model, shape.d_ff, bias=False)
        self.w_up = nn.Linear(shape.d_model, shape.d_ff, bias=False)
        self.w_down = nn.Linear(shape.d_ff, shape.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.attn_norm = RMSNorm(shape.d_model)
        self.attn = Attention(shape)
        self.mlp_norm = RMSNorm(shape.d_model)
        self.mlp = SwiGLU(shape)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    def __init__(self, shape: ModelShape, vocab_size: int, context: int):
        super().__init__()
        self.shape = shape
        self.vocab_size = vocab_size
        self.context = context
        self.embed = nn.Embedding(vocab_size, shape.d_model)
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.n_layers))
        self.norm = RMSNorm(shape.d_model)
        self.head = nn.Linear(shape.d_model, vocab_size, bias=False)
        cos, sin = rotary_tables(context, shape.head_dim)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2 style: scale the residual-stream output projections by depth.
        for name, p in self.named_parameters():
            if name.endswith("wo.weight") or name.endswith("w_down.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * shape.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        """Final normalised hidden states, (batch, time, d_model)."""
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, self.rope_cos, self.rope_sin)
        return self.norm(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.head(self.hidden_states(idx))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                               ignore_index=ignore_index)
        return logits, loss
