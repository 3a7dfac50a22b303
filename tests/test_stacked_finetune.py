"""Stacked probes, fine-tuning and scoring give each model what the per-model path gives it."""

import copy
import math

import pytest
import torch

from scaling.config import RunConfig
from scaling.data import tasks as task_data
from scaling.data.tokens import load_pretrain_data
from scaling.errors import TrainingDiverged
from scaling.train.pipeline import finish_pipeline, finish_stack, run_pipeline_batched
from scaling.train.stacked import pretrain_batched

TASKS = ("arithmetic", "source", "code")


def compared_metrics(tasks):
    keys = ["probe_acc", "qk_rank", "train_loss", "val_loss", "gap", "ft_score", "ft_gain", "ft_nll", "ft_nll_gain"]
    for t in tasks:
        keys += [f"ft_{t}_{when}" for when in ("before", "after", "nll_before", "nll_after")]
    return keys


@pytest.fixture
def short_recipes(monkeypatch):
    """The real recipes, shortened to a few steps so the comparison stays fast."""
    short = {name: task_data.FinetuneRecipe(steps=12, lr=r.lr * 3, batch_size=r.batch_size, decay=r.decay,
                                            warmup_frac=r.warmup_frac)
             for name, r in task_data.RECIPES.items()}
    monkeypatch.setattr(task_data, "RECIPES", short)
    task_data._CODE_CACHE.clear()
    yield
    task_data._CODE_CACHE.clear()


def pretrained_three(tasks=TASKS, **changes):
    data = load_pretrain_data(None, "byte")
    base = RunConfig(size="13k", tokens=20_000, batch_size=8, eval_tokens=2048, tasks=tasks, **changes)
    configs = [base.replace(decay=0.0, seed=0), base.replace(decay=0.3, seed=1), base.replace(decay=3.0, seed=0)]
    results = pretrain_batched(configs, data.train, data.val, data.tokenizer.vocab_size)
    return data, configs, results


@pytest.mark.slow
def test_stacked_finish_equals_per_model_finish_on_one_task(short_recipes, one_thread):
    check_stacked_equals_per_model(("arithmetic",))


@pytest.mark.slow
def test_stacked_finish_equals_per_model_finish_on_every_kind_of_task(short_recipes, one_thread):
    check_stacked_equals_per_model(TASKS)  # exact match, ranked choice, language modelling


def check_stacked_equals_per_model(tasks):
    data, configs, results = pretrained_three(tasks)
    device = results[0].model.embed.weight.device
    alone = [finish_pipeline(c, copy.deepcopy(r), data, device, 0.0) for c, r in zip(configs, results)]
    together = finish_stack(list(zip(configs, copy.deepcopy(results))), data, device, 0.0)
    for a, b in zip(alone, together):
        for key in compared_metrics(tasks):
            assert math.isfinite(a[key]), key
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
        assert b["finish_models"] == 3
        assert set(a) <= set(b)
    # the comparison has teeth: fine-tuning moved the models and the decays differ
    assert any(abs(a["ft_arithmetic_nll_after"] - a["ft_arithmetic_nll_before"]) > 1e-3 for a in alone)
    assert len({round(a["qk_rank"], 6) for a in alone}) == 3


@pytest.mark.slow
def test_a_diverging_fine_tune_fails_alone(short_recipes, one_thread):
    data, configs, results = pretrained_three(tasks=("arithmetic", "source"))
    with torch.no_grad():  # model 1's head blown up: its fine-tuning loss explodes at once
        results[1].model.head.weight.mul_(1000.0)
    device = results[0].model.embed.weight.device
    alone = [finish_pipeline(c, copy.deepcopy(r), data, device, 0.0) for c, r in zip(configs, results)]
    together = finish_stack(list(zip(configs, copy.deepcopy(results))), data, device, 0.0)
    assert ["error" in a for a in alone] == ["error" in b for b in together] == [False, True, False]
    assert together[1]["diverged_step"] == alone[1]["diverged_step"]
    assert together[1]["diverged_phase"] == alone[1]["diverged_phase"] == "fine-tuning on arithmetic"
    assert "ft_score" not in together[1] and "probe_acc" not in together[1]
    for i in (0, 2):
        for key in compared_metrics(("arithmetic", "source")):
            assert together[i][key] == pytest.approx(alone[i][key], rel=1e-4, abs=1e-5), key


def test_a_model_that_diverged_in_pretraining_is_left_out(short_recipes, one_thread):
    data, configs, results = pretrained_three(tasks=("arithmetic",))
    results[1].error = TrainingDiverged(3, float("nan"), "pretraining")
    results[1].model = None
    results[1].metrics["error"] = str(results[1].error)
    device = results[0].model.embed.weight.device
    together = finish_stack(list(zip(configs, results)), data, device, 0.0)
    assert "ft_score" not in together[1] and together[1]["error"]
    assert math.isfinite(together[0]["ft_score"]) and math.isfinite(together[2]["ft_score"])


@pytest.mark.slow
def test_stacked_finish_equals_per_model_finish_with_the_real_recipes(one_thread):
    # hundreds of fine-tuning steps: agreement to ~2e-6 relative measured, accuracies identical
    check_stacked_equals_per_model(("arithmetic", "source"))


def test_the_pipeline_finishes_a_stack_together(monkeypatch, short_recipes, one_thread):
    import scaling.train.pipeline as pipeline

    seen = []
    real = pipeline.finish_stack
    monkeypatch.setattr(pipeline, "finish_stack", lambda items, *a: seen.append(len(items)) or real(items, *a))
    base = RunConfig(size="13k", tokens=8_000, batch_size=8, eval_tokens=1024, tasks=("arithmetic",), probes=False)
    out = run_pipeline_batched([base.replace(decay=0.0), base.replace(decay=1.0)])
    assert seen == [2] and [m["finish_models"] for m in out] == [2, 2]
    assert all(math.isnan(m["probe_acc"]) and math.isfinite(m["ft_nll"]) for m in out)
