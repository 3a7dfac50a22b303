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
    f = np.empty(theta.shape[0])
    g = np.empty((theta.shape[0], 5))
    block = max(1, _BLOCK_ELEMENTS // max(log_n.size, 1))
    for lo in range(0, theta.shape[0], block):
        hi = min(lo + block, theta.shape[0])
        w = weights
        if w is not None and w.ndim == 2:
            w = w[lo:hi]
        f[lo:hi], g[lo:hi] = _block(theta[lo:hi], log_n, log_d, log_loss, w, delta)
    return f, g


def _block(theta, log_n, log_d, log_loss, weights, delta):
    a, b, e, alpha, beta = (theta[:, k : k + 1] for k in range(5))
    # One shift per row (not per point) keeps every exponent <= 0 without a per-element max:
    # the largest value a - alpha*log N takes over the points is at the smallest or largest N.
    shift = np.maximum.reduce(
        [
            a - np.minimum(alpha * log_n.min(), alpha * log_n.max()),
            b - np.minimum(beta * log_d.min(), beta * log_d.max()),
            e,
        ]
    )
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        e1 = np.exp(a - shift - alpha * log_n)
        e2 = np.exp(b - shift - beta * log_d)
        e3 = np.exp(e - shift)  # (rows, 1)
        total = e1 + e2
        total += e3
        resid = np.log(total)
        resid += shift
        resid -= log_loss
        psi = np.clip(resid, -delta, delta)  # Huber derivative
        loss = psi * (resid - 0.5 * psi)  # = Huber(resid): 0.5 r^2 inside delta, linear outside
        if weights is not None:
            loss *= weights
            psi *= weights
        psi /= total  # folds the softmax denominator into the residual weight
        e1 *= psi
        e2 *= psi
        grad = np.empty((theta.shape[0], 5))
        grad[:, 0] = e1.sum(axis=1)
        grad[:, 1] = e2.sum(axis=1)
        grad[:, 2] = e3[:, 0] * psi.sum(axis=1)
        grad[:, 3] = -(e1 @ log_n)
        grad[:, 4] = -(e2 @ log_d)
    return loss.sum(axis=1), grad
