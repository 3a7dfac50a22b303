"""Per-cell optima: decay* from a local quadratic in ln decay, with honest edge handling."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scaling.errors import DataError, FitError
from scaling.fit import cell_optima, prepare_table
from scaling.fit.optima import cell_optimum

GRID = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def one_cell(decay_opt: float, *, direction="min", grid=GRID, seeds=3, noise=0.002, curvature=0.03, rng=0):
    """Trials of one cell whose objective is a parabola in ln decay with its optimum at decay_opt;
    decay 0 sits on the plateau a saturating curve would reach."""
    rng = np.random.default_rng(rng)
    rows = []
    for decay in grid:
        delta = math.log(decay) - math.log(decay_opt) if decay > 0 else -8.0
        for seed in range(seeds):
            bump = curvature * delta**2 + rng.normal(0, noise)
            value = 3.0 + bump if direction == "min" else 0.6 - bump
            rows.append({"n_params": 1e5, "n_tokens": 2e6, "decay": decay, "seed": seed, "lr": 3e-3,
                         "batch_tokens": 4096, "val_loss": value, "ft_score": value})  # fmt: skip
    return prepare_table(pd.DataFrame(rows), require=("n_params", "n_tokens", "decay"))


@pytest.mark.parametrize("truth", [0.02, 0.17, 1.3])
def test_interior_optimum_is_found(truth):
    opt = cell_optimum(one_cell(truth), "val_loss", "min", n_bootstrap=200)
    assert opt.bracketed and opt.reason is None
    assert opt.decay_opt == pytest.approx(truth, rel=0.1)
    assert opt.low < opt.decay_opt < opt.high
    assert abs(math.log(opt.decay_opt / truth)) < 4 * opt.log_sd
    assert opt.n_trials == len(GRID) * 3
    assert opt.value_at_opt == pytest.approx(3.0, abs=0.005)
    assert opt.curvature == pytest.approx(0.03, rel=0.15)


@pytest.mark.parametrize("seeds", [1, 3])
def test_bootstrap_intervals_cover_the_true_optimum_about_as_often_as_they_claim(seeds):
    replicates = 60
    hits = 0
    for r in range(replicates):
        cell = one_cell(0.17, seeds=seeds, noise=0.004, rng=100 + r)
        opt = cell_optimum(cell, "val_loss", "min", n_bootstrap=200, rng=np.random.default_rng(r))
        hits += opt.bracketed and opt.low <= 0.17 <= opt.high
    print(f"{seeds} seed(s) per decay: 90% intervals covered the truth in {hits}/{replicates} cells")
    assert 0.75 <= hits / replicates <= 0.99


def test_maximised_objective_finds_the_peak():
    opt = cell_optimum(one_cell(0.5, direction="max"), "ft_score", "max", n_bootstrap=100)
    assert opt.bracketed and opt.direction == "max"
    assert opt.decay_opt == pytest.approx(0.5, rel=0.1)
    assert opt.value_at_opt == pytest.approx(0.6, abs=0.005)
    assert opt.curvature < 0  # a peak


def test_timescale_at_the_optimum_uses_the_cells_lr_and_batch():
    opt = cell_optimum(one_cell(0.17), "val_loss", "min", n_bootstrap=0)
    assert opt.tau_opt == pytest.approx(4096 / (3e-3 * opt.decay_opt * 2e6))


@pytest.mark.parametrize(
    "truth, edge, match",
    [
        (40.0, 10.0, "largest searched value"),
        (1e-4, 0.001, "smallest positive searched value"),
    ],
)
def test_optimum_at_an_edge_is_not_bracketed_and_not_extrapolated(truth, edge, match):
    opt = cell_optimum(one_cell(truth), "val_loss", "min", n_bootstrap=50)
    assert not opt.bracketed
    assert match in opt.reason
    assert opt.decay_opt == edge == opt.best_observed_decay  # the best observed value, no extrapolation
    assert math.isnan(opt.low) and math.isnan(opt.high)


def test_zero_decay_can_be_the_best_observed_point():
    rows = one_cell(0.3)
    rows.loc[rows["decay"] == 0, "val_loss"] = 2.5  # no weight decay wins outright
    opt = cell_optimum(rows, "val_loss", "min", n_bootstrap=20)
    assert not opt.bracketed and opt.best_observed_decay == 0.0 and opt.decay_opt == 0.0
    assert "best observed decay is 0" in opt.reason
    assert math.isinf(opt.tau_opt)


def test_quadratic_opening_the_wrong_way_is_not_bracketed():
    rows = one_cell(0.1, seeds=1, noise=0.0)
    # A single sharp dip at 0.1 between high near neighbours and low far ones: the best observed
    # point is interior, but the least-squares quadratic through its window is concave.
    shape = {0.0: 9.0, 0.001: 9.0, 0.003: 9.0, 0.01: 2.05, 0.03: 2.9, 0.1: 2.0, 0.3: 2.9, 1.0: 2.05, 3.0: 9.0, 10.0: 9.0}
    rows["val_loss"] = rows["decay"].map(shape)
    opt = cell_optimum(rows, "val_loss", "min", n_bootstrap=0)
    assert not opt.bracketed and "wrong way" in opt.reason
    assert opt.decay_opt == 0.1


def test_single_seed_cells_still_get_a_bootstrap_interval():
    opt = cell_optimum(one_cell(0.2, seeds=1, noise=0.004, rng=5), "val_loss", "min", n_bootstrap=200)
    assert opt.bracketed and opt.low < opt.decay_opt < opt.high and opt.log_sd > 0


def test_cells_are_found_and_sorted_by_size():
    a = one_cell(0.2)
    b = one_cell(0.05).assign(n_params=3e4, n_tokens=6e5)
    optima = cell_optima(pd.concat([a, b]), "val_loss", "min", n_bootstrap=20)
    assert [o.n_params for o in optima] == [3e4, 1e5]
    assert optima[0].decay_opt == pytest.approx(0.05, rel=0.15)
    assert optima[0].cell == "30k@20tpp"


def test_missing_objective_column_and_bad_direction_are_typed_errors():
    cell = one_cell(0.2).drop(columns=["ft_score"])
    with pytest.raises(DataError, match="ft_score"):
        cell_optima(cell, "ft_score", "max")
    with pytest.raises(FitError, match="direction"):
        cell_optima(cell, "val_loss", "lowest")


def test_vectorised_bootstrap_locator_agrees_with_the_scalar_rules():
    """The bootstrap locates thousands of resamples at once; it must apply the same rules
    (window, curvature, edges, absent decays) as the point estimate."""
    from scaling.fit.optima import _locate, locate_many

    rng = np.random.default_rng(7)
    grid = np.array(GRID)
    for _ in range(300):
        n = rng.integers(3, 25)
        inverse = rng.integers(0, grid.size, n)
        value = rng.normal(0, 1, n) + 0.1 * (np.log(np.maximum(grid[inverse], 1e-4)) + 2) ** 2
        counts = np.bincount(inverse, minlength=grid.size)[None, :]
        sums = np.bincount(inverse, weights=value, minlength=grid.size)[None, :]
        scalar = _locate(grid, inverse, value).log_opt
        vector = locate_many(grid, counts, sums)[0]
        if math.isfinite(scalar):
            assert vector == pytest.approx(scalar, rel=1e-9, abs=1e-9)
        else:
            assert not math.isfinite(vector)
