"""Numbers as short labels and back: the one shortener for tables, figures and names, and the
one parser of "1.5B"-style amounts (no torch)."""

from __future__ import annotations

import math
import re

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


_AMOUNT = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMbBgGtTpP]?)\s*")
_AMOUNT_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15}


def parse_amount(text: str) -> float:
    """'1e9', '300k', '1.5B', '20M', '2T' -> float (k, M, B/G, T, P; case-insensitive); ValueError
    unless the result is a positive finite number."""
    match = _AMOUNT.fullmatch(str(text))
    if not match:
        raise ValueError(f"expected a positive number such as 1e9, 300k or 1.5B, got {text!r}")
    value = float(match.group(1)) * _AMOUNT_UNITS[match.group(2).lower()]
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"expected a positive number, got {text!r}")
    return value
