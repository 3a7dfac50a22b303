"""Token budgets from one run: cooldown branches off a shared WSD stable phase."""

import numpy as np
import pytest

from scaling.config import RunConfig
from scaling.core.budget import warmup_steps
from scaling.core.schedule import lr_multiplier, wsd_multiplier
from scaling.errors import ConfigError
from scaling.train.cooldown import (compare_with_full_runs, plan_cooldowns, pretrain_batched_with_cooldowns,
                                    pretrain_with_cooldowns)
from scaling.train.single import pretrain
from scaling.train.stacked import pretrain_batched

from tests.synthetic import VOCAB, pattern_tokens

STEP_TOKENS = 16 * 4  # context 16, batch 4

pytestmark = [pytest.mark.filterwarnings("ignore:grad and param do not obey"), pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def tokens():
    return pattern_tokens(1)


def wsd(**changes) -> RunConfig:
    base = dict(size="13k", context=16, batch_size=4, tokens=STEP_TOKENS, schedule="wsd", warmup_frac=0.0,
                cooldown_frac=0.2, final_lr_frac=0.0, lr=1e-2, eval_tokens=128, tasks=(), device="cpu")
    base.update(changes)
    return RunConfig(**base)


@pytest.mark.parametrize("steps,warmup_frac,cooldown_frac", [(100, 0.1, 0.2), (37, 0.05, 0.3), (10, 0.0, 0.2)])
def test_wsd_multiplier_is_the_trainers_schedule_given_its_own_lengths(steps, warmup_frac, cooldown_frac):
    warmup = warmup_steps(steps, warmup_frac)
    cooldown = max(1, round(cooldown_frac * steps))
    for step in range(steps):
        assert wsd_multiplier(step, steps, warmup, cooldown, 0.1) == lr_multiplier(
            step, steps, "wsd", warmup_frac, 0.1, cooldown_frac)


def test_plan_branches_each_budget_where_its_cooldown_starts():
    plan = plan_cooldowns(wsd(warmup_frac=0.1), [STEP_TOKENS * 30, STEP_TOKENS * 10, STEP_TOKENS * 14])
    assert [b.steps for b in plan.branches] == [10, 14, 30]
    assert [b.cooldown for b in plan.branches] == [2, 3, 6]
    assert [b.start for b in plan.branches] == [8, 11, 24]
    assert plan.warmup == 1  # the smallest budget's own warmup, round(0.1 * 10)
    # round(0.1 * 14) = 1 is shared exactly; round(0.1 * 30) = 3 is not
    assert [plan.exact(b) for b in plan.branches] == [True, True, False]
    assert plan.stable_steps == 24 and plan.total_steps == 24 + 2 + 3 + 6


def test_plan_rejects_other_schedules_and_bad_budgets():
    with pytest.raises(ConfigError, match="schedule"):
        plan_cooldowns(wsd(schedule="cosine"), [STEP_TOKENS * 10])
    with pytest.raises(ConfigError, match="budgets"):
        plan_cooldowns(wsd(), [])
    with pytest.raises(ConfigError, match="budgets"):
        plan_cooldowns(wsd(), [STEP_TOKENS * 10, STEP_TOKENS * 10 + 1])
    with pytest.raises(ConfigError, match="budgets"):
        plan_cooldowns(wsd(), [-5])


def test_a_branch_with_an_exactly_shared_stable_phase_equals_the_full_wsd_run(tokens):
    train, val = tokens
    cfg = wsd()
    budgets = [STEP_TOKENS * 10, STEP_TOKENS * 20, STEP_TOKENS * 30]
    branches = pretrain_with_cooldowns(cfg, budgets, train, val, VOCAB)
    for budget, branch in zip(budgets, branches):
        assert branch.metrics["schedule_exact"] and branch.metrics["n_tokens"] == budget
        full = pretrain_batched([cfg.replace(tokens=budget)], train, val, VOCAB)[0]
        # same operations in the same order: identical, not merely close
        assert branch.metrics["val_loss"] == full.metrics["val_loss"]
        assert branch.metrics["train_loss"] == full.metrics["train_loss"]
        assert [p["val_loss"] for p in branch.curve] == [p["val_loss"] for p in full.curve]
        alone = pretrain(cfg.replace(tokens=budget), train, val, VOCAB)
        assert branch.metrics["val_loss"] == pytest.approx(alone.metrics["val_loss"], rel=1e-4)
    # the budgets really differ: more tokens, lower loss on this easy corpus
    assert branches[2].metrics["val_loss"] < branches[0].metrics["val_loss"]


def test_batched_cooldowns_index_results_by_config_then_budget(tokens):
    train, val = tokens
    configs = [wsd(decay=0.0), wsd(decay=1.0)]
    results = pretrain_batched_with_cooldowns(configs, [STEP_TOKENS * 12, STEP_TOKENS * 6], train, val, VOCAB)
    assert [[r.metrics["decay"] for r in row] for row in results] == [[0.0, 0.0], [1.0, 1.0]]
    assert [r.metrics["steps"] for r in results[1]] == [6, 12]
    assert [r.metrics["branch_step"] for r in results[1]] == [5, 10]


def test_a_shorter_shared_warmup_is_flagged_and_its_cost_is_measured(tokens):
    train, val = tokens
    rows = compare_with_full_runs([wsd(warmup_frac=0.1)], [STEP_TOKENS * 10, STEP_TOKENS * 30], train, val, VOCAB)
    assert [r["schedule_exact"] for r in rows] == [True, False]
    assert rows[0]["val_loss_diff"] == 0.0
    assert rows[1]["own_warmup_steps"] == 3 and rows[1]["shared_warmup_steps"] == 1
    assert np.isfinite(rows[1]["val_loss_diff"])
    assert rows[0]["steps_branched"] < rows[0]["steps_full"]
