"""`scaling run SPEC`: the whole answer from one command.

study run (resuming or joining) -> export -> fit -> recommend -> report, each step the same
Python API the separate commands use. Each step's output lands in results/<name>/ as soon as
it exists, so a failure late in the chain never loses the trials or fits before it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("run", help="study run -> export -> fit -> recommend -> report, resuming if the study exists")
    p.add_argument("spec", help="study spec TOML (path, or a name under studies/)")
    p.add_argument("--storage", default=None,
                   help="SQLAlchemy URL of the Optuna storage (default: $SCALING_STORAGE, else the spec's)")
    p.add_argument("--force", action="store_true",
                   help="let the export replace an existing trials.csv that has more trials")
    p.add_argument("--workers", type=int, default=None,
                     help="worker processes on this machine (default: one per CPU thread on a CPU-only machine, 1 with a GPU)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap refits for fit intervals")
    p.add_argument("--no-progress", action="store_true", dest="no_progress")
    p.set_defaults(func=run)


def fits_payload(rfit, source: str) -> dict:
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


def _step(name: str) -> None:
    print(f"==> {name}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from scaling.fit import read_table
    from scaling.io import write_atomic
    from scaling.report import write_report
    from scaling.report.analysis import fit_for_report
    from scaling.study.export import export_study
    from scaling.study.runner import run_study
    from scaling.study.spec import load_spec

    spec = load_spec(args.spec)
    start = time.perf_counter()
    _step(f"study {spec.name}: running planned trials")
    report = run_study(spec, storage=args.storage, workers=args.workers, progress=not args.no_progress)
    study_s = time.perf_counter() - start

    _step("export")
    exported = export_study(spec, storage=args.storage, force=args.force)
    folder = Path(exported.trials_csv).parent
    print(f"trials: {exported.n_trials} completed, {exported.n_failed} failed -> {exported.trials_csv}")

    _step("fit")
    trials = read_table(exported.trials_csv)
    # One fit serves fits.json, the recommendation and the report. A table that supports no
    # decay law still gets its per-cell optima written, with the reason the laws are missing.
    rfit = fit_for_report(trials, None, n_bootstrap=args.bootstrap, source=str(exported.trials_csv))
    write_atomic(folder / "fits.json", json.dumps(fits_payload(rfit, str(exported.trials_csv)), indent=2,
                                                  allow_nan=False) + "\n")
    if rfit.fit is not None:
        print(rfit.fit.summary())
    for problem in rfit.problems:
        print(f"fit: {problem}")

    _step("recommend")
    if rfit.recommendation is not None:
        write_atomic(folder / "recommendation.json",
                     json.dumps(rfit.recommendation.to_dict(), indent=2, allow_nan=False) + "\n")
        print(rfit.next_budget.describe())
        print(rfit.recommendation.summary())
    else:
        print("recommend: no recommendation: the decay laws could not be fitted (see fit above)")

    _step("report")
    path = write_report(folder, rfit.fit, n_bootstrap=args.bootstrap)
    total = time.perf_counter() - start
    print(f"report: {path}")
    print(f"wall time: study {study_s:.0f} s, total {total:.0f} s; study finished: {report.ok}")
    return 0
