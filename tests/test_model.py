"""The model and its size ladder: shapes, parameter counts, FLOPs."""

import pytest
import torch

from scaling.errors import ConfigError
from scaling.core.shapes import LADDER, ModelShape, non_embedding_params, total_params, train_flops_per_token
from scaling.train.model import GPT


def test_parameter_count_matches_a_hand_count():
    # d_model 32, 1 layer, 2 heads, d_ff 96:
    # attention 4 * 32*32 = 4096; SwiGLU 3 * 32*96 = 9216; two norm gains 64; final norm 32
    shape = ModelShape(d_model=32, n_layers=1, n_heads=2, d_ff=96)
    assert non_embedding_params(shape) == 4096 + 9216 + 64 + 32
    # plus untied embedding and head, 258 x 32 each
    assert total_params(shape, vocab_size=258) == 13408 + 2 * 258 * 32


@pytest.mark.parametrize("name", list(LADDER))
def test_counts_agree_with_the_torch_module(name):
    shape = LADDER[name]
    model = GPT(shape, vocab_size=258, context=16)
    n_total = sum(p.numel() for p in model.parameters())
    n_embedding = model.embed.weight.numel() + model.head.weight.numel()
    assert n_total == total_params(shape, 258)
    assert n_total - n_embedding == non_embedding_params(shape)


def test_ladder_spans_ten_thousand_to_ten_million_params_in_order():
    counts = [non_embedding_params(s) for s in LADDER.values()]
    assert len(counts) >= 6
    assert counts == sorted(counts)
    assert counts[0] < 20_000 and counts[-1] > 10_000_000
    for name, count in zip(LADDER, counts):  # each rung is named after its rounded size
        value = float(name[:-1]) * (1e3 if name.endswith("k") else 1e6)
        assert abs(value - count) / count < 0.05


def test_flops_per_token_is_six_n_plus_the_attention_term():
    shape = ModelShape(d_model=128, n_layers=4, n_heads=4, d_ff=352)
    n = non_embedding_params(shape) + 258 * 128
    assert train_flops_per_token(shape, 258, 256) == 6 * n + 6 * 4 * 256 * 128


def test_forward_is_causal():
    torch.manual_seed(0)
    model = GPT(LADDER["13k"], vocab_size=258, context=16).eval()
    x = torch.randint(0, 258, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 258  # change the future
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(y)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_heads_must_divide_width():
    with pytest.raises(ConfigError, match="n_heads"):
        ModelShape(d_model=30, n_layers=1, n_heads=4, d_ff=64)
