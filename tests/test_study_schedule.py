"""When trials run (never what they compute): workers claim the costliest cell's units first."""

import math

from scaling.config import model_shape, token_budget
from scaling.core.shapes import non_embedding_params
from scaling.study import load_spec, run_study
from scaling.study.units import claim_order, unit_cost

GRID = (0.0, 0.1, 1.0)

SPEC = """
name = "{name}"
sizes = {sizes}
budgets = {{ tpp = {budgets} }}
seeds = [0]
batch_size = 8
context = 64
storage = "sqlite:///{dir}/{name}.db"
{extra}

[decay]
grid = [0, 0.1, 1]

[run]
device = "cpu"
{run}

[worker]
heartbeat_interval = 1
{refine}
"""


def write(tmp_path, name="sched", sizes='["13k", "56k"]', budgets="[20]", extra="", refine="[refine]\ntrials = 2",
          run=""):
    path = tmp_path / f"{name}.toml"
    path.write_text(SPEC.format(name=name, sizes=sizes, budgets=budgets, dir=tmp_path, extra=extra, refine=refine,
                                run=run))
    return load_spec(path)


def bowl(cfg):
    """A fake trial, instant: a bowl in log10(decay) with its floor at 0.1 for 13k and at the
    grid's edge (1) for any other size, so the cells refine differently."""
    floor = 0.1 if cfg.size == "13k" else 1.0
    x = math.log10(cfg.decay / floor) if cfg.decay else 2.0
    return {"val_loss": 3 + x * x + 0.01 * cfg.seed, "ft_nll": 2 + x * x, "ft_score": 0.5, "seed": cfg.seed,
            "curve": []}


# -- claim order -----------------------------------------------------------------------------------


def test_cells_are_claimed_costliest_first_by_params_times_tokens(tmp_path):
    spec = write(tmp_path, budgets="[20, 80]")
    assert [[c.name for c in group] for group in claim_order(spec)] == [
        ["56k@80tpp"], ["56k@20tpp"], ["13k@80tpp"], ["13k@20tpp"]]
    config = spec.run_config(spec.cell("56k@80tpp"), 0.0, 0)
    n_params = non_embedding_params(model_shape(config))
    assert unit_cost(spec, [spec.cell("56k@80tpp")]) == n_params * token_budget(config, n_params)[1]


def test_cells_of_equal_cost_keep_spec_order(tmp_path):
    spec = write(tmp_path, sizes='["13k", { name = "twin", d_model = 32, n_layers = 1, n_heads = 2, d_ff = 96 }]')
    assert unit_cost(spec, [spec.cells()[0]]) == unit_cost(spec, [spec.cells()[1]])
    assert [group[0].name for group in claim_order(spec)] == ["13k@20tpp", "twin@20tpp"]


def test_a_cooldown_branch_group_costs_its_largest_budget(tmp_path):
    spec = write(tmp_path, budgets="[20, 80]", extra='schedule = "wsd"\ncooldown_branches = true', refine="",
                 run="warmup_frac = 0.0")
    groups = claim_order(spec)
    assert [[c.name for c in g] for g in groups] == [["56k@20tpp", "56k@80tpp"], ["13k@20tpp", "13k@80tpp"]]
    assert unit_cost(spec, groups[0]) == unit_cost(spec, [spec.cell("56k@80tpp")])


def test_one_worker_runs_the_costliest_cell_first(tmp_path):
    spec = write(tmp_path, refine="")
    order = []

    def trial_fn(cfg):
        order.append(cfg.size)
        return bowl(cfg)

    assert run_study(spec, workers=1, trial_fn=trial_fn, progress=False).ok
    assert order == ["56k"] * 3 + ["13k"] * 3
