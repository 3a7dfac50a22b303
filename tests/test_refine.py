"""The refinement rule on synthetic tables: where it adds trials, and where it must not."""

import math

import numpy as np
import pandas as pd
import pytest

from scaling.study.refine import propose, seed_adjusted_means

GRID = [0.0, 0.1, 0.2, 0.4, 0.8, 1.6]  # decays; a cell whose tau * decay = 2


def table(values_of, seeds=(0, 1), cell="13k@20tpp", grid=GRID, seed_effect=0.05):
    rows = []
    for s in seeds:
        for d in grid:
            rows.append({"cell": cell, "decay": d, "seed": s, "tau": math.inf if d == 0 else 2 / d,
                         "val_loss": values_of(d) + seed_effect * s})
    return pd.DataFrame(rows)


def decays(proposals, reason=None):
    return sorted({p.decay for p in proposals if reason is None or p.reason == reason})


def test_an_interior_best_gets_points_at_tau_times_and_over_sqrt2_at_its_seeds_then_a_new_seed():
    t = table(lambda d: (math.log(d / 0.4) if d else 3.0) ** 2)
    out = propose(t, [("val_loss", "min")], budget=20)
    assert decays(out, "neighbour") == pytest.approx([0.4 / math.sqrt(2), 0.4 * math.sqrt(2)])
    assert {p.seed for p in out if p.reason == "neighbour"} == {0, 1}
    assert [(p.decay, p.seed) for p in out if p.reason == "seed"] == [(0.4, 2), (0.2, 2), (0.8, 2)]
    assert not [p for p in out if p.reason == "edge"]
    tau = {p.decay: p.tau for p in out}
    assert tau[0.4 * math.sqrt(2)] == pytest.approx(2 / (0.4 * math.sqrt(2)))  # tau / sqrt(2)


def test_the_budget_takes_proposals_in_priority_order():
    t = table(lambda d: (math.log(d / 0.4) if d else 3.0) ** 2)
    out = propose(t, [("val_loss", "min")], budget=3)
    assert [p.reason for p in out] == ["neighbour", "neighbour", "neighbour"]
    assert propose(t, [("val_loss", "min")], budget=0) == []


def test_a_best_at_the_largest_decay_that_still_improves_gets_one_grid_step_beyond():
    t = table(lambda d: 3.0 - d)  # better and better towards the edge
    out = propose(t, [("val_loss", "min")], budget=20)
    assert decays(out, "edge") == pytest.approx([3.2])  # 1.6 * (1.6 / 0.8)
    assert max(decays(out, "neighbour")) <= 1.6  # a neighbour never steps past the edge


def test_a_best_at_decay_zero_refines_towards_the_smallest_decay_and_never_beyond_zero():
    t = table(lambda d: 3.0 + d)  # decay 0 is best (tau = inf)
    out = propose(t, [("val_loss", "min")], budget=20)
    assert not [p for p in out if p.reason == "edge"]
    assert decays(out, "neighbour") == pytest.approx([0.1 / math.sqrt(2)])
    assert min(decays(out)) == 0.0 and all(p.tau == math.inf for p in out if p.decay == 0)


def test_a_flat_best_inside_a_dense_grid_adds_no_duplicate_points():
    grid = [0.1 * 2 ** (k / 2) for k in range(8)]  # already sqrt(2)-spaced
    t = table(lambda d: (math.log(d / grid[3])) ** 2, grid=grid)
    out = propose(t, [("val_loss", "min")], budget=20)
    assert not [p for p in out if p.reason == "neighbour"]
    assert decays(out, "seed") == pytest.approx(grid[2:5])


def test_both_objectives_share_the_budget_and_a_maximised_one_looks_for_its_maximum():
    t = table(lambda d: (math.log(d / 0.2) if d else 3.0) ** 2)
    t["ft_score"] = [-(math.log(d / 0.8) if d else 3.0) ** 2 for d in t["decay"]]
    out = propose(t, [("val_loss", "min"), ("ft_score", "max")], budget=8)
    assert {p.objective for p in out} == {"val_loss", "ft_score"}
    assert decays([p for p in out if p.objective == "ft_score"]) == pytest.approx(
        sorted([0.8 / math.sqrt(2), 0.8 * math.sqrt(2)]))


def test_seed_adjusted_means_undo_a_seed_run_only_at_some_decays():
    d = np.array([0.1, 0.2, 0.1, 0.2, 0.2])
    s = np.array([0, 0, 1, 1, 2])
    v = np.array([1.0, 2.0, 1.0, 2.0, 2.0]) + np.array([0, 0, 0, 0, 5.0])  # seed 2 is a bad block
    means = seed_adjusted_means(d, s, v)
    assert means[0.2] - means[0.1] == pytest.approx(1.0, abs=1e-6)


def test_each_cell_is_refined_on_its_own():
    t = pd.concat([table(lambda d: 3.0 - d, cell="a"), table(lambda d: 3.0 + d, cell="b")])
    out = propose(t, [("val_loss", "min")], budget=20)
    assert decays([p for p in out if p.cell == "a"], "edge") == pytest.approx([3.2])
    assert not [p for p in out if p.cell == "b" and p.reason == "edge"]
