"""The Python API: what the CLI does, as functions (re-exported as `scaling.<name>`).

    import scaling
    outcome = scaling.run("studies/quickstart.toml")       # study -> export -> fit -> recommend -> report
    trials = scaling.load_trials("results/quickstart/trials.csv")
    fit = scaling.fit_study(trials)                         # laws, per-cell optima, backtests
    rec = scaling.recommend(fit, n_params=1e6, n_tokens=2e7)
    scaling.write_report("results/quickstart", fit)
    metrics = scaling.train_one(scaling.RunConfig(size="13k", tpp=5, decay=0.1))
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from scaling.config import RunConfig
    from scaling.fit import StudyFit
    from scaling.fit.recommend import Recommendation
    from scaling.report.analysis import ReportFit


def load_trials(path: str | Path) -> pd.DataFrame:
    """A trials table (CSV or Parquet), one row per trial; `DataError` if missing or unreadable."""
    from scaling.fit import read_table

    return read_table(path)


def fit_study(trials: pd.DataFrame, **options: Any) -> StudyFit:
    """Fit everything the trials table supports (`scaling.fit.fit_study`; options as there)."""
    from scaling.fit import fit_study as fit

    return fit(trials, **options)


def recommend(fit: StudyFit | pd.DataFrame, **budget: Any) -> Recommendation:
    """Recommended decays for a budget: n_params with n_tokens or tpp, or a FLOP budget `compute`.
    `fit` is a `StudyFit` or a trials table (then fitted first)."""
    from scaling.fit import StudyFit
    from scaling.fit.recommend import recommend as rec

    if isinstance(fit, StudyFit):
        return rec(fit=fit, **budget)
    return rec(fit, **budget)


def write_report(folder: str | Path, fit: StudyFit | None = None, **options: Any) -> Path:
    """Write <folder>/report.html from <folder>/trials.csv (+ curves.csv, failed.csv); returns its path."""
    from scaling.report import write_report as write

    return write(folder, fit, **options)


def train_one(cfg: RunConfig, progress: bool = False) -> dict[str, Any]:
    """One trial end to end (pretrain, probes, fine-tune and score); its metrics dict.
    Raises `TrainingDiverged` when a loss goes non-finite."""
    from scaling.train.pipeline import run_pipeline

    return run_pipeline(cfg, progress=progress)


MAX_BOOTSTRAP = 100_000  # refits; more only costs time


@dataclass(frozen=True)
class RunOutcome:
    """What `run` made: the folder of results/<study>/ and what is in it."""

    folder: Path
    trials_csv: Path
    n_trials: int
    n_failed: int
    fit: ReportFit  # the StudyFit (None if no law could be fitted), per-cell optima, recommendation
    report: Path
    study_finished: bool
    study_s: float
    total_s: float


def run(spec: str | Path, *, storage: str | None = None, workers: int | None = None, bootstrap: int = 200,
        progress: bool = True, echo: bool = False, force: bool = False,
        allow_changed_spec: bool = False) -> RunOutcome:
    """The whole answer for a study spec: run its planned trials (resuming or joining), export,
    fit, recommend, write the report. Each step's output lands in results/<name>/ as soon as it
    exists. `echo`: print each step and its result (as `scaling run` does). `force`: let the
    export replace an existing trials.csv that holds more trials. `allow_changed_spec`: as for
    `scaling study run`. Raises StudyFailed when no trial completed (nothing to fit)."""
    from scaling.fit import read_table
    from scaling.io import write_atomic
    from scaling.report import write_report as write
    from scaling.report.analysis import fit_for_report
    from scaling.study.export import export_study
    from scaling.study.runner import check_not_all_failed, run_study, spec_configs
    from scaling.train.preflight import check_inputs
    from scaling.study.spec import load_spec

    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or not 0 <= bootstrap <= MAX_BOOTSTRAP:
        from scaling.errors import ConfigError  # checked before the study runs, not after it

        raise ConfigError(f"bootstrap: expected an integer from 0 to {MAX_BOOTSTRAP:,}, got {bootstrap!r}")
    say = print if echo else (lambda *args, **kwargs: None)

    def step(name: str) -> None:
        say(f"==> {name}", file=sys.stderr, flush=True)

    loaded = load_spec(spec)
    check_inputs(spec_configs(loaded))  # before the first line of output; run_study's own check is then cached
    start = time.perf_counter()
    step(f"study {loaded.name}: running planned trials")
    status = run_study(loaded, storage=storage, workers=workers, progress=progress,
                       allow_changed_spec=allow_changed_spec)
    study_s = time.perf_counter() - start
    check_not_all_failed(loaded, status)

    step("export")
    exported = export_study(loaded, storage=storage, force=force)
    folder = Path(exported.trials_csv).parent
    say(f"trials: {exported.n_trials} completed, {exported.n_failed} failed -> {exported.trials_csv}")

    step("fit")
    trials = read_table(exported.trials_csv)
    # One fit serves fits.json, the recommendation and the report. A table that supports no
    # decay law still gets its per-cell optima written, with the reason the laws are missing.
    rfit = fit_for_report(trials, None, n_bootstrap=bootstrap, source=str(exported.trials_csv))
    write_atomic(folder / "fits.json", json.dumps(fits_payload(rfit, str(exported.trials_csv)), indent=2,
                                                  allow_nan=False) + "\n")
    if rfit.fit is not None:
        say(rfit.fit.summary())
    for problem in rfit.problems:
        say(f"fit: {problem}")

    step("recommend")
    if rfit.recommendation is not None:
        write_atomic(folder / "recommendation.json",
                     json.dumps(rfit.recommendation.to_dict(), indent=2, allow_nan=False) + "\n")
        say(rfit.next_budget.describe())
        say(rfit.recommendation.summary())
    else:
        say("recommend: no recommendation: the decay laws could not be fitted (see fit above)")

    step("report")
    path = write(folder, rfit.fit, n_bootstrap=bootstrap)
    total = time.perf_counter() - start
    say(f"report: {path}")
    say(f"wall time: study {study_s:.0f} s, total {total:.0f} s; study finished: {status.ok}")
    return RunOutcome(folder=folder, trials_csv=Path(exported.trials_csv), n_trials=exported.n_trials,
                      n_failed=exported.n_failed, fit=rfit, report=Path(path), study_finished=status.ok,
                      study_s=study_s, total_s=total)


def fits_payload(rfit: ReportFit, source: str) -> dict[str, Any]:
    """fits.json: the full StudyFit when there is one, else the per-cell optima and the
    reasons no law could be fitted (same schema keys, laws null)."""
    from scaling.fit.studyfit import SCHEMA

    if rfit.fit is not None:
        return rfit.fit.to_dict()
    return {
        "schema": SCHEMA,
        "source": source,
        "mode": "study",
        "optima": [o.to_dict() for o in rfit.optima],
        "laws": None,
        "backtests": None,
        "warnings": list(rfit.problems),
    }
