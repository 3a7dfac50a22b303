"""Where a trial's time goes: an opt-in clock for the pipeline's phases (pretrain, probes,
fine-tune, score), read by `scaling bench --unit`. Off unless `recording()` is active; on a GPU
each phase boundary then synchronises the device, so only the bench pays for it."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

PHASES = ("pretrain", "probes", "fine-tune", "score")

_clock: dict[str, float] | None = None


def _sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the time inside to phase `name` while a `recording()` is active."""
    if _clock is None:
        yield
        return
    _sync()
    start = time.perf_counter()
    try:
        yield
    finally:
        _sync()
        if _clock is not None:
            _clock[name] += time.perf_counter() - start


@contextmanager
def recording() -> Iterator[dict[str, float]]:
    """Seconds per phase of everything run inside (not re-entrant)."""
    global _clock
    _clock = defaultdict(float)
    try:
        yield _clock
    finally:
        _clock = None
