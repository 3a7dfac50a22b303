"""Synthetic trials tables with a known truth, shaped like measured studies (for tests, benchmarks).

Per cell (N, D) and objective X, in u = ln tau, tau = B / (lr * decay * D) (decay 0: u = inf):

    g_X(u) = pull_X (q/p) e^(-p (u - u*)) - pull_X e^(-q (u - u*)),   p > q > 0
    val_loss = E + A N^-alpha + B D^-beta + g_L(u) + seed_L + noise_L
    ft_score = s(N, D)                   - g_F(u) + seed_F + noise_F
    ft_nll   = h(N, D)                   + g_F(u) + seed_N + noise_N   (only with plasticity="nll")

a plateau at tau = inf, a shallow optimum `depth` below it at u* = ln tau*, and a wall like
tau^-p at small tau, as measured (issues 11 and 12). p / q is not 2, so the fitted response
family (scaling.fit.response, which has p = 2 q) never contains the truth exactly. The optimum
follows a known law, ln tau* = c_X + m_X ln TPP + dev(cell), dev ~ Normal(0, cell_sd) (the part
of a cell's optimum no law explains), so ln decay* = ln(B / lr) - ln D - ln tau* follows
c + m ln N - (1 + m) ln D exactly. A seed's effect is shared by all decays of its cell; noise is
per trial. ft_nll (a minimised plasticity objective, the spec's `plasticity = "nll"`) shares
ft_score's optimum but has its own seed effects and noise. Each cell searches its own tau grid (the study's grid times a random factor), so some
optima fall outside it (censored).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

TAUS = (8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125)  # plus tau = inf (decay 0) in every cell


@dataclass(frozen=True)
class Shape:
    """g(u) for one objective (see the module docstring), in the objective's units."""

    law: tuple[float, float]  # (c, m): ln tau_opt = c + m ln TPP (before the cell's deviation)
    depth: float  # how far the optimum lies below the tau = inf plateau
    wall_rate: float  # p: the wall grows like tau^-p
    dip_rate: float  # q < p: how slowly the dip returns to the plateau, like tau^-q

    def g(self, u, u_opt):
        """wall e^(-p v) - pull e^(-q v), v = u - u_opt, scaled so the minimum is -depth at v = 0."""
        p, q = self.wall_rate, self.dip_rate
        pull = self.depth / (1.0 - q / p)
        v = np.asarray(u, dtype=float) - u_opt
        with np.errstate(over="ignore", invalid="ignore"):
            out = pull * (q / p) * np.exp(-p * v) - pull * np.exp(-q * v)
        return np.where(np.isinf(v) & (v > 0), 0.0, out)


@dataclass(frozen=True)
class Truth:
    E: float = 1.6
    A: float = 40.0
    B: float = 80.0
    alpha: float = 0.32
    beta: float = 0.30
    loss: Shape = Shape(law=(1.5, -0.5), depth=0.04, wall_rate=2.0, dip_rate=0.8)
    plastic: Shape = Shape(law=(0.0, -0.3), depth=0.05, wall_rate=1.6, dip_rate=0.7)
    cell_sd: float = 0.3  # sd of a cell's deviation from the law, in ln tau
    loss_noise: float = 0.02  # per-trial sd of val_loss (measured, issue 11)
    score_noise: float = 0.03  # per-trial sd of ft_score (measured)
    loss_seed_sd: float = 0.024  # a seed's main effect on val_loss, shared across a cell's decays (measured)
    score_seed_sd: float = 0.02  # the same for ft_score (not measured; assumed)
    nll_noise: float = 0.04  # per-trial sd of ft_nll (assumed; issue 12 measured seed sds 0.037-0.093)
    nll_seed_sd: float = 0.02  # a seed's main effect on ft_nll (assumed)
    grid_shift_sd: float = 0.7  # sd of the ln factor each cell's tau grid is shifted by
    lr: float = 6e-3
    batch_tokens: float = 2048.0

    def shape(self, objective: str) -> Shape:
        return self.loss if objective == "val_loss" else self.plastic

    def surface(self, n, d):
        return self.E + self.A * np.asarray(n, float) ** -self.alpha + self.B * np.asarray(d, float) ** -self.beta

    def log_tau_opt(self, objective: str, n, d, deviation=0.0):
        """The true ln tau* at (N, D) for a cell with this deviation from the law."""
        shape = self.shape(objective)
        c, m = shape.law
        return c + m * np.log(np.asarray(d, float) / np.asarray(n, float)) + deviation

    def log_decay_opt(self, objective: str, n, d, deviation=0.0):
        """The true ln decay* at (N, D): ln(B / lr) - ln D - ln tau*."""
        return math.log(self.batch_tokens / self.lr) - np.log(np.asarray(d, float)) - self.log_tau_opt(
            objective, n, d, deviation)

    def decay_law(self, objective: str) -> tuple[float, float, float]:
        """(c, a, b) of the true ln decay* = c + a ln N + b ln D."""
        shape = self.shape(objective)
        c, m = shape.law
        return math.log(self.batch_tokens / self.lr) - c, m, -(1.0 + m)


def simulate_trials(
    truth: Truth = Truth(),
    *,
    n_params: Sequence[float] = (1.3e4, 3e4, 5.6e4, 1e5),
    tpp: Sequence[float] = (5.0, 20.0, 80.0),
    taus: Sequence[float] = TAUS,
    seeds: int = 3,
    rng: np.random.Generator | int = 0,
    delta: float = 0.01,
    plasticity: str = "score",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, cells): a trials table and each cell's truth per objective: ln decay*, ln tau*, and
    decay_tol (largest searched-range decay within `delta` of the best; 0 if only decay 0).
    plasticity "nll" adds trials.csv's `plasticity` column ("nll") and an ft_nll column whose
    optimum is the plasticity truth (log_decay_plastic_opt); "score" gives the table as before."""
    if plasticity not in ("score", "nll"):
        raise ValueError(f"plasticity must be 'score' or 'nll', got {plasticity!r}")
    rng = np.random.default_rng(rng)
    nll_rng = np.random.default_rng(rng.integers(2**63)) if plasticity == "nll" else None
    rows, cells = [], []
    number = 0
    for n in n_params:
        for r in tpp:
            d = r * n
            label = f"{_short(n)}@{r:g}tpp"
            dev = {obj: float(rng.normal(0.0, truth.cell_sd)) for obj in ("val_loss", "ft_score")}
            u_opt = {obj: float(truth.log_tau_opt(obj, n, d, dev[obj])) for obj in dev}
            cells.append({
                "cell": label, "n_params": n, "n_tokens": d, "tpp": r,
                "log_decay_loss_opt": float(truth.log_decay_opt("val_loss", n, d, dev["val_loss"])),
                "log_decay_plastic_opt": float(truth.log_decay_opt("ft_score", n, d, dev["ft_score"])),
                "log_tau_loss_opt": float(truth.log_tau_opt("val_loss", n, d, dev["val_loss"])),
                "log_tau_plastic_opt": float(truth.log_tau_opt("ft_score", n, d, dev["ft_score"])),
                "deviation_loss": dev["val_loss"], "deviation_plastic": dev["ft_score"],
            })  # fmt: skip
            shift = math.exp(rng.normal(0.0, truth.grid_shift_sd))
            cell_taus = [math.inf] + [t * shift for t in taus]
            for obj, name in (("val_loss", "tol_loss"), ("ft_score", "tol_plastic")):
                scale = truth.batch_tokens / (truth.lr * d)  # decay = scale / tau
                cells[-1][name] = scale * true_tolerance(truth.shape(obj), u_opt[obj], [t * shift for t in taus], delta)
            base = float(truth.surface(n, d))
            skill = float(np.clip(0.25 + 0.04 * math.log(n / 1e4) + 0.02 * math.log(r), 0.05, 0.9))
            seed_l = rng.normal(0.0, truth.loss_seed_sd, seeds)
            seed_f = rng.normal(0.0, truth.score_seed_sd, seeds)
            if nll_rng is not None:
                nll_base = float(np.clip(1.2 - 0.08 * math.log(n / 1e4) - 0.03 * math.log(r), 0.2, 3.0))
                seed_n = nll_rng.normal(0.0, truth.nll_seed_sd, seeds)
            for tau in cell_taus:
                decay = truth.batch_tokens / (truth.lr * tau * d) if math.isfinite(tau) else 0.0
                u = math.log(tau) if math.isfinite(tau) else math.inf
                for s in range(seeds):
                    val = base + float(truth.loss.g(u, u_opt["val_loss"])) + seed_l[s] + rng.normal(0, truth.loss_noise)
                    score = skill - float(truth.plastic.g(u, u_opt["ft_score"])) + seed_f[s] + rng.normal(
                        0, truth.score_noise)
                    rows.append({
                        "study": "simulated", "trial_number": number, "cell": label, "size": _short(n),
                        "n_params": n, "n_tokens": d, "tpp": r, "decay": decay, "lr": truth.lr,
                        "batch_tokens": truth.batch_tokens, "tau": tau, "seed": s, "val_loss": val,
                        "ft_score": score,
                    })  # fmt: skip
                    if nll_rng is not None:
                        rows[-1]["plasticity"] = "nll"
                        rows[-1]["ft_nll"] = nll_base + float(truth.plastic.g(u, u_opt["ft_score"])) + seed_n[s] + \
                            nll_rng.normal(0, truth.nll_noise)
                    number += 1
    return pd.DataFrame(rows), pd.DataFrame(cells)


def true_tolerance(shape: Shape, u_opt: float, taus: Sequence[float], delta: float) -> float:
    """The true decay_tol as a multiple of B / (lr D): the largest tau^-1 in the searched range
    (tau = inf and [min tau, max tau]) whose g is within delta of the range's best."""
    u = np.concatenate([[math.inf], np.linspace(math.log(max(taus)), math.log(min(taus)), 4001)])
    g = shape.g(u, u_opt)
    ok = np.flatnonzero(g <= g.min() + delta)
    return 0.0 if ok.max() == 0 else float(np.exp(-u[ok.max()]))


def _short(n: float) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:g}{suffix}"
    return f"{n:g}"


@dataclass(frozen=True)
class Coverage:
    """How often 90% intervals held the truth over simulated studies (see `coverage`)."""

    n_studies: int
    level: float
    cell_hits: dict  # objective -> (hits, cells)
    tol_hits: dict  # objective -> (hits, cells) for decay_tol
    cell_kinds: dict  # objective -> {kind: count}
    law_hits: dict  # objective -> (hits, studies with a law)
    law_width_decades: dict  # objective -> median width of the prediction interval, in decades
    law_failures: dict  # objective -> studies where no law could be fitted

    def rate(self, what: str, objective: str) -> float:
        hits, total = {"cell": self.cell_hits, "tolerance": self.tol_hits, "law": self.law_hits}[what][objective]
        return hits / total if total else math.nan

    def lines(self) -> list[str]:
        out = []
        for obj in self.cell_hits:
            ch, ct = self.cell_hits[obj]
            th, tt = self.tol_hits[obj]
            lh, lt = self.law_hits[obj]
            out.append(
                f"{obj}: per-cell decay* {ch}/{ct} = {ch / max(ct, 1):.3f} ({self.cell_kinds[obj]}); per-cell "
                f"decay_tol {th}/{tt} = {th / max(tt, 1):.3f}; law 4x beyond "
                f"the largest N {lh}/{lt} = {lh / max(lt, 1):.3f}, median PI width "
                f"{self.law_width_decades[obj]:.2f} decades, no law in {self.law_failures[obj]} studies"
            )
        return out


def coverage(
    n_studies: int,
    truth: Truth = Truth(),
    *,
    seeds: int = 3,
    n_params: Sequence[float] = (1.3e4, 3e4, 5.6e4, 1e5),
    tpp: Sequence[float] = (5.0, 20.0, 80.0),
    n_bootstrap: int = 200,
    level: float = 0.9,
    factor: float = 4.0,
    first_seed: int = 0,
) -> Coverage:
    """Simulate `n_studies` studies, fit each, and count how often the `level` intervals cover the
    truth: each cell's decay* (a censored cell's one-sided interval counts too), and the decay
    law's prediction interval for a new cell at `factor` x the largest N (at the middle TPP)."""
    from scaling.errors import FitError
    from scaling.fit.laws import fit_decay_law
    from scaling.fit.optima import cell_estimates

    objectives = {"val_loss": "min", "ft_score": "max"}
    columns = {"val_loss": "log_decay_loss_opt", "ft_score": "log_decay_plastic_opt"}
    cell_hits = {o: [0, 0] for o in objectives}
    tol_hits = {o: [0, 0] for o in objectives}
    tol_columns = {"val_loss": "tol_loss", "ft_score": "tol_plastic"}
    kinds = {o: {} for o in objectives}
    law_hits = {o: [0, 0] for o in objectives}
    widths = {o: [] for o in objectives}
    failures = {o: 0 for o in objectives}
    n_new = factor * max(n_params)
    tpp_new = sorted(tpp)[len(tpp) // 2]
    for k in range(n_studies):
        rng = np.random.default_rng(first_seed + k)
        trials, cells = simulate_trials(truth, n_params=n_params, tpp=tpp, seeds=seeds, rng=rng)
        est = cell_estimates(trials, objectives, n_bootstrap=n_bootstrap, level=level, seed=first_seed + k)
        for obj in objectives:
            true = dict(zip(cells["cell"], cells[columns[obj]]))
            true_tol = dict(zip(cells["cell"], cells[tol_columns[obj]]))
            for o in est.optima[obj]:
                tol_hits[obj][0] += bool(o.tol_low <= true_tol[o.cell] <= o.tol_high)
                tol_hits[obj][1] += 1
                t = math.exp(true[o.cell])
                cell_hits[obj][0] += bool(o.low <= t <= o.high)
                cell_hits[obj][1] += 1
                kinds[obj][o.kind] = kinds[obj].get(o.kind, 0) + 1
            try:
                law = fit_decay_law(est.optima[obj], cross_validate=False)
            except FitError:
                failures[obj] += 1
                continue
            pred = law.predict(n_new, n_new * tpp_new, level=level)
            dev = rng.normal(0.0, truth.cell_sd)
            new = float(truth.log_decay_opt(obj, n_new, n_new * tpp_new, dev))
            law_hits[obj][0] += bool(pred.log_low <= new <= pred.log_high)
            law_hits[obj][1] += 1
            widths[obj].append((pred.log_high - pred.log_low) / math.log(10.0))
    return Coverage(
        n_studies=n_studies, level=level, cell_hits={o: tuple(v) for o, v in cell_hits.items()},
        tol_hits={o: tuple(v) for o, v in tol_hits.items()}, cell_kinds=kinds,
        law_hits={o: tuple(v) for o, v in law_hits.items()},
        law_width_decades={o: float(np.median(w)) if w else math.nan for o, w in widths.items()},
        law_failures=failures,
    )  # fmt: skip


@dataclass(frozen=True)
class RecommendationCoverage:
    """How often `recommend`'s intervals held the truth of the estimand they give (see
    `recommendation_coverage`)."""

    n_studies: int
    level: float
    hits: dict  # choice ("decay_loss_opt", "decay_plastic_opt") -> {estimand: (hits, studies)}
    widths: dict  # choice -> median interval width in decades over the studies with a value
    carriers: dict  # choice -> {law formula: studies}
    backtested: dict  # choice -> studies labelled "backtested"
    failures: int  # studies where recommend raised

    def lines(self) -> list[str]:
        out = []
        for choice, by in self.hits.items():
            hits = sum(h for h, _ in by.values())
            total = sum(t for _, t in by.values())
            parts = ", ".join(f"{e} {h}/{t}" for e, (h, t) in sorted(by.items()))
            laws = ", ".join(f"{f}: {n}" for f, n in sorted(self.carriers[choice].items(), key=lambda kv: -kv[1]))
            out.append(f"{choice}: covered {hits}/{total} = {hits / max(total, 1):.3f} ({parts}); median width "
                       f"{self.widths[choice]:.2f} decades; backtested in {self.backtested[choice]}; laws {laws}")  # fmt: skip
        out.append(f"recommend failed in {self.failures} of {self.n_studies} studies")
        return out


def recommendation_coverage(
    n_studies: int,
    truth: Truth = Truth(),
    *,
    seeds: int = 2,
    n_params: Sequence[float] = (1.3e4, 5.6e4),
    tpp: Sequence[float] = (20.0, 80.0),
    taus: Sequence[float] = (1.0, 0.5, 0.25, 0.125),
    n_bootstrap: int = 100,
    level: float = 0.9,
    factor: float = 4.0,
    tpp_new: float = 20.0,
    delta: float = 0.01,
    first_seed: int = 0,
) -> RecommendationCoverage:
    """Simulate studies (default: the quickstart's cells, grid and seeds, plasticity = "nll"),
    call `recommend` for a new cell at `factor` x the largest N and `tpp_new`, and count how often
    each choice's interval holds the truth of the estimand it reports: decay* of a fresh cell
    (its own deviation from the law) for "optimum", that cell's decay_tol over the study's tau
    grid for "tolerance". This checks the whole path: per-cell fits, the choice of law by
    held-out error, the fallback to the tolerance estimand and the interval."""
    from scaling.errors import FitError
    from scaling.fit.recommend import recommend

    choices = {"decay_loss_opt": ("val_loss", "tol_loss"), "decay_plastic_opt": ("ft_score", "tol_plastic")}
    hits = {c: {} for c in choices}
    widths = {c: [] for c in choices}
    carriers = {c: {} for c in choices}
    backtested = {c: 0 for c in choices}
    failures = 0
    n_new = factor * max(n_params)
    d_new = n_new * tpp_new
    scale = truth.batch_tokens / (truth.lr * d_new)
    for k in range(n_studies):
        rng = np.random.default_rng(first_seed + k)
        trials, _ = simulate_trials(truth, n_params=n_params, tpp=tpp, taus=taus, seeds=seeds, rng=rng,
                                    delta=delta, plasticity="nll")  # fmt: skip
        try:
            rec = recommend(trials, n_params=n_new, tpp=tpp_new, level=level, n_bootstrap=n_bootstrap,
                            seed=first_seed + k)  # fmt: skip
        except FitError:
            failures += 1
            continue
        for choice, (objective, _) in choices.items():
            got = getattr(rec, choice)
            dev = float(rng.normal(0.0, truth.cell_sd))
            u_opt = float(truth.log_tau_opt(objective, n_new, d_new, dev))
            if got is None or got.value is None:
                continue
            if got.estimand == "tolerance":
                true = scale * true_tolerance(truth.shape(objective), u_opt, taus, delta)
            else:
                true = math.exp(float(truth.log_decay_opt(objective, n_new, d_new, dev)))
            h, t = hits[choice].get(got.estimand, (0, 0))
            hits[choice][got.estimand] = (h + bool(got.low <= true <= got.high), t + 1)
            if got.low > 0 and math.isfinite(got.high):
                widths[choice].append(math.log10(got.high / got.low))
            else:
                widths[choice].append(math.inf)
            carriers[choice][got.formula] = carriers[choice].get(got.formula, 0) + 1
            backtested[choice] += got.label == "backtested"
    return RecommendationCoverage(
        n_studies=n_studies, level=level, hits=hits,
        widths={c: float(np.median(w)) if w else math.nan for c, w in widths.items()},
        carriers=carriers, backtested=backtested, failures=failures,
    )  # fmt: skip
