"""Plain-text tables for `summary()` methods and the CLI: aligned columns, readable numbers."""

from __future__ import annotations

import math
from collections.abc import Sequence


def json_number(x) -> float | None:
    """A float for JSON: None for missing, NaN and infinities (JSON has no such numbers)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def fmt(x, digits: int = 4) -> str:
    """A number for a table: significant digits, '-' for missing, 'inf' spelled out."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, str):
        return x
    x = float(x)
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x != 0 and (abs(x) >= 1e6 or abs(x) < 1e-3):
        return f"{x:.{max(digits - 1, 1)}e}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")
    return f"{x:.{digits}g}"


def interval(low, high, digits: int = 3) -> str:
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "-"
    return f"[{fmt(low, digits)}, {fmt(high, digits)}]"


def table(headers: Sequence[str], rows: Sequence[Sequence], indent: str = "  ") -> str:
    """Columns padded to their widest cell; text left-aligned, numbers right-aligned."""
    cells = [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for j, c in enumerate(row):
            widths[j] = max(widths[j], len(c))
    numeric = [all(_looks_numeric(row[j]) for row in cells) and bool(cells) for j in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return (indent + "  ".join(parts)).rstrip()

    out = [line(list(headers)), indent + "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    return "\n".join(out)


def _looks_numeric(s: str) -> bool:
    if s in ("-", "inf", "-inf"):
        return True
    try:
        float(s)
        return True
    except ValueError:
        return False
