"""Which response family fits measured decay curves? Leave-one-out error on real data.

    python benchmarks/response_family.py [results/quickstart/trials.csv]

Curves: every (cell, objective) of the committed quickstart table (one seed), plus the per-decay
means quoted in issues 11 and 12 (56k@20tpp val_loss, 2 seeds; 13k@200tpp val_loss with all
parameters decayed and with matrices only). Families, each fitted by least squares:

  power-quadratic  c0 + c1 z + c2 z^2, z = decay^r, r profiled   (scaling.fit.response; decay 0 included)
  log-parabola     c0 + c1 ln decay + c2 (ln decay)^2           (the old fit; positive decays only)
  plateau+wall     c0 + c1 decay^k, k profiled                   (monotone; decay 0 included)

For every positive decay of a curve, the family is refitted without that point and predicts it;
the table gives the root-mean-square of those errors per curve and over all curves. Interior
points only (the grid's end points are extrapolations for every family) are reported too.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from scaling.fit import response

QUOTED = {  # tau -> per-decay mean val_loss (decay proportional to 1 / tau; tau = inf is decay 0)
    "56k@20tpp val_loss (issue 11)": ([np.inf, 4, 1, 0.5, 0.25, 0.125], [1.707, 1.703, 1.710, 1.767, 1.904, 2.268]),
    "13k@200tpp all (issue 12)": ([np.inf, 4, 1, 0.5, 0.25, 0.125, 0.063, 0.031],
                                  [1.683, 1.683, 1.693, 1.734, 1.774, 1.885, 2.20, 3.35]),
    "13k@200tpp matrices (issue 12)": ([np.inf, 4, 1, 0.5, 0.25], [1.683, 1.680, 1.677, 1.675, 1.688]),
}


def power_quadratic(decay, y, at):
    d = response.design(decay, np.zeros(decay.size, dtype=int))
    fits = response.fit_many(d, y[None, :])
    return response.evaluate(d, fits, np.array([at]))[0, 0]


def log_parabola(decay, y, at):
    keep = decay > 0
    x = np.log(decay[keep])
    coef = np.polyfit(x, y[keep], 2)
    return float(np.polyval(coef, np.log(at)))


def plateau_wall(decay, y, at):
    best = (np.inf, None)
    for k in response.R_GRID * 2:
        x = np.column_stack([np.ones_like(decay), decay**k])
        beta, *_ = np.linalg.lstsq(x, y, rcond=None)
        rss = float(np.sum((y - x @ beta) ** 2))
        if rss < best[0]:
            best = (rss, (k, beta))
    k, beta = best[1]
    return float(beta[0] + beta[1] * at**k)


FAMILIES = {"power-quadratic": power_quadratic, "log-parabola": log_parabola, "plateau+wall": plateau_wall}


def curves(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    trials = pd.read_csv(path)
    for cell, t in trials.groupby("cell", sort=False):
        for objective in ("val_loss", "ft_score"):
            m = t.groupby("decay")[objective].mean()
            sign = 1.0 if objective == "val_loss" else -1.0
            out[f"{cell} {objective}"] = (m.index.to_numpy(float), sign * m.to_numpy(float))
    for name, (tau, value) in QUOTED.items():
        tau = np.array(tau, dtype=float)
        out[name] = (np.where(np.isinf(tau), 0.0, 1.0 / tau), np.array(value))
    return out


def loo(family, decay, y, interior_only: bool) -> np.ndarray:
    positive = np.flatnonzero(decay > 0)
    points = positive[1:-1] if interior_only else positive
    errors = []
    for i in points:
        keep = np.arange(decay.size) != i
        errors.append(family(decay[keep], y[keep], decay[i]) - y[i])
    return np.array(errors)


def main(path: str = "results/quickstart/trials.csv") -> None:
    rows = []
    pooled = {(f, s): [] for f in FAMILIES for s in ("all", "interior")}
    for name, (decay, y) in curves(path).items():
        row = {"curve": name}
        for fname, family in FAMILIES.items():
            for scope in ("all", "interior"):
                err = loo(family, decay, y, scope == "interior")
                pooled[(fname, scope)].extend(err)
                if scope == "interior":
                    row[fname] = float(np.sqrt(np.mean(err**2)))
        rows.append(row)
    table = pd.DataFrame(rows).set_index("curve")
    with pd.option_context("display.width", 160, "display.float_format", "{:.4f}".format):
        print("leave-one-out RMS error at interior decays, per curve:")
        print(table)
    print("\npooled leave-one-out RMS error (all curves):")
    for fname in FAMILIES:
        a = np.sqrt(np.mean(np.square(pooled[(fname, "all")])))
        b = np.sqrt(np.mean(np.square(pooled[(fname, "interior")])))
        wins = int((table[fname] <= table.min(axis=1) + 1e-12).sum())
        med = float(table[fname].median())
        print(f"  {fname:16s} every positive decay {a:.4f}   interior decays {b:.4f} (median curve {med:.4f})   "
              f"best on {wins} curves")


if __name__ == "__main__":
    main(*sys.argv[1:])
