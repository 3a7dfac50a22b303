"""Pure pieces of pretraining: schedules, budgets, tau, and the AdamW decay update."""

import math

import pytest
import torch

from scaling.config import RunConfig, token_budget
from scaling.core.budget import tau
from scaling.core.schedule import lr_multiplier
from scaling.core.shapes import LADDER
from scaling.errors import ConfigError
from scaling.train.model import GPT
from scaling.train.single import build_optimizer, param_groups


def test_cosine_schedule_at_key_steps():
    steps = 100  # 10 warmup steps
    assert lr_multiplier(0, steps) == pytest.approx(0.1)
    assert lr_multiplier(9, steps) == pytest.approx(1.0)
    assert lr_multiplier(10, steps) == pytest.approx(1.0)
    midpoint = 10 + (steps - 10 - 1) / 2
    assert lr_multiplier(int(midpoint), steps) == pytest.approx(0.55, abs=0.02)
    assert lr_multiplier(99, steps) == pytest.approx(0.1)


def test_wsd_schedule_is_flat_then_cools_down_with_one_minus_sqrt():
    steps = 100  # warmup 10, stable to step 79, cooldown over the last 20 steps
    kw = dict(schedule="wsd", warmup_frac=0.1, final_lr_frac=0.0, cooldown_frac=0.2)
    assert lr_multiplier(50, steps, **kw) == 1.0
    assert lr_multiplier(79, steps, **kw) == 1.0
    assert lr_multiplier(80, steps, **kw) == pytest.approx(1 - math.sqrt(1 / 20))
    assert lr_multiplier(84, steps, **kw) == pytest.approx(1 - math.sqrt(5 / 20))
    assert lr_multiplier(99, steps, **kw) == pytest.approx(0.0)


def test_token_budget_rounds_to_whole_steps():
    cfg = RunConfig(size="13k", tpp=5, batch_size=8, context=64)  # 512 tokens a step
    steps, n_tokens = token_budget(cfg, 13408)
    assert steps == round(5 * 13408 / 512)
    assert n_tokens == steps * 512


def test_tau_is_the_ema_timescale_as_a_fraction_of_the_run():
    assert tau(batch_tokens=4096, lr=1e-3, decay=0.1, n_tokens=4096 * 1000) == pytest.approx(10.0)
    assert tau(4096, 1e-3, 0.0, 4096 * 1000) == math.inf
    assert tau(4096, 1e-3, 0.01, 4096 * 1000, decay_mode="independent") == pytest.approx(0.1)


def test_coupled_decay_update_matches_the_adamw_formula():
    """One step: p' = p - lr*decay*p - lr * m_hat / (sqrt(v_hat) + eps), with m_hat = g and
    v_hat = g^2 after bias correction on the first step."""
    torch.manual_seed(0)
    model = GPT(LADDER["13k"], 258, 16)
    cfg = RunConfig(size="13k", lr=0.01, decay=0.5)
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    p = model.blocks[0].attn.wq.weight
    q = model.blocks[0].attn.wk.weight
    before, q_before = p.detach().clone(), q.detach().clone()
    grad = torch.randn_like(p)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    p.grad = grad.clone()
    opt.step()
    expected = before * (1 - 0.01 * 0.5) - 0.01 * grad / (grad.abs() + 1e-8)
    assert torch.allclose(p.detach(), expected, atol=1e-7)
    # a parameter with zero gradient only shrinks, by exactly lr * decay
    assert torch.allclose(q.detach(), q_before * (1 - 0.01 * 0.5), atol=1e-8)


def test_independent_decay_does_not_scale_with_the_peak_lr():
    model = GPT(LADDER["13k"], 258, 16)
    for lr in (1e-3, 1e-2):
        groups = param_groups(model, RunConfig(size="13k", lr=lr, decay=1e-4, decay_mode="independent"))
        # PyTorch multiplies weight_decay by lr: the product must equal the decay itself
        assert groups[0]["weight_decay"] * lr == pytest.approx(1e-4)


def test_matrices_only_leaves_norm_gains_undecayed():
    model = GPT(LADDER["13k"], 258, 16)
    groups = param_groups(model, RunConfig(size="13k", decay_params="matrices"))
    assert all(p.dim() >= 2 for p in groups[0]["params"])
    assert all(p.dim() == 1 for p in groups[1]["params"]) and groups[1]["weight_decay"] == 0.0
    everything = param_groups(model, RunConfig(size="13k"))
    assert len(everything) == 1 and len(everything[0]["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("changes, field", [
    (dict(decay=-0.1), "decay"),
    (dict(decay=float("nan")), "decay"),
    (dict(size="huge"), "size"),
    (dict(lr=0.0), "lr"),
    (dict(tokens=1000, tpp=5.0), "tokens/tpp"),
    (dict(schedule="linear"), "schedule"),
    (dict(batch_size=0), "batch_size"),
])
def test_bad_run_configs_name_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        RunConfig(**changes)
