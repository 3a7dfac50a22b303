"""Claims and units without training: which trials a worker takes together, and how a unit's
results map back onto them."""

import optuna

from scaling.config import RunConfig
from scaling.errors import TrainingDiverged
from scaling.study import units
from scaling.study.claim import claim, claim_across, claim_some


def queued_study(storage, name, keys):
    study = optuna.create_study(study_name=name, storage=storage, directions=["minimize", "maximize"])
    for key in keys:
        study.enqueue_trial({"decay": 0.1}, user_attrs={"plan": key})
    return study


def test_a_claim_takes_each_waiting_trial_once_then_nothing():
    storage = optuna.storages.InMemoryStorage()
    study = queued_study(storage, "cell", ["a", "b", "c"])
    first = claim_some(storage, study, k=2)
    rest = claim_some(storage, study, k=2)
    assert len(first) == 2 and len(rest) == 1 and claim(storage, study) is None
    ids = [h.trial_id for h in first + rest]
    assert len(set(ids)) == 3
    assert all(t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials())


def test_a_branch_claim_takes_a_plan_key_in_every_budget_that_still_has_it_waiting():
    storage = optuna.storages.InMemoryStorage()
    small, large = queued_study(storage, "s@1k", ["a", "b"]), queued_study(storage, "s@2k", ["a", "b"])
    assert claim(storage, large, key="a").plan == "a"  # taken by another worker
    held = claim_across(storage, [small, large], k=1)
    assert [(h.study.study_name, h.trial_id) for h in held] == [("s@1k", held[0].trial_id)]
    held = claim_across(storage, [small, large], k=1)
    assert sorted(h.study.study_name for h in held) == ["s@1k", "s@2k"]
    assert claim_across(storage, [small, large], k=1) == []


def test_the_branches_unit_gives_each_config_its_models_row_at_its_budget(monkeypatch):
    base = RunConfig(size="13k", schedule="wsd", warmup_frac=0.0, context=64, batch_size=8)
    configs = [base.replace(decay=d, tokens=t, tpp=None) for d, t in ((0.0, 1024), (0.5, 2048), (0.0, 2048))]
    calls = []

    def fake_branches(models, budgets, compile=False):
        calls.append(([m.decay for m in models], budgets, {m.tokens for m in models}))
        return [[{"decay": m.decay, "tokens": b} for b in budgets] for m in models]

    monkeypatch.setattr(units, "run_branches", fake_branches)
    results = units.branches(configs)
    assert calls == [([0.0, 0.5], [1024, 2048], {2048})]  # one run per decay, through the largest budget
    assert results == [{"decay": 0.0, "tokens": 1024}, {"decay": 0.5, "tokens": 2048}, {"decay": 0.0, "tokens": 2048}]


def test_a_lone_unit_turns_divergence_into_a_result():
    def diverges(config):
        raise TrainingDiverged(step=3, loss=float("nan"), phase="fine-tuning")

    (result,) = units.lone(diverges)([RunConfig()])
    assert result == {"error": "fine-tuning diverged at step 3: loss nan", "diverged_step": 3,
                      "diverged_phase": "fine-tuning"}


def test_the_specs_compile_setting_reaches_the_stacked_and_branch_units(monkeypatch, tmp_path):
    from dataclasses import replace

    from scaling.study import load_spec

    seen = []
    monkeypatch.setattr(units, "run_stack", lambda configs, compile=False: seen.append(("stack", compile)) or
                        [{} for _ in configs])
    monkeypatch.setattr(units, "run_branches", lambda models, budgets, compile=False: seen.append(("branches", compile))
                        or [[{} for _ in budgets] for _ in models])
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\nsizes = ["13k"]\nbudgets = { tokens = [2048] }\nbatch_models = 2\n'
                    'compile = true\n[decay]\ngrid = [0, 0.1]\n')
    spec = load_spec(path)
    config = RunConfig(size="13k", context=64, batch_size=8)
    units.make_unit(spec)([config, config.replace(decay=0.1)])
    units.make_unit(replace(spec, compile=False))([config, config.replace(decay=0.1)])
    units.make_unit(replace(spec, cooldown_branches=True))([config.replace(schedule="wsd", warmup_frac=0.0)])
    assert seen == [("stack", True), ("stack", False), ("branches", True)]
