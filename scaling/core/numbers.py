"""Numbers as short labels: the one shortener for tables, figures and names (no torch)."""

from __future__ import annotations

import math

_SCALES = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))


def human(x: float) -> str:
    """12000 -> '12k', 3.4e9 -> '3.4B', three significant digits (for labels and tables, not parsing)."""
    if not math.isfinite(x):
        return str(x)
    for scale, suffix in _SCALES:
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def short_count(n: int) -> str:
    """20000 -> '20k', 1500000 -> '1.5M', exact or not at all: the plain number when a suffix
    would round (for names that must identify a count)."""
    for unit, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if n >= unit:
            text = f"{n / unit:g}"
            if "e" not in text and round(float(text) * unit) == n:
                return text + suffix
    return str(n)
