"""Typed, validated run configuration: one pretrain -> probe -> fine-tune run.

`RunConfig` is what a trial is: the study layer builds one per trial and hands it to
`scaling.train.pipeline.run_pipeline`. Validation happens in `__post_init__`, so an impossible
config never reaches the trainer; every message names the field and what was expected.
Free of torch: shapes and budgets come from `scaling.core`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from scaling.core.budget import budget_steps
from scaling.core.shapes import LADDER, ModelShape, ladder_shape
from scaling.errors import ConfigError

SCHEDULES = ("cosine", "wsd")
DECAY_MODES = ("coupled", "independent")
DECAY_PARAMS = ("all", "matrices")
DEVICES = ("auto", "cpu", "cuda", "mps")
DEFAULT_TPP = 20.0
# Upper bounds, so an absurd value is a one-line error here instead of an overflow or an
# out-of-memory crash minutes later (docs/studies.md, "Bounds"):
MAX_SEED = 2**32 - 1  # numpy and torch seeds are 32-bit
MAX_CONTEXT = 65536  # attention memory grows with context^2
MAX_BATCH_TOKENS = 2**22  # batch_size * context: activations and logits of one step scale with it
MAX_TOKENS = 10**13  # 10T tokens, far beyond any model this project trains
MAX_TPP = 1e6
MAX_EVAL_TOKENS = 2**30


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run. Model shape comes from the `size` ladder entry unless an
    explicit override (d_model, n_layers, n_heads, d_ff) is given."""

    size: str | None = "13k"
    d_model: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    d_ff: int | None = None
    context: int = 128

    decay: float = 0.1
    lr: float = 3e-3
    # Token budget: at most one of tokens / tpp (tpp is relative to non-embedding params);
    # neither means 20 tokens per parameter (Chinchilla's compute-optimal ratio).
    tokens: int | None = None
    tpp: float | None = None
    batch_size: int = 32  # sequences per optimizer step; batch_tokens = batch_size * context
    schedule: str = "cosine"
    warmup_frac: float = 0.1
    final_lr_frac: float = 0.1
    cooldown_frac: float = 0.2  # wsd only: fraction of steps in the (1-sqrt) cooldown
    decay_mode: str = "coupled"  # coupled: lr * decay (PyTorch AdamW); independent: decay alone
    decay_params: str = "all"  # all (as in the study) or matrices only
    grad_clip: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.95

    tasks: tuple[str, ...] = ("arithmetic", "code", "source")
    probes: bool = True
    seed: int = 0
    device: str = "auto"
    corpus: str | None = None  # None: the bundled corpus
    tokenizer: str = "byte"  # byte | bpe | bpe:<vocab_size>
    eval_tokens: int = 65536  # tokens for val_loss and for train_loss on seen tokens
    eval_every: int = 0  # steps between curve evaluations of val_loss; 0 picks ~10 points

    def __post_init__(self) -> None:
        _positive_int(self, "context", high=MAX_CONTEXT)
        _positive_int(self, "batch_size")
        if self.batch_size * self.context > MAX_BATCH_TOKENS:
            raise ConfigError(f"batch_size: expected batch_size x context <= {MAX_BATCH_TOKENS:,} tokens per step, "
                              f"got {self.batch_size} x {self.context} = {self.batch_size * self.context:,}")
        _positive_int(self, "eval_tokens", high=MAX_EVAL_TOKENS)
        _int_in(self, "seed", 0, MAX_SEED)
        _int_in(self, "eval_every", 0, None)
        for name in ("d_model", "n_layers", "n_heads", "d_ff"):
            if getattr(self, name) is not None:
                _positive_int(self, name)
        if self.size is None and (self.d_model is None or self.n_layers is None):
            raise ConfigError("size: give a ladder size or both d_model and n_layers")
        if self.size is not None:
            if self.size not in LADDER:
                raise ConfigError(
                    f"size: unknown size {self.size!r}; expected one of {', '.join(LADDER)}"
                )
        _finite(self, "decay", low=0.0)
        _finite(self, "lr", low=0.0, strict=True)
        _finite(self, "grad_clip", low=0.0)
        if self.tokens is None and self.tpp is None:
            object.__setattr__(self, "tpp", DEFAULT_TPP)
        if self.tokens is not None and self.tpp is not None:
            raise ConfigError("tokens/tpp: give one token budget, not both")
        if self.tokens is not None:
            _positive_int(self, "tokens", high=MAX_TOKENS)
        if self.tpp is not None:
            _finite(self, "tpp", low=0.0, high=MAX_TPP, strict=True)
        for name in ("warmup_frac", "final_lr_frac", "cooldown_frac"):
            _finite(self, name, low=0.0, high=1.0)
        for name in ("beta1", "beta2"):
            _finite(self, name, low=0.0, high=1.0)
        _choice(self, "schedule", SCHEDULES)
        _choice(self, "decay_mode", DECAY_MODES)
        _choice(self, "decay_params", DECAY_PARAMS)
        _choice(self, "device", DEVICES)
        if not isinstance(self.tasks, tuple):
            object.__setattr__(self, "tasks", tuple(self.tasks))
        if not (self.tokenizer == "byte" or self.tokenizer == "bpe" or self.tokenizer.startswith("bpe:")):
            raise ConfigError(f"tokenizer: expected 'byte', 'bpe' or 'bpe:<vocab size>', got {self.tokenizer!r}")

    @property
    def batch_tokens(self) -> int:
        return self.batch_size * self.context

    def replace(self, **changes: Any) -> "RunConfig":
        data = asdict(self)
        data.update(changes)
        return RunConfig(**data)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tasks"] = list(self.tasks)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown run setting; expected one of {', '.join(sorted(known))}")
        data = dict(data)
        if "tasks" in data and isinstance(data["tasks"], str):
            data["tasks"] = tuple(t for t in data["tasks"].split(",") if t)
        return cls(**data)


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
    """(steps, n_tokens): the config's budget (tokens, or tpp x n_params) in whole optimizer steps."""
    return budget_steps(cfg.tokens if cfg.tokens is not None else cfg.tpp * n_params, cfg.batch_tokens)


def _positive_int(cfg: RunConfig, name: str, high: int | None = None) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{name}: expected a positive integer <= {high:,}, got {value!r}")


def _int_in(cfg: RunConfig, name: str, low: int, high: int | None) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        upper = "" if high is None else f" and <= {high:,}"
        raise ConfigError(f"{name}: expected an integer >= {low}{upper}, got {value!r}")


def _finite(cfg: RunConfig, name: str, low: float | None = None, high: float | None = None,
            strict: bool = False) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}: expected a finite number, got {value!r}")
    if low is not None and (value < low or (strict and value == low)):
        op = ">" if strict else ">="
        raise ConfigError(f"{name}: expected a number {op} {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{name}: expected a number <= {high}, got {value!r}")


def _choice(cfg: RunConfig, name: str, options: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in options:
        raise ConfigError(f"{name}: expected one of {', '.join(options)}, got {value!r}")
