"""The study report: rendered from a small synthetic study, opened in headless Chromium.

The synthetic study below has known per-cell optima (a loss-optimal decay and a
plasticity-optimal one `plastic_factor` times larger), but the tests never assert the science:
they check that the report draws every figure without JavaScript errors, that its words are the
fit's numbers, and that it degrades (one cell, no fine-tuning columns) instead of failing.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from scaling.fit.table import human
from scaling.report import build_report, render_tables, write_report
from scaling.report.analysis import fit_for_report
from scaling.report.data import StudyTables, check_trials, load_study
from scaling.report.page import render, sections
from scaling.report.summary import decay_ratios, summarise

DECAYS = (0.0, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
ALL_FIGURES = ("loss-vs-decay", "finetune-vs-decay", "tasks-vs-decay", "pareto", "decay-laws", "loss-surface", "surface-residuals",
               "mechanisms", "curves")  # fmt: skip
BOOTSTRAP = 20  # enough for intervals to exist; the tests check drawing, not coverage


def _bowl(x: float, centre: float, depth: float) -> float:
    """A well in ln decay that saturates far away (so decay = 0 gives a finite plateau)."""
    z = (x - centre) ** 2
    return depth * z / (1.0 + z / 16.0)


def synthetic_study(
    seed: int = 0,
    sizes=(2e4, 6e4, 2e5),
    tpps=(10.0, 40.0),
    decays=DECAYS,
    plastic_factor: float = 4.0,
    tasks=("arithmetic", "code"),
    with_ft: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, curves) shaped like `scaling study export` output. trial_number restarts in every
    cell, as Optuna numbers trials per cell study, so curves must be joined on (cell, trial_number)."""
    rng = np.random.default_rng(seed)
    rows, curves = [], []
    lr, batch = 3e-3, 4096.0
    for n in sizes:
        for tpp in tpps:
            d = n * tpp
            cell = f"{human(n)}@{tpp:g}tpp"
            loss_opt = math.log(0.3 * (n / 1e5) ** 0.1 * (tpp / 20) ** -0.3) + rng.normal(0, 0.1)
            plastic_opt = loss_opt + math.log(plastic_factor) + rng.normal(0, 0.1)
            base = 1.9 + 40 * n**-0.35 + 100 * d**-0.35  # about 3.5 to 5 nats/token
            skill = 0.3 + 0.05 * math.log10(n / 1e4)
            for number, decay in enumerate(decays):
                x = math.log(decay) if decay > 0 else math.log(1e-5)
                val = base + _bowl(x, loss_opt, 0.01) + rng.normal(0, 0.002)
                gap = 0.05 / (1 + decay) + abs(rng.normal(0, 0.002))
                row = dict(study="synthetic", cell=cell, trial_number=number, size=human(n), seed=0, decay=decay,
                           lr=lr, n_params=n, n_params_total=1.4 * n, n_tokens=d, tpp=tpp, batch_tokens=batch,
                           steps=d / batch, tau=batch / (lr * decay * d) if decay > 0 else math.inf,
                           val_loss=val, train_loss=val - gap, gap=gap,
                           probe_acc=min(1.0, 0.5 + 0.04 * math.log1p(10 * decay) + rng.normal(0, 0.005)),
                           qk_rank=16 / (1 + decay) + rng.normal(0, 0.1))  # fmt: skip
                if with_ft:
                    afters, gains = [], []
                    for k, task in enumerate(tasks):
                        before = 0.1 + 0.02 * k + rng.normal(0, 0.005)
                        after = skill - _bowl(x, plastic_opt, 0.008) + 0.03 * k + rng.normal(0, 0.004)
                        row[f"ft_{task}_before"], row[f"ft_{task}_after"] = before, after
                        afters.append(after)
                        gains.append(after - before)
                    row["ft_score"], row["ft_gain"] = float(np.mean(afters)), float(np.mean(gains))
                rows.append(row)
                steps = np.linspace(0, d / batch, 12).round()
                for i, step in enumerate(steps):
                    train = val + (5.5 - val) * math.exp(-4 * step / steps[-1])
                    curves.append(dict(cell=cell, trial_number=number, step=step, tokens=step * batch, lr=lr,
                                       train_loss=train, val_loss=train + gap if i % 4 == 3 else math.nan))  # fmt: skip
    return pd.DataFrame(rows), pd.DataFrame(curves)


@pytest.fixture(scope="module")
def full_study(tmp_path_factory):
    """A 6-cell study folder read back as the CLI reads it, its fits (made once: the loss-surface
    fit is the slow part) and its rendered report, written to report.html."""
    folder = tmp_path_factory.mktemp("results") / "synthetic"
    folder.mkdir()
    trials, curves = synthetic_study()
    trials.to_csv(folder / "trials.csv", index=False)
    curves.to_csv(folder / "curves.csv", index=False)
    pd.DataFrame([dict(study="synthetic", cell="200k@40tpp", trial_number=9, size="200k", seed=0, decay=30.0,
                       fail_kind="diverged", fail_reason="pretraining diverged at step 12: loss nan")]).to_csv(
        folder / "failed.csv", index=False)  # fmt: skip
    tables = load_study(folder)
    rfit = fit_for_report(tables.trials, n_bootstrap=BOOTSTRAP)
    report = render(tables, rfit)
    (folder / "report.html").write_text(report.html, encoding="utf-8")
    return SimpleNamespace(folder=folder, tables=tables, rfit=rfit, report=report)


@pytest.fixture(scope="module")
def study_folder(full_study) -> Path:
    return full_study.folder


@pytest.fixture(scope="module")
def degraded_folder(tmp_path_factory) -> Path:
    """One cell, no fine-tuning columns, no curves: the report must still render what it can."""
    folder = tmp_path_factory.mktemp("results") / "one_cell"
    folder.mkdir()
    trials, _ = synthetic_study(sizes=(6e4,), tpps=(20.0,), with_ft=False)
    trials.to_csv(folder / "trials.csv", index=False)
    write_report(folder, n_bootstrap=BOOTSTRAP)
    return folder


@pytest.fixture(scope="module")
def edge_folder(tmp_path_factory) -> Path:
    """Two cells whose best decay is 0 for both objectives: nothing bracketed, tau* = inf everywhere."""
    folder = tmp_path_factory.mktemp("results") / "edge"
    folder.mkdir()
    trials, curves = synthetic_study(sizes=(2e4, 6e4), tpps=(20.0,), decays=(0.0, 0.1, 1.0), tasks=("arithmetic",))
    trials["val_loss"] = 4.0 + trials["decay"] * 0.05 - np.log10(trials["n_params"]) * 0.1
    trials["ft_score"] = trials["ft_arithmetic_after"] = 0.3 - trials["decay"] * 0.02
    trials.to_csv(folder / "trials.csv", index=False)
    curves.to_csv(folder / "curves.csv", index=False)
    write_report(folder, n_bootstrap=BOOTSTRAP)
    return folder


def _figures_in(html: str) -> list[str]:
    return re.findall(r"<div class='figure' data-figure='([^']+)'>", html)


def test_full_study_has_every_figure_and_is_self_contained(study_folder):
    html = (study_folder / "report.html").read_text(encoding="utf-8")
    assert _figures_in(html) == list(ALL_FIGURES)
    assert "Not drawn" not in html
    # self-contained: no script, style or image is fetched from anywhere
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html)
    assert html.count("<script type=\"text/javascript\">/**") == 1  # plotly.js inlined exactly once
    assert len(html.encode()) < 8e6


def test_summary_reports_the_fitted_ratio_recommendation_and_caveats(full_study):
    rfit, summary = full_study.rfit, full_study.report.summary
    ratios = decay_ratios(rfit)
    both = ratios[ratios["both_bracketed"]]
    assert len(both) >= 3  # the synthetic optima sit well inside the grid
    median = float(np.median(both["ratio"]))
    expected = f"{median:.2g}x the loss-optimal one" if median > 1 else f"{1 / median:.2g}x smaller than"
    assert any(f"the plasticity-optimal decay is {expected}" in line for line in summary.findings), summary.findings

    rec = rfit.recommendation
    assert rec is not None and rec.decay_plastic_opt is not None
    words = " ".join(summary.recommendation)
    assert f"{rec.decay_plastic_opt.value:.3g}" in words and f"{rec.decay_plastic_opt.low:.3g}" in words
    assert "4x the largest N" in words
    # every warning the fits raised is a caveat, and so are the extrapolation and the backtests
    for warning in rfit.fit.warnings:
        assert warning in summary.caveats
    assert any("extrapolation" in c for c in summary.caveats)
    assert any(c.startswith("Backtest of the ft_score ") or "No backtest of the ft_score" in c for c in summary.caveats)
    # the failed trial from failed.csv is reported by the page written from the folder
    assert any("1 planned trials failed (1 diverged); at decay 30" in line for line in summary.findings)


def test_summary_direction_follows_the_data_when_plasticity_prefers_less_decay():
    trials, _ = synthetic_study(seed=1, sizes=(2e4, 6e4), tpps=(20.0,), plastic_factor=1 / 8)
    tables = StudyTables(trials=check_trials(trials))
    summary = summarise(tables, fit_for_report(tables.trials, n_bootstrap=BOOTSTRAP))
    line = next(x for x in summary.findings if x.startswith("Point estimates: the plasticity-optimal decay is"))
    assert "smaller than the loss-optimal one" in line


def test_unbracketed_optimum_is_a_caveat_and_drawn_hollow():
    trials, _ = synthetic_study(seed=2, sizes=(2e4, 6e4), tpps=(20.0,), decays=DECAYS[:6], plastic_factor=30.0)
    report = render_tables(StudyTables(trials=check_trials(trials)), n_bootstrap=BOOTSTRAP)
    caveats = " ".join(report.summary.caveats)
    assert "ft_score optimum in 20k@20tpp is censored: decay* above the largest decay searched (0.3)" in caveats
    assert "star-open" in report.html


@pytest.mark.slow
def test_a_plasticity_nll_study_reports_ft_nll_as_the_plasticity_objective():
    """ft_nll mirrors ft_score (lower is better): the same optima, now named and drawn as ft_nll."""
    trials, _ = synthetic_study(sizes=(2e4, 6e4), tpps=(10.0, 40.0), tasks=("arithmetic",))
    nll = trials.assign(ft_nll=2.0 - trials["ft_score"], ft_nll_gain=trials["ft_gain"], plasticity="nll")
    by_score = fit_for_report(check_trials(trials), n_bootstrap=0)
    tables = StudyTables(trials=check_trials(nll))
    rfit = fit_for_report(tables.trials, n_bootstrap=0)
    assert (rfit.plasticity, rfit.plasticity_direction) == ("ft_nll", "min") and by_score.plasticity == "ft_score"
    assert rfit.recommendation.decay_plastic_opt.objective == "ft_nll"
    pd.testing.assert_frame_equal(decay_ratios(rfit), decay_ratios(by_score))

    report = render(tables, rfit)
    assert "<th>plasticity-optimal decay* (ft_nll) [90%]</th>" in report.html
    findings = " ".join(report.summary.findings)
    assert "plasticity objective ft_nll" in findings and "changes ft_nll by -" in findings
    assert "ft_score" not in " ".join(report.summary.recommendation)
    drawn = {s.id: s for s in sections(tables, rfit)}
    finetune = drawn["finetune-vs-decay"].figure
    assert [a.text for a in finetune.layout.annotations] == ["ft_nll @ 10 TPP", "ft_nll @ 40 TPP",
                                                             "ft_nll_gain @ 10 TPP", "ft_nll_gain @ 40 TPP"]  # fmt: skip
    assert any(t.name and t.name.startswith("plasticity-optimal tau*") for t in finetune.data)  # its stars, in tau
    pareto = drawn["pareto"].figure
    assert pareto.layout.yaxis.title.text == "ft_nll (lower is better)"
    best = next(t for t in pareto.data if t.name == "plasticity-optimal trial")  # the lowest ft_nll of the cell
    first = nll[nll["cell"] == tables.cells[0]]
    assert best.y[0] == pytest.approx(first["ft_nll"].min())
    assert "ft_nll" in drawn["pareto"].caption and "lowest fine-tuned held-out NLL" in drawn["pareto"].caption
    laws = drawn["decay-laws"].figure
    assert any(t.name == "plasticity-optimal decay* per cell" for t in laws.data)


def test_one_cell_without_fine_tuning_renders_what_it_can(degraded_folder):
    html = (degraded_folder / "report.html").read_text(encoding="utf-8")
    drawn = _figures_in(html)
    assert drawn == ["loss-vs-decay", "decay-laws", "mechanisms"]
    assert "No fine-tuning results (ft_score)" in html
    assert "A single (N, D) cell" in html
    assert "No curves.csv" in html
    assert "No recommendation for the next budget" in html


def test_optima_at_decay_zero_are_reported_not_extrapolated(edge_folder):
    html = (edge_folder / "report.html").read_text(encoding="utf-8")
    assert "the response model needs 4 or more distinct decays" in html  # 3 decays searched: no estimand
    assert "no decay law could be fitted" in html


def test_build_report_works_on_dataframes_for_notebooks():
    trials, curves = synthetic_study(sizes=(2e4,), tpps=(10.0, 40.0), tasks=("arithmetic",))
    html = build_report(trials, curves, n_bootstrap=0)
    assert _figures_in(html) == ["loss-vs-decay", "finetune-vs-decay", "tasks-vs-decay", "pareto", "decay-laws",
                                 "mechanisms", "curves"]  # fmt: skip
    assert "The loss surface could not be fitted" in html


# ----------------------------------------------------------------------------- in the browser

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
    yield driver
    driver.quit()


@pytest.mark.browser
@pytest.mark.parametrize("folder", ["study_folder", "degraded_folder", "edge_folder"])
def test_report_draws_every_figure_in_headless_chromium_offline(browser, folder, request):
    from selenium.webdriver.support.ui import WebDriverWait

    path = request.getfixturevalue(folder) / "report.html"
    expected = _figures_in(path.read_text(encoding="utf-8"))
    browser.get_log("browser")  # drop anything left from an earlier page
    browser.get(path.resolve().as_uri())
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && Array.from(document.querySelectorAll('.figure'))"
        ".every(f => f.querySelector('.main-svg'))"))  # fmt: skip
    drawn = browser.execute_script("""
        return Array.from(document.querySelectorAll('.figure')).map(f => ({
            id: f.dataset.figure,
            plots: f.querySelectorAll('.js-plotly-plot').length,
            svgs: f.querySelectorAll('.main-svg').length,
            traces: f.querySelectorAll('.scatterlayer .trace').length,
        }));""")
    assert [f["id"] for f in drawn] == expected
    for fig in drawn:
        assert fig["plots"] == 1 and fig["svgs"] >= 1 and fig["traces"] > 0, fig
    assert browser.execute_script("return typeof Plotly") == "object"
    # the loss figure opens relative to each cell's best; its first button shows the measured values
    title = "return document.querySelector('#fig-loss-vs-decay .g-ytitle').textContent"
    assert "above the cell's best" in browser.execute_script(title)
    browser.find_elements("css selector", "#fig-loss-vs-decay .updatemenu-button")[0].click()
    WebDriverWait(browser, 10).until(lambda d: d.execute_script(title) == "val_loss (nats/token)")
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []


def test_cells_of_one_nominal_budget_share_a_panel():
    """Budgets rounded to whole steps give 5, 5.02, 5.04 TPP: one budget, not three."""
    from scaling.report.data import snap_budgets

    snapped = snap_budgets(pd.Series([5.0, 5.02, 5.04, 20.0, 19.99, 80.0]))
    assert snapped.nunique() == 3
    assert snapped.iloc[0] == snapped.iloc[1] == snapped.iloc[2] == 5.02
    assert snapped.iloc[3] == snapped.iloc[4]
