"""Per-model ("stacked") building blocks of the stacked trainer, tuned for small models.

A small model spends its time streaming activation-sized tensors through memory, not in
arithmetic, so every block here is written to make fewer passes over them than autograd's
default chain would: fused gradients written straight into one buffer (no split/cat), softmax
normalisation moved from the (K, N, V) side to the small sides, RMSNorm gains folded into the
next weight. Each block computes the same maths as its `scaling.train.model` counterpart; the tests
compare the stacked model against `GPT` to float rounding.

Shapes: K models, N = batch * time tokens per model, d model width, V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear(x: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
    """Per-model x @ W^T with W stored transposed: (K, N, in) x (K, in, out) -> (K, N, out)."""
    return torch.bmm(x, weight_t)


def with_gain(weight_t: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """(K, in, out) * (K, in): W (g * x) = (W diag g) x, so an RMSNorm gain costs a weight-sized
    product instead of an activation-sized one."""
    return weight_t * gain.unsqueeze(2)


def interleave_heads(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder each head's output rows from GPT's half-split rotary layout [x1 | x2] to adjacent
    pairs (x1_0, x2_0, x1_1, ...), so rotary becomes one complex product. Applied to both W_Q and
    W_K it leaves every q.k, and so the model, unchanged."""
    d, width = w.shape
    hd = d // n_heads
    return w.reshape(n_heads, 2, hd // 2, width).transpose(1, 2).reshape(d, width)


def split_heads(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of `interleave_heads`."""
    d, width = w.shape
    hd = d // n_heads
    return w.reshape(n_heads, hd // 2, 2, width).transpose(1, 2).reshape(d, width)


class _RMSNorm(torch.autograd.Function):
    """x * rsqrt(mean(x^2) + eps) over the last dim, without a gain. Backward in one formula,
    dx = rstd * (dy - y * mean(dy * y)), instead of autograd's chain through pow/mean/rsqrt."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:
        xf = x.float()
        rstd = torch.linalg.vector_norm(xf, dim=-1, keepdim=True).square_().div_(x.shape[-1]).add_(eps).rsqrt_()
        y = (xf * rstd).to(x.dtype)
        ctx.save_for_backward(y, rstd)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        y, rstd = ctx.saved_tensors
        yf, dyf = y.float(), dy.float()
        mean = torch.linalg.vecdot(dyf, yf, dim=-1).unsqueeze(-1).div_(y.shape[-1])
        dx = torch.addcmul(dyf, yf, mean, value=-1.0).mul_(rstd)
        return dx.to(dy.dtype), None


def rms_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm without its gain (fold the gain into the next weight with `with_gain`)."""
    return _RMSNorm.apply(x, eps)


class _SwiGLU(torch.autograd.Function):
    """(K, N, 2 ff) fused gate|up projections -> silu(gate) * up; backward writes both halves of
    the gradient into one buffer (no split/cat)."""

    @staticmethod
    def forward(ctx, gate_up: torch.Tensor) -> torch.Tensor:
        ff = gate_up.shape[-1] // 2
        act = F.silu(gate_up[..., :ff])
        ctx.save_for_backward(gate_up, act)
        return act * gate_up[..., ff:]

    @staticmethod
    def backward(ctx, dh: torch.Tensor):
        gate_up, act = ctx.saved_tensors
        ff = gate_up.shape[-1] // 2
        if torch.compiler.is_compiling():  # `out=` into a view is a graph break: the functional form
            d_gate = torch.ops.aten.silu_backward(dh * gate_up[..., ff:], gate_up[..., :ff])
            return torch.cat((d_gate, dh * act), dim=-1)
        grad = torch.empty_like(gate_up)
        torch.mul(dh, act, out=grad[..., ff:])
        torch.ops.aten.silu_backward.grad_input(dh * gate_up[..., ff:], gate_up[..., :ff], grad_input=grad[..., :ff])
        return grad


def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    return _SwiGLU.apply(gate_up)


def _rotate(x: torch.Tensor, rope: torch.Tensor, out: torch.Tensor) -> None:
    """out = x rotated pairwise, (x0, x1) -> (x0 cos - x1 sin, x0 sin + x1 cos) with pairs adjacent
    in the last dim; x, out (..., T, H, hd). `rope` is either complex (T, H, hd/2), e^(i angle):
    one complex product in float32/64; or real (T, H, hd/2, 2), (cos, sin) (`real_rope`): the
    real form, which bf16/fp16 (no complex type) and torch.compile (no complex codegen) need.
    Under torch.compile use `_rotated` (no `out=`)."""
    shape = x.shape[:-1] + (x.shape[-1] // 2, 2)
    if rope.is_complex() and x.dtype in (torch.float32, torch.float64):
        torch.mul(torch.view_as_complex(x.reshape(shape)), rope, out=torch.view_as_complex(out.view(shape)))
        return
    out.copy_(_rotated(x, rope))


def _rotated(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """x rotated as `_rotate` does, as a new tensor, in the real form: (x0 cos - x1 sin,
    x0 sin + x1 cos). What torch.compile uses (an `out=` into a view is a graph break there, and
    it has no complex codegen), and `_rotate` where no complex product applies."""
    pairs = x.reshape(x.shape[:-1] + (x.shape[-1] // 2, 2))
    if rope.is_complex():
        cos, sin = rope.real.to(x.dtype), rope.imag.to(x.dtype)
    else:
        cos, sin = rope[..., 0].to(x.dtype), rope[..., 1].to(x.dtype)
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).view(x.shape)


def real_rope(rope: torch.Tensor) -> torch.Tensor:
    """The complex rotary table (T, H, hd/2) as real (T, H, hd/2, 2) pairs (cos, sin)."""
    return torch.view_as_real(rope).contiguous()


def _inverse(rope: torch.Tensor) -> torch.Tensor:
    """The rotation by minus each angle, in `rope`'s form."""
    if rope.is_complex():
        return rope.conj().resolve_conj()  # (a copy; tiny)
    return torch.stack((rope[..., 0], -rope[..., 1]), dim=-1)


class _RotarySplit(torch.autograd.Function):
    """Fused q|k|v projections (K, N, 3d) -> rotated q, rotated k, v, each (K, B, T, H, hd)
    contiguous; backward writes dq, dk (rotated back) and dv into one (K, N, 3d) buffer."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, rope: torch.Tensor, batch: int, heads: int):
        k, n, three_d = qkv.shape
        d = three_d // 3
        shape = (k, batch, n // batch, heads, d // heads)
        ctx.save_for_backward(rope)
        ctx.qkv_shape = qkv.shape
        v = qkv[..., 2 * d:].reshape(shape).contiguous()
        if torch.compiler.is_compiling():
            return _rotated(qkv[..., :d].reshape(shape), rope), _rotated(qkv[..., d:2 * d].reshape(shape), rope), v
        q, kk = qkv.new_empty(shape), qkv.new_empty(shape)
        _rotate(qkv[..., :d].view(shape), rope, q)
        _rotate(qkv[..., d:2 * d].view(shape), rope, kk)
        return q, kk, v

    @staticmethod
    def backward(ctx, dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor):
        (rope,) = ctx.saved_tensors
        k, n, three_d = ctx.qkv_shape
        d = three_d // 3
        conj = _inverse(rope)
        if torch.compiler.is_compiling():
            parts = (_rotated(dq.contiguous(), conj), _rotated(dk.contiguous(), conj), dv)
            return torch.cat([z.reshape(k, n, d) for z in parts], dim=-1), None, None, None
        grad = dq.new_empty(k, n, three_d)
        _rotate(dq.contiguous(), conj, grad[..., :d].view(dq.shape))
        _rotate(dk.contiguous(), conj, grad[..., d:2 * d].view(dk.shape))
        grad[..., 2 * d:].view(dv.shape).copy_(dv)
        return grad, None, None, None


def rotary_split(qkv: torch.Tensor, rope: torch.Tensor, batch: int, heads: int):
    """(K, N, 3d) -> q, k, v as (K * B, H, T, hd), q and k rotated (pairs adjacent, see
    `interleave_heads`) by `rope` (complex or real, see `_rotate`), ready for
    scaled_dot_product_attention."""
    k = qkv.shape[0]
    return tuple(z.view(k * batch, *z.shape[2:]).transpose(1, 2) for z in _RotarySplit.apply(qkv, rope, batch, heads))


class _HeadCrossEntropy(torch.autograd.Function):
    """Per-model mean cross-entropy of the output head, fused: x (K, N, d), head W_t (K, d, V),
    targets (K, N) -> (K,). Same maths as F.cross_entropy with fewer passes over (K, N, V), the
    largest tensor of a small model: the logits become exp(logits) in place (shifted by the row max
    only if some logit would overflow), get the one-hot term subtracted at N positions, and are read
    once more by each backward product; the per-row softmax normalisation is applied to the small
    (K, N, d) side instead."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight_t: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
        with torch.autocast(device_type, enabled=False):
            xc, wc = x.to(dtype), weight_t.to(dtype)
            logits = torch.bmm(xc, wc).float()
            picked = logits.gather(2, targets.unsqueeze(2))
            lse = None
            # CPU, where passes over memory are the cost: skip the max shift unless some row overflows
            # (checked on the sums). Elsewhere, and under torch.compile (no data-dependent branch), shift.
            if x.device.type == "cpu" and not torch.compiler.is_compiling():
                exps = logits.exp_()  # in place: on overflow the logits are recomputed
                sums = exps.sum(2, keepdim=True)
                if bool(torch.isfinite(sums).all()):
                    lse = sums.log()
                else:
                    logits = torch.bmm(xc, wc).float()
            if lse is None:
                peak = logits.amax(2, keepdim=True)
                exps = logits.sub_(peak).exp_()
                sums = exps.sum(2, keepdim=True)
                lse = peak + sums.log()
            per_token = (lse - picked).squeeze(2)
        ctx.save_for_backward(xc, wc, exps, sums, targets)
        ctx.input_dtypes = (x.dtype, weight_t.dtype)
        return per_token.mean(dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # d loss_k / d logits = s_k (softmax - onehot), s_k = grad_k / N, softmax = exps / sums, so
        # with r = s / sums and e = exps - sums * onehot:  dx = (e @ W_t^T) * r,  dW_t = (x * r)^T @ e.
        xc, wc, exps, sums, targets = ctx.saved_tensors
        k, n, _ = exps.shape
        row = (grad.float() / n).view(k, 1, 1) / sums
        exps.scatter_add_(2, targets.unsqueeze(2), -sums)  # in place: saved for this one backward only
        e = exps.to(wc.dtype)
        grad_x = torch.bmm(e, wc.transpose(1, 2)).float().mul_(row)
        grad_w = torch.bmm((xc.float() * row).to(wc.dtype).transpose(1, 2), e)
        return grad_x.to(ctx.input_dtypes[0]), grad_w.to(ctx.input_dtypes[1]), None


def head_cross_entropy(x: torch.Tensor, weight_t: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-model mean next-token loss (K,) of hidden states x (K, N, d) under head W_t (K, d, V)."""
    return _HeadCrossEntropy.apply(x, weight_t, targets)
