"""Small value checks and conversions shared by the study modules."""

from __future__ import annotations

import math
from typing import Any


def is_finite_number(x: Any) -> bool:
    """An int or float (not a bool) that is finite."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def jsonable(value: Any) -> Any:
    """Optuna stores user attrs as JSON: numpy scalars and tuples become plain values."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return value
