"""Study specs: what a good spec plans, and the one-line error every bad one gets."""

from pathlib import Path

import pytest

from scaling.cli import main
from scaling.errors import ConfigError
from scaling.study import load_spec, parse_spec
from scaling.study.spec import short_count

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
name = "demo"
sizes = ["13k", { name = "tiny", d_model = 16, n_layers = 1, n_heads = 2 }]
budgets = { tokens = [20000, 1500000] }
seeds = [0, 1]
tasks = ["arithmetic"]
lr = { "13k" = 3e-3, tiny = 1e-3 }
schedule = "wsd"

[decay]
grid = [0, 0.1, 1]

[run]
eval_tokens = 4096
probes = false
"""


def write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_good_spec_plans_every_cell_decay_and_seed(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert [c.name for c in spec.cells()] == ["13k@20ktok", "13k@1.5Mtok", "tiny@20ktok", "tiny@1.5Mtok"]
    assert spec.study_name(spec.cells()[0]) == "demo/13k@20ktok"
    plan = spec.plan()
    assert len(plan) == 3 * 2 and len({p.key for p in plan}) == 6
    assert {(p.decay, p.seed) for p in plan} == {(d, s) for d in (0.0, 0.1, 1.0) for s in (0, 1)}
    assert spec.storage_url == "sqlite:///results/demo/optuna.db"


def test_run_config_merges_per_size_values_budget_and_run_table(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    tiny_big = spec.cell("tiny@1.5Mtok")
    cfg = spec.run_config(tiny_big, decay=0.1, seed=1)
    assert (cfg.size, cfg.d_model, cfg.n_layers, cfg.n_heads) == (None, 16, 1, 2)
    assert (cfg.lr, cfg.schedule, cfg.tokens, cfg.tpp) == (1e-3, "wsd", 1_500_000, None)
    assert (cfg.decay, cfg.seed, cfg.tasks, cfg.eval_tokens, cfg.probes) == (0.1, 1, ("arithmetic",), 4096, False)
    assert spec.run_config(spec.cell("13k@20ktok"), 0.0, 0).lr == 3e-3


def test_a_sampler_search_plans_n_trials_slots_cycling_seeds(tmp_path):
    text = GOOD.replace("grid = [0, 0.1, 1]", 'low = 1e-3\nhigh = 10\nsampler = "nsga2"\nn_trials = 5')
    spec = load_spec(write(tmp_path, text))
    plan = spec.plan()
    assert [p.seed for p in plan] == [0, 1, 0, 1, 0]
    assert all(p.decay is None for p in plan)
    assert len(spec.plan(n_trials=8)) == 8
    assert (spec.decay.low, spec.decay.high, spec.decay.log, spec.decay.sampler) == (1e-3, 10.0, True, "nsga2")


def test_token_counts_get_short_exact_labels():
    assert [short_count(n) for n in (999, 20000, 1_500_000, 123_456, 2 * 10**9)] == \
        ["999", "20k", "1.5M", "123.456k", "2G"]
    assert short_count(1_234_567_891) == "1234567891"


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_spec_loads(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    assert spec.cells()


def test_shipped_paper_specs_use_the_papers_decay_grid():
    grid = (0.0, 1e-4, 1e-3, 0.01, 0.1, 0.5, 1.0, 1.5, 3.0, 10.0)
    for name, tpp, schedule in (("paper-20tpp", 20, "cosine"), ("paper-140tpp", 140, "wsd")):
        spec = load_spec(ROOT / "studies" / f"{name}.toml")
        assert spec.decay.grid == grid
        assert {b.value for b in spec.budgets} == {tpp}
        assert {cfg.schedule for cfg in (spec.run_config(c, 0.1, 0) for c in spec.cells())} == {schedule}


BASE = {
    "name": 'name = "bad"',
    "sizes": 'sizes = ["13k"]',
    "budgets": "budgets = { tpp = [1] }",
    "top": "",
    "decay": "[decay]\ngrid = [0, 0.1]",
    "rest": "",
}


def spec_text(**parts: str) -> str:
    merged = {**BASE, **parts}
    return "\n".join(merged[k] for k in ("name", "sizes", "budgets", "top", "decay", "rest")) + "\n"


# (what is wrong, spec text, the key the message must name, a fragment of what it expects)
BAD_SPECS = [
    ("unknown key", spec_text(top="nmae = 1"), "nmae", "unknown key; expected one of name"),
    ("sizes not a list", spec_text(sizes='sizes = "13k"'), "sizes", "expected a non-empty list"),
    ("unknown ladder size", spec_text(sizes='sizes = ["14k"]'), "sizes", "expected ladder sizes from 13k"),
    ("negative decay", spec_text(decay="[decay]\ngrid = [-1, 0.1]"), "decay.grid", "numbers >= 0, got -1"),
    ("duplicate decays", spec_text(decay="[decay]\ngrid = [0.1, 0.1]"), "decay.grid", "distinct values"),
    ("empty range", spec_text(decay="[decay]\nlow = 1\nhigh = 0.5\nn_trials = 4"), "decay.high",
     "expected a number > decay.low (1), got 0.5"),
    ("log range from zero", spec_text(decay="[decay]\nlow = 0\nhigh = 1\nn_trials = 4"), "decay.low",
     "expected a finite number > 0, got 0"),
    ("unknown sampler", spec_text(decay='[decay]\nlow = 0.01\nhigh = 1\nn_trials = 4\nsampler = "cmaes"'),
     "decay.sampler", "expected one of tpe, gp, nsga2, random, got 'cmaes'"),
    ("n_trials with a grid", spec_text(decay="[decay]\ngrid = [0.1]\nn_trials = 3"), "decay.n_trials",
     "nothing else beside decay.grid"),
    ("n_trials a float", spec_text(decay="[decay]\nlow = 0.01\nhigh = 1\nn_trials = 4.0"), "decay.n_trials",
     "expected a positive integer, got 4.0"),
    ("two budget kinds", spec_text(budgets="budgets = { tpp = [1], tokens = [1000] }"), "budgets",
     "expected a table with one of tpp"),
    ("zero tpp", spec_text(budgets="budgets = { tpp = [0] }"), "budgets.tpp", "numbers > 0, got 0"),
    ("negative lr", spec_text(top="lr = -1"), "lr", "expected a number > 0.0, got -1"),
    ("per-size lr for a missing size", spec_text(top='lr = { "13k" = 1e-3, "99k" = 1e-3 }'), "lr.99k",
     "unknown key; expected one of the spec's sizes"),
    ("unknown schedule", spec_text(top='schedule = "linear"'), "schedule", "expected one of cosine, wsd"),
    ("duplicate seeds", spec_text(top="seeds = [0, 0]"), "seeds", "distinct integers"),
    ("unknown task", spec_text(top='tasks = ["poetry"]'), "tasks", "expected task names from arithmetic"),
    ("decay under [run]", spec_text(rest="[run]\ndecay = 0.1"), "run.decay", "set it in the decay table"),
    ("unknown run setting", spec_text(rest="[run]\nwarmup = 0.1"), "run.warmup", "unknown key; expected a RunConfig"),
    ("run value out of range", spec_text(rest="[run]\nwarmup_frac = 2"), "run.warmup_frac",
     "expected a number <= 1.0, got 2"),
    ("run value of the wrong type", spec_text(rest='[run]\nprobes = "yes"'), "run.probes", "type bool, got 'yes'"),
    ("grace shorter than heartbeat", spec_text(rest="[worker]\nheartbeat_interval = 10\ngrace_period = 5"),
     "worker.grace_period", "more seconds than worker.heartbeat_interval (10)"),
    ("a slash in the name", spec_text(name='name = "a/b"'), "name", "letters, digits"),
    ("storage not a URL", spec_text(top='storage = "results/x.db"'), "storage", "an SQLAlchemy URL"),
    ("explicit shape without layers", spec_text(sizes='sizes = [{ name = "t", d_model = 16 }]'),
     "sizes[0].n_layers", "an explicit shape needs d_model and n_layers"),
    ("no decay table", spec_text(decay=""), "decay", "got nothing"),
]


@pytest.mark.parametrize("what,text,key,expected", BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_a_bad_spec_is_one_line_naming_file_and_key_with_exit_status_2(tmp_path, capsys, what, text, key, expected):
    path = write(tmp_path, text)
    code = main(["study", "status", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"scaling study: error: {path}: {key}: "), err
    assert expected in err, err


def test_invalid_toml_and_missing_files_are_one_line_errors(tmp_path, capsys):
    path = write(tmp_path, 'name = "x"\nsizes = [')
    assert main(["study", "status", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"scaling study: error: {path}: invalid TOML: ") and err.count("\n") == 1
    assert main(["study", "status", str(tmp_path / "nope.toml")]) == 2
    assert "no such study spec" in capsys.readouterr().err


def test_parse_spec_names_the_given_path():
    with pytest.raises(ConfigError, match=r"^inline: seeds: expected a non-empty list"):
        parse_spec({"name": "x", "sizes": ["13k"], "budgets": {"tpp": [1]}, "decay": {"grid": [0.1]},
                    "seeds": []}, "inline")
