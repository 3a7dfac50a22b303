"""Model shapes, the size ladder, and parameter and FLOP counts (no torch).

Ladder rule (stated once, applied to every rung): head_dim = 16 for d_model <= 64, else 32;
n_layers = max(1, round(d_model / 32)); d_ff = 8/3 * d_model rounded up to a multiple of 16
(SwiGLU keeps the MLP's parameter count at 8 d_model^2, as Llama does). The rung's name is its
non-embedding parameter count, rounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scaling.errors import ConfigError


@dataclass(frozen=True)
class ModelShape:
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError(f"n_heads: d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
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


def rung_name(n_params: int) -> str:
    """A ladder rung's name from its non-embedding parameter count: 13408 -> '13k', 1.2e6 -> '1.2m'."""
    if n_params >= 1_000_000:
        value = n_params / 1e6
        return f"{value:.1f}m".replace(".0m", "m") if value < 10 else f"{round(value)}m"
    return f"{round(n_params / 1e3)}k"


LADDER_WIDTHS = (32, 48, 64, 96, 128, 192, 256, 320)
LADDER: dict[str, ModelShape] = {rung_name(non_embedding_params(s)): s for s in map(ladder_shape, LADDER_WIDTHS)}
