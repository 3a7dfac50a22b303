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
    p.add_argument("--storage", default=None, help="SQLAlchemy URL of the Optuna storage (default: the spec's)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap refits for fit intervals")
    p.add_argument("--no-progress", action="store_true", dest="no_progress")
    p.set_defaults(func=run)


def _step(name: str) -> None:
    print(f"==> {name}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from scaling.errors import FitError
    from scaling.fit import fit_study, read_table
    from scaling.recommend import recommend
    from scaling.report import write_report
    from scaling.report.analysis import choose_next_budget
    from scaling.study.export import export_study
    from scaling.study.runner import run_study
    from scaling.study.spec import load_spec

    spec = load_spec(args.spec)
    start = time.perf_counter()
    _step(f"study {spec.name}: running planned trials ({args.workers} worker(s))")
    report = run_study(spec, storage=args.storage, workers=args.workers, progress=not args.no_progress)
    study_s = time.perf_counter() - start

    _step("export")
    exported = export_study(spec, storage=args.storage)
    folder = Path(exported.trials_csv).parent
    print(f"trials: {exported.n_trials} completed, {exported.n_failed} failed -> {exported.trials_csv}")

    _step("fit")
    fit = None
    trials = read_table(exported.trials_csv)
    try:
        fit = fit_study(trials, n_bootstrap=args.bootstrap, source=str(exported.trials_csv))
    except FitError as exc:
        # A study too small for the fits still gets its report; the caveat says why.
        print(f"fit: not possible yet: {exc}", file=sys.stderr)
    if fit is not None:
        (folder / "fits.json").write_text(json.dumps(fit.to_dict(), indent=2, allow_nan=False) + "\n")
        print(fit.summary())

        _step("recommend")
        budget = choose_next_budget(trials)
        try:
            rec = recommend(fit=fit, n_params=budget.n_params, tpp=budget.tpp)
        except FitError as exc:
            print(f"recommend: not possible yet: {exc}", file=sys.stderr)
        else:
            (folder / "recommendation.json").write_text(
                json.dumps(rec.to_dict(), indent=2, allow_nan=False) + "\n")
            print(budget.describe())
            print(rec.summary())

    _step("report")
    path = write_report(folder, fit, n_bootstrap=args.bootstrap)
    total = time.perf_counter() - start
    print(f"report: {path}")
    print(f"wall time: study {study_s:.0f} s, total {total:.0f} s; study finished: {report.ok}")
    return 0
