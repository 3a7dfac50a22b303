"""The loss-surface objective: Huber loss on log residuals of a log-sum-exp model.

Chinchilla approach 3 (Hoffmann et al. 2022, eq. 2 and appendix D.2), as replicated by
Besiroglu et al. 2024 (Epoch AI, arXiv 2404.10102): with theta = (a, b, e, alpha, beta),

    log L_hat = LSE(a - alpha log N, b - beta log D, e)      (E = e^e, A = e^a, B = e^b)
    objective = sum_i w_i Huber_delta(log L_hat_i - log L_i),  delta = 1e-3.

Everything here is evaluated for many parameter vectors at once (rows of `theta`), each with its
own point weights when bootstrapping (integer resampling counts), with an analytic gradient.
Rows are processed in blocks small enough to stay in cache: with thousands of rows, allocating
whole (rows x points) temporaries costs more than the arithmetic.
"""

from __future__ import annotations

import numpy as np

DELTA = 1e-3
PARAM_ORDER = ("a", "b", "e", "alpha", "beta")
_BLOCK_ELEMENTS = 16000  # rows x points per block: temporaries under 128 kB stay off mmap (no page faults)


def huber_lse(
    theta: np.ndarray,
    log_n: np.ndarray,
    log_d: np.ndarray,
    log_loss: np.ndarray,
    weights: np.ndarray | None = None,
    delta: float = DELTA,
) -> tuple[np.ndarray, np.ndarray]:
    """Objective (S,) and gradient (S, 5) for S parameter rows; weights None, (n,) or (S, n)."""
    theta = np.atleast_2d(np.asarray(theta, dtype=float))
    log_n = np.asarray(log_n, dtype=float)
    log_d = np.asarray(log_d, dtype=float)
    # (2, n) bases: a row's exponents a - alpha log N are one small matrix product, [c, alpha] @ base
    n_base = np.vstack([np.ones_like(log_n), -log_n])
    d_base = np.vstack([np.ones_like(log_d), -log_d])
    bounds = (log_n.min(), log_n.max(), log_d.min(), log_d.max())
    f = np.empty(theta.shape[0])
    g = np.empty((theta.shape[0], 5))
    block = max(1, _BLOCK_ELEMENTS // max(log_n.size, 1))
    for lo in range(0, theta.shape[0], block):
        hi = min(lo + block, theta.shape[0])
        w = weights
        if w is not None and np.ndim(w) == 2:
            w = w[lo:hi]
        f[lo:hi], g[lo:hi] = _block(theta[lo:hi], n_base, d_base, bounds, log_loss, w, delta)
    return f, g


def _block(theta, n_base, d_base, bounds, log_loss, weights, delta):
    a, b, e, alpha, beta = theta.T
    n_min, n_max, d_min, d_max = bounds
    # One shift per row (not per point) keeps every exponent <= 0 without a per-element max:
    # the largest value a - alpha*log N takes over the points is at the smallest or largest N.
    shift = np.maximum(
        np.maximum(a - np.minimum(alpha * n_min, alpha * n_max), b - np.minimum(beta * d_min, beta * d_max)), e
    )
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        e1 = np.exp(np.column_stack([a - shift, alpha]) @ n_base)
        e2 = np.exp(np.column_stack([b - shift, beta]) @ d_base)
        e3 = np.exp(e - shift)  # (rows,)
        total = e1 + e2
        total += e3[:, None]
        resid = np.log(total)
        resid += shift[:, None] - log_loss
        psi = np.clip(resid, -delta, delta)  # Huber derivative
        if weights is not None:
            psi *= weights
        # Huber(r) = psi * (r - psi / 2): 0.5 r^2 inside delta, delta (|r| - delta / 2) outside
        if weights is None:
            loss = np.einsum("ij,ij->i", psi, resid) - 0.5 * np.einsum("ij,ij->i", psi, psi)
        else:
            clipped = np.clip(resid, -delta, delta)
            loss = np.einsum("ij,ij->i", psi, resid) - 0.5 * np.einsum("ij,ij->i", psi, clipped)
        psi /= total  # folds the softmax denominator into the residual weight
        e1 *= psi
        e2 *= psi
        grad = np.empty((theta.shape[0], 5))
        ga = e1 @ n_base.T  # columns: sum(p1), -sum(p1 log N)
        gb = e2 @ d_base.T
        grad[:, 0], grad[:, 3] = ga[:, 0], ga[:, 1]
        grad[:, 1], grad[:, 4] = gb[:, 0], gb[:, 1]
        grad[:, 2] = e3 * psi.sum(axis=1)
    return loss, grad
