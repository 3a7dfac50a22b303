"""The study layer's one door into the training code: every import from it is in this module.

The torch-free parts (RunConfig, the size ladder, token budgets) are imported at load time;
the trainers and torch only when a function here is called.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from scaling.config import MAX_SEED, RunConfig, model_shape, token_budget
from scaling.core.shapes import LADDER, ModelShape, non_embedding_params

__all__ = ["MAX_SEED", "RunConfig", "check_inputs", "check_stackable", "cuda_device_count",
           "ladder_sizes", "pretraining_compute", "run_branches", "run_one",
           "run_stack", "set_threads", "shape_keys", "trained_tokens"]


def ladder_sizes() -> tuple[str, ...]:
    """The names of the model size ladder, smallest first."""
    return tuple(LADDER)


def shape_keys() -> tuple[str, ...]:
    """RunConfig's explicit-shape fields (d_model, n_layers, ...): those a ModelShape has too."""
    shape = {f.name for f in fields(ModelShape)}
    return tuple(f.name for f in fields(RunConfig) if f.name in shape)


def trained_tokens(config: RunConfig) -> int:
    """The tokens a run of `config` pretrains on (its budget rounded to whole steps)."""
    return token_budget(config, non_embedding_params(model_shape(config)))[1]


def pretraining_compute(config: RunConfig) -> int:
    """Non-embedding parameters x trained tokens: a run's pretraining FLOPs up to the factor 6."""
    return non_embedding_params(model_shape(config)) * trained_tokens(config)


def run_one(config: RunConfig) -> dict[str, Any]:
    """Pretrain, probe, fine-tune and score one model (`scaling.train.pipeline.run_pipeline`)."""
    from scaling.train.pipeline import run_pipeline

    return run_pipeline(config, progress=False)


def run_stack(configs: list[RunConfig], compile: bool = False) -> list[dict[str, Any]]:
    """`run_one` for K configs trained as one stacked model (`scaling.train.stacked`);
    `compile`: torch.compile its training step."""
    from scaling.train.pipeline import run_pipeline_batched

    return run_pipeline_batched(configs, progress=False, compile=compile)


def run_branches(configs: list[RunConfig], budgets: list[int], compile: bool = False) -> list[list[dict[str, Any]]]:
    """Metrics of every config at every budget (tokens) from one WSD run with a cooldown
    branch per budget (`scaling.train.cooldown`)."""
    from scaling.train.pipeline import run_pipeline_with_cooldowns

    return run_pipeline_with_cooldowns(configs, budgets, compile=compile)


def check_stackable(configs: Sequence[RunConfig]) -> None:
    """Raise ConfigError unless the configs differ only in decay and seed."""
    from scaling.train.stacked import check_stackable as check

    check(configs)


def check_inputs(configs: Sequence[RunConfig]) -> None:
    """Everything the configs' runs read, checked once before any trains (`scaling.train.preflight`)."""
    from scaling.train.preflight import check_inputs as check

    check(configs)


def cuda_device_count() -> int:
    """CUDA devices this process can see (0 without CUDA); does not initialise CUDA here."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def set_threads(threads: int) -> None:
    """Torch CPU threads for this process."""
    import torch

    torch.set_num_threads(threads)
