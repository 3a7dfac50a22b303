"""Coverage of the fit layer's 90% intervals over simulated studies at the measured noise.

    python benchmarks/coverage_fit.py [N_STUDIES] [SEEDS] [SHAPE]

SHAPE "grid" (default): 4 sizes x 3 TPPs; "quickstart": 3 sizes x 2 TPPs (the measured
quickstart's cells); both search 7 taus + decay 0 per cell.

Each study is scaling.fit.simulate's plateau+wall truth (per-trial sd 0.02 val_loss, 0.03
ft_score, seed effects shared across a cell's decays, per-cell tau grids so some optima are
censored, known laws), fitted as `scaling fit` fits it. Printed: how often the per-cell decay*
and decay_tol intervals (one-sided for censored cells) and the decay law's prediction interval
for a new cell 4x beyond the largest N cover the truth. docs/fitting.md records the figures.
"""

from __future__ import annotations

import sys
import time

from scaling.fit.simulate import coverage


SHAPES = {
    "grid": {},
    "quickstart": {"n_params": (1.3e4, 5.6e4, 1e5), "tpp": (5.0, 20.0)},
}


def main(n_studies: int = 200, seeds: int = 3, shape: str = "grid") -> None:
    start = time.perf_counter()
    result = coverage(n_studies, seeds=seeds, **SHAPES[shape])
    print(f"{n_studies} simulated studies ({shape}), {seeds} seeds per decay, 90% intervals "
          f"({time.perf_counter() - start:.0f} s):")  # fmt: skip
    for line in result.lines():
        print("  " + line)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(*(int(a) for a in args[:2]), *args[2:3])
