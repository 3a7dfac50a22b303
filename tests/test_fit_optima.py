"""Per-cell estimands: decay* (interior or censored), decay_tol, paired seeds, measured noise."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scaling.errors import DataError, FitError
from scaling.fit import cell_optima, prepare_table
from scaling.fit.optima import BASIS_MODEL, BASIS_SEEDS, cell_estimates, cell_optimum
from scaling.fit.simulate import Shape, Truth, simulate_trials

DECAYS = (0.0, 0.03, 0.06, 0.12, 0.25, 0.5, 1.0, 2.0, 4.0)


def one_cell(curve, *, decays=DECAYS, seeds=4, noise=0.01, seed_sd=0.02, rng=0) -> pd.DataFrame:
    """Trials of one cell whose expected val_loss is curve(decay); each seed shifts all decays."""
    rng = np.random.default_rng(rng)
    offsets = rng.normal(0.0, seed_sd, seeds)
    rows = [{"cell": "c", "n_params": 1e5, "n_tokens": 2e6, "decay": d, "seed": s, "lr": 3e-3, "batch_tokens": 4096,
             "val_loss": curve(d) + offsets[s] + rng.normal(0.0, noise)}
            for d in decays for s in range(seeds)]  # fmt: skip
    return prepare_table(pd.DataFrame(rows), require=("n_params", "n_tokens", "decay"))


def dip_at(decay_opt: float, depth: float = 0.05):
    """Plateau at decay 0, a dip of `depth` at decay_opt, a wall beyond (the simulator's shape)."""
    shape = Shape(law=(0.0, 0.0), depth=depth, wall_rate=2.0, dip_rate=0.9)
    return lambda d: 2.0 + float(shape.g(-math.log(d / decay_opt) if d > 0 else math.inf, 0.0))


def test_an_interior_optimum_gets_a_value_and_an_interval_that_holds_it():
    opt = cell_optimum(one_cell(dip_at(0.3)), "val_loss", "min", n_bootstrap=200)
    assert opt.kind == "interior" and opt.bracketed and opt.reason is None
    assert opt.low < 0.3 < opt.high and opt.low < opt.decay_opt < opt.high
    assert abs(math.log(opt.decay_opt / 0.3)) < 0.5
    assert opt.n_seeds == 4 and opt.interval_basis == BASIS_SEEDS
    assert opt.tau_opt == pytest.approx(4096 / (3e-3 * opt.decay_opt * 2e6))


def test_a_plateau_then_a_wall_is_censored_below_with_a_bound_and_a_tolerance():
    """No dip: the best decay is at or below the smallest positive decay searched."""
    wall = lambda d: 2.0 + 0.05 * d**1.6  # noqa: E731 - the measured shape: flat, then steep
    opt = cell_optimum(one_cell(wall), "val_loss", "min", n_bootstrap=200)
    assert opt.kind == "censored_below" and not opt.bracketed
    assert opt.low == 0.0 and 0 < opt.high < 1.0  # an upper bound, from the data
    assert "below the smallest positive decay searched (0.03)" in opt.evidence and opt.reason == opt.evidence
    # decay_tol: where the wall rises delta = 0.01 above the plateau, (0.01 / 0.05)^(1 / 1.6) = 0.366
    assert opt.tol_kind == "interior" and opt.delta == 0.01
    assert opt.tol_low < 0.366 < opt.tol_high
    assert opt.decay_tol == pytest.approx(0.366, rel=0.3)


def test_an_objective_still_improving_at_the_largest_decay_is_censored_above():
    opt = cell_optimum(one_cell(dip_at(30.0)), "val_loss", "min", n_bootstrap=100)
    assert opt.kind == "censored_above" and opt.decay_opt == 4.0 and math.isinf(opt.high)
    assert 0 < opt.low <= 4.0 and "above the largest decay searched (4)" in opt.evidence


def test_the_tolerance_can_be_chosen_and_grows_with_it():
    cell = one_cell(lambda d: 2.0 + 0.05 * d**1.6)
    small = cell_optimum(cell, "val_loss", "min", n_bootstrap=0, delta=0.005)
    large = cell_optimum(cell, "val_loss", "min", n_bootstrap=0, delta=0.05)
    assert small.delta == 0.005 and large.delta == 0.05
    assert small.decay_tol < large.decay_tol
    with pytest.raises(FitError, match="delta must be a positive number"):
        cell_optimum(cell, "val_loss", "min", delta=0.0)


def test_a_seeds_offset_is_a_block_effect_and_does_not_move_the_optimum():
    cell = one_cell(dip_at(0.3), noise=0.005, seed_sd=0.0)
    shifted = cell.assign(val_loss=cell["val_loss"] + np.where(cell["seed"] == 1, 0.3, 0.0))
    a = cell_optimum(cell, "val_loss", "min", n_bootstrap=0)
    b = cell_optimum(shifted, "val_loss", "min", n_bootstrap=0)
    assert b.decay_opt == pytest.approx(a.decay_opt, rel=1e-6)


def test_maximised_objectives_are_handled_by_sign():
    cell = one_cell(dip_at(0.5)).rename(columns={"val_loss": "ft_score"})
    cell["ft_score"] = 3.0 - cell["ft_score"]
    opt = cell_optimum(cell, "ft_score", "max", n_bootstrap=100)
    assert opt.kind == "interior" and opt.low < 0.5 < opt.high
    assert opt.value_at_opt == pytest.approx(float(opt.curve([opt.decay_opt])[0]))
    assert opt.curvature < 0  # a peak


def test_one_seed_intervals_rest_on_the_model_and_are_not_grid_neighbours():
    opt = cell_optimum(one_cell(dip_at(0.3), seeds=1, rng=3), "val_loss", "min", n_bootstrap=200)
    assert opt.interval_basis == BASIS_MODEL and opt.n_seeds == 1
    assert opt.low < opt.decay_opt < opt.high
    assert opt.low not in DECAYS and opt.high not in DECAYS  # not a resample that can only drop points


def test_a_tie_between_two_decays_is_not_called_an_edge_optimum():
    """Measured at 101k@5tpp (quickstart, one seed): ft_score 0.3442 at decays 0.03 and 1."""
    scores = {0.0: 0.310833, 0.03: 0.344167, 0.1: 0.324167, 0.3: 0.31, 1.0: 0.344167, 3.0: 0.335}
    rows = [{"cell": "101k@5tpp", "n_params": 101e3, "n_tokens": 505e3, "decay": d, "seed": 0, "ft_score": s,
             "lr": 6e-3, "batch_tokens": 2048} for d, s in scores.items()]  # fmt: skip
    opt = cell_optimum(pd.DataFrame(rows), "ft_score", "max", n_bootstrap=200)
    print(opt.kind, opt.decay_opt, opt.low, opt.high, opt.evidence)
    assert opt.kind == "interior" and 0.03 < opt.decay_opt < 3.0
    assert opt.low == 0.0 or math.isinf(opt.high)  # one seed at noise 0.03: the data cannot pin it down


def test_paired_draws_share_resampled_trials_across_objectives():
    trials, _ = simulate_trials(n_params=(3e4,), tpp=(20.0,), seeds=3, rng=2)
    est = cell_estimates(trials, {"val_loss": "min", "ft_score": "max"}, n_bootstrap=50)
    loss, plastic = est.optima["val_loss"][0], est.optima["ft_score"][0]
    assert loss.draws.shape == plastic.draws.shape == (50,)
    assert set(est.noise) == {"val_loss", "ft_score"}


@pytest.mark.slow
def test_per_cell_intervals_cover_the_truth_at_measured_noise():
    """A small version of benchmarks/coverage_fit.py: 6 simulated studies (144 cell optima)."""
    hits = {"val_loss": [], "ft_score": []}
    columns = {"val_loss": "log_decay_loss_opt", "ft_score": "log_decay_plastic_opt"}
    for k in range(6):
        trials, cells = simulate_trials(Truth(), seeds=3, rng=500 + k)
        est = cell_estimates(trials, {"val_loss": "min", "ft_score": "max"}, n_bootstrap=60, seed=k)
        for obj, col in columns.items():
            truth = dict(zip(cells["cell"], np.exp(cells[col])))
            hits[obj] += [o.low <= truth[o.cell] <= o.high for o in est.optima[obj]]
    for obj, h in hits.items():
        print(f"{obj}: 90% intervals covered the true decay* in {sum(h)}/{len(h)} cells")
        assert 0.8 <= np.mean(h) <= 0.99


def test_cells_are_found_and_sorted_by_size():
    a = one_cell(dip_at(0.3)).assign(cell="b")
    b = one_cell(dip_at(0.1)).assign(cell="a", n_params=3e4, n_tokens=6e5)
    optima = cell_optima(pd.concat([a, b]), "val_loss", "min", n_bootstrap=20)
    assert [o.n_params for o in optima] == [3e4, 1e5] and optima[0].cell == "a"


def test_bad_input_is_a_typed_error():
    cell = one_cell(dip_at(0.3))
    with pytest.raises(DataError, match="ft_score"):
        cell_optima(cell, "ft_score", "max")
    with pytest.raises(FitError, match="direction"):
        cell_optima(cell, "val_loss", "lowest")
    few = one_cell(dip_at(0.3), decays=(0.0, 0.1, 1.0))
    est = cell_estimates(few, {"val_loss": "min"})
    assert est.optima["val_loss"] == () and "needs 4" in est.skipped[0][1]
