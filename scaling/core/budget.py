"""Token budgets in whole optimizer steps, warmup and cooldown lengths, and tau (no torch)."""

from __future__ import annotations

import math


def budget_steps(target_tokens: float, batch_tokens: int) -> tuple[int, int]:
    """(steps, n_tokens): `target_tokens` rounded to whole optimizer steps (at least one)."""
    steps = max(1, round(target_tokens / batch_tokens))
    return steps, steps * batch_tokens


def warmup_steps(steps: int, warmup_frac: float) -> int:
    return min(steps, round(warmup_frac * steps)) if warmup_frac > 0 else 0


def cooldown_steps(steps: int, cooldown_frac: float) -> int:
    """Steps in a WSD run's final (1 - sqrt) cooldown: at least one unless the fraction is 0."""
    return max(1, round(cooldown_frac * steps)) if cooldown_frac > 0 else 0


def tau(batch_tokens: int, lr: float, decay: float, n_tokens: int, decay_mode: str = "coupled") -> float:
    """EMA timescale of AdamW as a fraction of the run (Wang & Aitchison 2024; Bergsma et al.
    2025): tau = B / (lr * decay * D). With LR-independent decay the per-step shrink is `decay`
    itself, so tau = B / (decay * D). Infinite when decay is 0."""
    rate = decay if decay_mode == "independent" else lr * decay
    if rate == 0:
        return math.inf
    return batch_tokens / (rate * n_tokens)


def decay_for_tau(tau_value: float, batch_tokens: int, lr: float, n_tokens: int,
                  decay_mode: str = "coupled") -> float:
    """The weight decay whose timescale is `tau_value` (the inverse of `tau`); 0 for tau = inf."""
    if math.isinf(tau_value):
        return 0.0
    if not tau_value > 0:
        raise ValueError(f"tau must be > 0, got {tau_value!r}")
    rate = batch_tokens / (tau_value * n_tokens)
    return rate if decay_mode == "independent" else rate / lr
