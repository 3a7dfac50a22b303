"""The real-valued rotary (for torch.compile and bf16) equals the complex one."""

import torch

from scaling.config import RunConfig, model_shape
from scaling.train import stacked_ops as ops
from scaling.train.model import rotary_tables
from scaling.train.stacked_model import StackedGPT


def rope_table(t=16, heads=2, head_dim=8):
    cos, sin = rotary_tables(t, head_dim)
    return torch.complex(cos, sin).unsqueeze(1).expand(t, heads, head_dim // 2).contiguous()


def test_real_and_complex_rotary_split_agree_forward_and_backward():
    torch.manual_seed(0)
    k, b, t, heads, hd = 3, 2, 16, 2, 8
    rope = rope_table(t, heads, hd)
    qkv = torch.randn(k, b * t, 3 * heads * hd, dtype=torch.float64)
    grads = [torch.randn(k * b, heads, t, hd, dtype=torch.float64) for _ in range(3)]
    outs = []
    for table in (rope.to(torch.complex128), ops.real_rope(rope).double()):
        x = qkv.clone().requires_grad_(True)
        q, kk, v = ops.rotary_split(x, table, b, heads)
        sum((z * g).sum() for z, g in zip((q, kk, v), grads)).backward()
        outs.append((q.detach(), kk.detach(), v.detach(), x.grad))
    for a, c in zip(*outs):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)
    # and it is a rotation: lengths of each pair are kept
    q = outs[0][0]
    assert not torch.allclose(q, qkv[..., :heads * hd].reshape(k * b, t, heads, hd).transpose(1, 2))


def test_stacked_model_losses_and_gradients_agree_with_the_real_rotary():
    cfg = RunConfig(size="13k", context=32)
    shape = model_shape(cfg)
    models = [StackedGPT.from_seeds(shape, 258, 32, [0, 1], torch.device("cpu")) for _ in range(2)]
    models[1].real_rotary = True
    idx = torch.randint(0, 258, (2, 4, 33), generator=torch.Generator().manual_seed(0))
    losses = []
    for m in models:
        m.grad.zero_()
        loss = m.losses(idx[..., :-1], idx[..., 1:])
        loss.sum().backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(models[0].grad, models[1].grad, rtol=1e-4, atol=1e-6)
