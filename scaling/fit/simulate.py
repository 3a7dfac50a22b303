"""Synthetic trials tables with a known truth, for testing the fits (and for demos).

A table looks like `scaling study` output (design.md column names). The truth:

    val_loss(N, D, decay) = E + A N^-alpha + B D^-beta + penalty_L(ln decay - ln decay*_L)
    ft_score(N, D, decay) = s(N, D) - penalty_F(ln decay - ln decay*_F)
    ln decay*_X(N, D)     = c_X + a_X ln N + b_X ln D + delta_X(cell),  delta ~ Normal(0, cell_sd)

plus Gaussian noise per trial. The penalty is k * Delta^2 near the optimum and saturates at
2 k w^2 far from it (w = well_width), so decay = 0 (Delta = -inf) gives a finite plateau, as
training without weight decay does. The per-cell deviation delta is the part of a cell's
optimum no smooth law explains; it is what a prediction interval for a new cell must cover.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Truth:
    E: float = 1.6  # nats/token: small byte-level models land around 2-6
    A: float = 40.0
    B: float = 80.0
    alpha: float = 0.32
    beta: float = 0.30
    loss_law: tuple[float, float, float] = (0.35, 0.2, -0.3)  # (c, a, b) in ln decay* = c + a ln N + b ln D
    plastic_law: tuple[float, float, float] = (2.35, 0.1, -0.2)
    loss_curvature: float = 0.02  # k_L: extra val_loss per (ln decay - ln decay*)^2
    score_curvature: float = 0.02  # k_F
    well_width: float = 3.0  # w, in ln decay
    cell_sd: float = 0.15  # sd of delta, in ln decay
    loss_noise: float = 0.004  # per-trial sd of val_loss
    score_noise: float = 0.006  # per-trial sd of ft_score
    lr: float = 3e-3
    batch_tokens: float = 4096.0

    def surface(self, n, d):
        return self.E + self.A * np.asarray(n, float) ** -self.alpha + self.B * np.asarray(d, float) ** -self.beta

    def log_decay_opt(self, objective: str, n, d):
        """The law's ln decay* at (N, D), without the per-cell deviation."""
        c, a, b = self.loss_law if objective == "val_loss" else self.plastic_law
        return c + a * np.log(n) + b * np.log(d)

    def penalty(self, k: float, delta):
        w2 = self.well_width**2
        return 2.0 * k * w2 * (1.0 - np.exp(-np.square(delta) / (2.0 * w2)))


DECAYS = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def simulate_trials(
    truth: Truth = Truth(),
    *,
    n_params: Sequence[float] = (1e4, 3e4, 1e5, 3e5),
    tpp: Sequence[float] = (5.0, 20.0, 80.0),
    decays: Sequence[float] = DECAYS,
    seeds: int = 2,
    rng: np.random.Generator | int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, cells): a trials table and the true per-cell optima (ln decay* with deviation)."""
    rng = np.random.default_rng(rng)
    rows, cells = [], []
    number = 0
    for n in n_params:
        for r in tpp:
            d = r * n
            log_opt = {
                obj: float(truth.log_decay_opt(obj, n, d) + rng.normal(0.0, truth.cell_sd))
                for obj in ("val_loss", "ft_score")
            }
            label = f"{_short(n)}@{r:g}tpp"
            cells.append({"cell": label, "n_params": n, "n_tokens": d, "tpp": r,
                          "log_decay_loss_opt": log_opt["val_loss"], "log_decay_plastic_opt": log_opt["ft_score"]})  # fmt: skip
            base_score = float(np.clip(0.25 + 0.04 * math.log(n / 1e4) + 0.02 * math.log(r), 0.05, 0.9))
            for decay in decays:
                log_decay = math.log(decay) if decay > 0 else -math.inf
                for seed in range(seeds):
                    dl = log_decay - log_opt["val_loss"]
                    df_ = log_decay - log_opt["ft_score"]
                    val = float(truth.surface(n, d) + truth.penalty(truth.loss_curvature, dl)
                                + rng.normal(0.0, truth.loss_noise))  # fmt: skip
                    score = float(base_score - truth.penalty(truth.score_curvature, df_)
                                  + rng.normal(0.0, truth.score_noise))  # fmt: skip
                    gap = 0.05 / (1.0 + decay) + abs(rng.normal(0.0, 0.003))
                    before = base_score * 0.4
                    rows.append({
                        "study": "simulated", "trial_number": number, "cell": label, "size": _short(n),
                        "n_params": n, "n_params_total": 1.3 * n, "n_tokens": d, "tpp": r,
                        "decay": decay, "lr": truth.lr, "batch_tokens": truth.batch_tokens,
                        "tau": truth.batch_tokens / (truth.lr * decay * d) if decay > 0 else math.inf,
                        "seed": seed, "val_loss": val, "train_loss": val - gap, "gap": gap,
                        "ft_score": score, "ft_gain": score - before,
                        "probe_acc": float(np.clip(0.5 + 0.05 * math.log1p(decay), 0, 1)),
                        "qk_rank": 16.0 / (1.0 + decay),
                        "ft_arithmetic_before": before, "ft_arithmetic_after": score,
                        "wall_s": 1.0, "schedule": "cosine",
                    })  # fmt: skip
                    number += 1
    return pd.DataFrame(rows), pd.DataFrame(cells)


def _short(n: float) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:g}{suffix}"
    return f"{n:g}"
