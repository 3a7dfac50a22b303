"""`scaling run SPEC`: the whole answer from one command.

study run (resuming or joining) -> export -> fit -> recommend -> report: `scaling.api.run`.
"""

from __future__ import annotations

import argparse


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
    p.add_argument("--allow-changed-spec", action="store_true", dest="allow_changed_spec",
                   help="run a spec edited under the same name (old trials stay stored but stale, not exported)")
    p.add_argument("--no-progress", action="store_true", dest="no_progress")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scaling.api import run as run_spec

    run_spec(args.spec, storage=args.storage, workers=args.workers, bootstrap=args.bootstrap,
             progress=not args.no_progress, echo=True, force=args.force, allow_changed_spec=args.allow_changed_spec)
    return 0
