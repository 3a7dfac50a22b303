"""`scaling study run|status|export SPEC`: Optuna studies from a TOML spec."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser("study", help="run, inspect and export Optuna studies described by a TOML spec")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    run = actions.add_parser("run", help="plan the spec's trials and run workers until none is left")
    _common(run)
    run.add_argument("--workers", type=int, default=None,
                     help="worker processes on this machine (default: one per CPU thread on a CPU-only machine, 1 with a GPU)")
    run.add_argument("--n-trials", type=int, default=None, dest="n_trials",
                     help="trials per cell for a sampler search (overrides the spec; only extends)")
    run.add_argument("--threads", type=int, default=None,
                     help="torch CPU threads per worker (default: this machine's threads / workers)")
    run.add_argument("--batch-models", type=int, default=None, dest="batch_models",
                     help="trials of one cell each worker trains together as one stacked model "
                          "(overrides the spec's batch_models; default 1)")
    run.add_argument("--compile", action="store_true", default=None,
                     help="torch.compile the stacked units' training step (CUDA graphs on a GPU; "
                          "needs batch_models > 1; overrides the spec's compile)")
    run.add_argument("--retry-failed", action="store_true", dest="retry_failed",
                     help="queue again trials that finally failed (except diverged ones)")
    run.add_argument("--allow-changed-spec", action="store_true", dest="allow_changed_spec",
                     help="run a spec edited under the same name: trials planned under the old settings stay in "
                          "the storage but are stale (not counted, not exported)")
    run.add_argument("--no-progress", action="store_false", dest="progress",
                     help="no progress (default: a bar per worker on a terminal, else a plain line per worker "
                          "at most every $SCALING_PROGRESS_EVERY seconds, default 30)")
    run.set_defaults(func=_run)

    status = actions.add_parser("status", help="per cell: trials complete/running/waiting/failed, best trials, Pareto front")
    _common(status)
    status.set_defaults(func=_status)

    export = actions.add_parser("export", help="write results/<name>/trials.csv, curves.csv and failed.csv")
    _common(export)
    export.add_argument("--out", default=None, help="output folder (default results/<name>)")
    export.add_argument("--force", action="store_true",
                        help="replace an existing trials.csv even when the export has fewer trials")
    export.set_defaults(func=_export)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC", help="a study spec (TOML file, or a name in studies/)")
    p.add_argument("--storage", default=None,
                   help="SQLAlchemy URL shared by every worker, e.g. postgresql://user@host:5432/db "
                        "(default: $SCALING_STORAGE, else the spec's, else sqlite:///results/<name>/optuna.db)")


def _run(args: argparse.Namespace) -> int:
    from scaling.study import load_spec, run_study
    from scaling.study.runner import check_not_all_failed

    spec = load_spec(args.spec)
    report = run_study(spec, storage=args.storage, workers=args.workers, n_trials=args.n_trials,
                       progress=args.progress, threads=args.threads,
                       retry_failed=args.retry_failed, batch_models=args.batch_models,
                       allow_changed_spec=args.allow_changed_spec, compile=args.compile)
    print(report.status.to_text())
    check_not_all_failed(spec, report)
    return 0 if report.ok else 1


def _status(args: argparse.Namespace) -> int:
    from scaling.study import load_spec, study_status

    from scaling.study.identity import spec_changes

    spec = load_spec(args.spec)
    status = study_status(spec, storage=args.storage)
    print(status.to_text())
    changed = spec_changes(spec, args.storage or spec.storage_url)
    if changed:
        print(f"scaling study: warning: the spec changed since these trials were planned ({' | '.join(changed)}); "
              f"the counts are for the old settings; `scaling study run --allow-changed-spec` runs the new ones",
              file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    from scaling.study import export_study, load_spec

    result = export_study(load_spec(args.spec), storage=args.storage, out_dir=args.out, force=args.force)
    was = "" if result.replaced_trials is None else f" (replaced a table of {result.replaced_trials})"
    stale = f"; {result.n_stale} stale trials of an earlier spec left out" if result.n_stale else ""
    print(f"{result.trials_csv}: {result.n_trials} trials{was}{stale}")
    print(f"{result.curves_csv}: {result.n_curve_rows} curve points")
    print(f"{result.failed_csv}: {result.n_failed} failed trials")
    return 0
