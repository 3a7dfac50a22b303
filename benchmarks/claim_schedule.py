"""Simulate the quickstart's schedule on W workers: claim order x when refinement is decided.

    python benchmarks/claim_schedule.py [--workers 2] [--trials results/quickstart/trials.csv]

No training: each unit takes a fixed time, measured per cell on the shared 2-core machine
(quickstart, two planned units and one refinement unit per cell). The cell order is the real
`scaling.study.units.claim_order` of studies/quickstart.toml, or spec order for comparison.
Refinement of a cell is decided

  barrier  once every cell's trials have finished (the runner's round loop alone, before issue 14)
  idle     per cell, but only when a worker finds nothing to claim
  eager    per cell, before every claim (what workers do: `scaling.study.plan.refine_due`)

and a worker always claims from the first cell in its order with a waiting unit.
"""

from __future__ import annotations

import argparse
import heapq

from scaling.study import load_spec
from scaling.study.units import claim_order

# seconds per unit, measured (quickstart on 2 idle-ish cores)
PLANNED_S = {"13k@20tpp": 28.3, "13k@80tpp": 44.0, "56k@20tpp": 121.6, "56k@80tpp": 366.9}
REFINE_S = {"13k@20tpp": 14.1, "13k@80tpp": 23.0, "56k@20tpp": 51.8, "56k@80tpp": 135.1}
PLANNED_UNITS = 2


def simulate(order: list[str], policy: str, workers: int) -> float:
    """The wall time until the last unit ends."""
    waiting = {c: [PLANNED_S[c]] * PLANNED_UNITS for c in order}
    live = dict.fromkeys(order, 0)
    decided = dict.fromkeys(order, False)
    running: list[tuple[float, int, str]] = []  # (end, worker, cell)
    idle, now = list(range(workers)), 0.0

    def decide() -> None:
        everything_done = all(not waiting[c] and not live[c] for c in order)
        for c in order:
            ready = everything_done if policy == "barrier" else not waiting[c] and not live[c]
            if ready and not decided[c]:
                decided[c] = True
                waiting[c].append(REFINE_S[c])

    def claim() -> str | None:
        if policy == "eager":
            decide()
        for c in order:
            if waiting[c]:
                return c
        if policy != "eager":
            decide()
            return next((c for c in order if waiting[c]), None)
        return None

    while True:
        while idle and (cell := claim()) is not None:
            live[cell] += 1
            heapq.heappush(running, (now + waiting[cell].pop(0), idle.pop(0), cell))
        if not running:
            return now
        now, worker, cell = heapq.heappop(running)
        live[cell] -= 1
        idle.append(worker)


def unit_times(trials_csv: str) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds per planned and per refinement unit of each cell, from a quickstart trials.csv
    (a unit's trials share its wall time: `wall_s` is each one's share of it)."""
    import pandas as pd

    t = pd.read_csv(trials_csv)
    units = t.groupby(["cell", "refine", "seed"])["wall_s"].sum()
    planned = units.xs(0, level="refine").groupby(level="cell").mean()
    refine = units[units.index.get_level_values("refine") > 0].groupby(level="cell").sum()
    return planned.to_dict(), refine.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trials", default=None,
                        help="take the unit times from this quickstart trials.csv instead of the built-in ones")
    args = parser.parse_args()
    if args.trials:
        planned, refine = unit_times(args.trials)
        PLANNED_S.update(planned)
        REFINE_S.update(refine)
        print("unit seconds (planned, refinement): " + ", ".join(
            f"{c} {PLANNED_S[c]:.0f}, {REFINE_S[c]:.0f}" for c in PLANNED_S))
    spec = load_spec("studies/quickstart.toml")
    orders = {"spec": [c.name for c in spec.cells()],
              "costliest first": [cells[0].name for cells in claim_order(spec)]}
    for name, order in orders.items():
        print(f"{name} ({', '.join(order)}):")
        for policy in ("barrier", "idle", "eager"):
            print(f"  refinement {policy:8s} {simulate(order, policy, args.workers):6.0f} s")
    print(f"floor (all work over {args.workers} workers): "
          f"{(PLANNED_UNITS * sum(PLANNED_S.values()) + sum(REFINE_S.values())) / args.workers:.0f} s")


if __name__ == "__main__":
    main()
