"""Coverage of `recommend`'s 90% intervals over simulated studies, at the measured noise.

    python benchmarks/coverage_recommend.py [N_STUDIES] [SHAPE] [CELL_SD]

SHAPE "quickstart" (default): the quickstart's design, 13k and 56k x 20 and 80 TPP, tau grid
{inf, 1, 0.5, 0.25, 0.125} shared by every cell (a timescale grid), 2 seeds; "ladder": 13k, 56k,
101k x 10, 20, 40 TPP, tau {inf, 2, 1, 0.5, 0.25, 0.125}, 3 seeds. CELL_SD: sd of a cell's
deviation from the true law in ln tau (default 0.3; the real quickstart's laws left 0.37-0.48
between cells, estimation error included).

Each study is scaling.fit.simulate's plateau+wall truth with plasticity = "nll" (per-trial sd
0.02 val_loss, 0.04 ft_nll, seed effects shared across a cell's decays); `recommend` is asked
for 4x the largest N at 20 TPP, exactly as `scaling run` asks, and each choice's interval is
checked against the truth of the estimand it reports (decay* of a fresh cell, or its decay_tol).
Prints coverage per choice and estimand, the median width and which laws carried it.
"""

from __future__ import annotations

import sys
import time

from scaling.fit.simulate import Truth, recommendation_coverage

SHAPES = {
    "quickstart": dict(n_params=(1.3e4, 5.6e4), tpp=(20.0, 80.0), taus=(1.0, 0.5, 0.25, 0.125), seeds=2),
    "ladder": dict(n_params=(1.3e4, 5.6e4, 1.01e5), tpp=(10.0, 20.0, 40.0), taus=(2.0, 1.0, 0.5, 0.25, 0.125), seeds=3),
}


def main(n_studies: int = 200, shape: str = "quickstart", cell_sd: float = 0.3) -> None:
    if shape not in SHAPES:
        raise SystemExit(f"coverage_recommend: SHAPE must be one of {', '.join(SHAPES)}, got {shape!r}")
    truth = Truth(cell_sd=cell_sd, grid_shift_sd=0.0)  # timescale grids: every cell searches the same taus
    start = time.perf_counter()
    result = recommendation_coverage(n_studies, truth, **SHAPES[shape])
    print(f"{n_studies} simulated studies ({shape}, cell sd {cell_sd:g}), 90% intervals, "
          f"{time.perf_counter() - start:.0f} s:")  # fmt: skip
    for line in result.lines():
        print("  " + line)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(args[0]) if args else 200, args[1] if len(args) > 1 else "quickstart",
         float(args[2]) if len(args) > 2 else 0.3)  # fmt: skip
