"""Learning-rate schedules as multipliers of the peak LR (no torch)."""

from __future__ import annotations

import math

from scaling.core.budget import cooldown_steps, warmup_steps
from scaling.errors import ConfigError


def wsd_multiplier(step: int, steps: int, warmup: int, cooldown: int, final_lr_frac: float) -> float:
    """Update `step` of a warmup-stable-decay run with warmup and cooldown lengths in steps: linear
    warmup, constant, then a (1 - sqrt) cooldown to `final_lr_frac` at the last step (Hagele et al.
    2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations")."""
    if step < warmup:
        return (step + 1) / warmup
    start = steps - cooldown
    if cooldown == 0 or step < start:
        return 1.0
    progress = (step - start + 1) / cooldown
    return final_lr_frac + (1 - final_lr_frac) * (1 - math.sqrt(min(progress, 1.0)))


def lr_multiplier(step: int, steps: int, schedule: str = "cosine", warmup_frac: float = 0.1,
                  final_lr_frac: float = 0.1, cooldown_frac: float = 0.2) -> float:
    """Multiplier of the peak LR for update `step` (0-based) of `steps`.

    cosine: linear warmup to 1, then cosine to `final_lr_frac` reached at the last step.
    wsd: `wsd_multiplier` with the run's own warmup and cooldown (`cooldown_frac` of the steps).
    """
    w = warmup_steps(steps, warmup_frac)
    if schedule == "wsd":
        return wsd_multiplier(step, steps, w, cooldown_steps(steps, cooldown_frac), final_lr_frac)
    if schedule != "cosine":
        raise ConfigError(f"schedule: expected cosine or wsd, got {schedule!r}")
    if step < w:
        return (step + 1) / w
    span = steps - w - 1
    progress = 1.0 if span <= 0 else (step - w) / span
    return final_lr_frac + (1 - final_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def mean_lr_multiplier(steps: int, schedule: str = "cosine", warmup_frac: float = 0.1,
                       final_lr_frac: float = 0.1, cooldown_frac: float = 0.2) -> float:
    """The schedule's mean multiplier of the peak LR over a run of `steps` updates."""
    total = sum(lr_multiplier(s, steps, schedule, warmup_frac, final_lr_frac, cooldown_frac) for s in range(steps))
    return total / max(1, steps)
