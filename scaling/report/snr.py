"""Signal-to-noise of each plasticity metric (and val_loss) across a cell's decays.

Per cell and metric: the *effect* is the range (best minus worst) of the seed-adjusted decay
means (`scaling.study.refine.seed_adjusted_means`: value = m[decay] + b[seed]); the *noise* is
one trial's seed sd, the pooled within-decay sd across seeds; `snr` = effect / noise. The
paired sd (the residual sd of the additive model, what a paired comparison of two decays
sees) is given too, and `floor`: the range the decay means would have with no decay effect at
all (the expected range of k normal means of sd paired_sd / sqrt(seeds)), so an effect near
the floor is noise. Cells with fewer than two seeds have no noise estimate.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd

METRICS = ("val_loss", "ft_nll", "ft_score", "ft_nll_gain", "ft_gain")


def _pooled_sd(groups: list[np.ndarray]) -> float:
    ss = sum(float(((g - g.mean()) ** 2).sum()) for g in groups if len(g) > 1)
    df = sum(len(g) - 1 for g in groups if len(g) > 1)
    return math.sqrt(ss / df) if df > 0 else math.nan


def expected_range(k: int) -> float:
    """E[max - min] of k independent standard normals (1.128 for 2, 1.693 for 3)."""
    from scipy.stats import norm

    x = np.linspace(-8, 8, 4001)
    cdf = norm.cdf(x)
    return float(np.trapezoid(1 - cdf ** k - (1 - cdf) ** k, x))


def cell_snr(rows: pd.DataFrame, metric: str) -> dict[str, float]:
    """effect, seed_sd, paired_sd, snr (effect / seed_sd), n_decays, n_seeds of one cell's metric."""
    from scaling.study.refine import seed_adjusted_means

    rows = rows[np.isfinite(pd.to_numeric(rows[metric], errors="coerce").to_numpy(dtype=float))]
    decays = rows["decay"].to_numpy(dtype=float)
    seeds = rows["seed"].to_numpy(dtype=int)
    values = rows[metric].to_numpy(dtype=float)
    out = {"effect": math.nan, "seed_sd": math.nan, "paired_sd": math.nan, "snr": math.nan, "floor": math.nan,
           "n_decays": len(set(decays.tolist())), "n_seeds": len(set(seeds.tolist()))}
    if out["n_decays"] < 2:
        return out
    means = seed_adjusted_means(decays, seeds, values)
    out["effect"] = max(means.values()) - min(means.values())
    out["seed_sd"] = _pooled_sd([values[decays == d] for d in means])
    if out["n_seeds"] > 1:
        fitted_seed = {s: float(np.mean([v - means[d] for d, s2, v in zip(decays, seeds, values) if s2 == s]))
                       for s in set(seeds.tolist())}
        resid = values - np.array([means[d] + fitted_seed[s] for d, s in zip(decays, seeds)])
        df = len(values) - out["n_decays"] - out["n_seeds"] + 1
        out["paired_sd"] = math.sqrt(float((resid ** 2).sum()) / df) if df > 0 else math.nan
        out["floor"] = expected_range(out["n_decays"]) * out["paired_sd"] / math.sqrt(out["n_seeds"])
    out["snr"] = out["effect"] / out["seed_sd"] if out["seed_sd"] and math.isfinite(out["seed_sd"]) else math.nan
    return out


def snr_table(trials: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> pd.DataFrame:
    """One row per (metric, cell) present in `trials` (columns cell, decay, seed, metrics)."""
    rows = []
    for metric in metrics:
        if metric not in trials.columns:
            continue
        for cell in sorted(trials["cell"].unique()):
            rows.append({"metric": metric, "cell": cell, **cell_snr(trials[trials["cell"] == cell], metric)})
    return pd.DataFrame(rows, columns=["metric", "cell", "effect", "seed_sd", "paired_sd", "snr", "floor",
                                       "n_decays", "n_seeds"])


def snr_html(trials: pd.DataFrame) -> str:
    """The report's SNR section: per metric, the median over cells and each cell; '' without
    the columns it needs."""
    if not {"cell", "decay", "seed"} <= set(trials.columns):
        return ""
    table = snr_table(trials)
    if table.empty:
        return ""

    def f(x: float) -> str:
        return "-" if not math.isfinite(x) else f"{x:.3g}"

    body = []
    for metric, group in table.groupby("metric", sort=False):
        cells = "; ".join(f"{c} {f(s)}" for c, s in zip(group["cell"], group["snr"]))
        body.append(f"<tr><td>{html.escape(metric)}</td><td>{f(group['effect'].median())}</td>"
                    f"<td>{f(group['seed_sd'].median())}</td><td>{f(group['paired_sd'].median())}</td>"
                    f"<td>{f(group['snr'].median())}</td><td>{f(group['floor'].median())}</td>"
                    f"<td>{html.escape(cells)}</td></tr>")
    note = ("Effect: range of the seed-adjusted decay means in a cell; seed sd: one trial's sd across seeds at a "
            "decay (pooled); paired sd: residual sd once each seed's offset is removed; noise floor: the effect "
            "expected with no decay effect at all. Medians over cells; '-' where a cell has one seed.")
    return ("<section id='snr'><h2>Signal-to-noise per plasticity metric</h2><table><thead><tr><th>metric</th>"
            "<th>effect</th><th>seed sd</th><th>paired sd</th><th>effect / seed sd</th><th>noise floor</th>"
            "<th>effect / seed sd per cell</th></tr>"
            f"</thead><tbody>{''.join(body)}</tbody></table><p class='caption'>{html.escape(note)}</p></section>")
