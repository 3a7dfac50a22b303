"""`scaling report results/<name>`: the study's figures and summary as one HTML page."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("report", help="write results/<name>/report.html: figures, fits and a plain-words summary")
    p.add_argument("folder", metavar="FOLDER", help="a study's results folder holding trials.csv (and curves.csv)")
    p.add_argument("--out", default=None, help="output file (default FOLDER/report.html)")
    p.add_argument("--bootstrap", type=int, default=200, dest="n_bootstrap",
                   help="bootstrap resamples for every interval (default 200)")
    p.add_argument("--next-factor", type=float, default=4.0, dest="next_factor",
                   help="the next budget the report extrapolates to: this many times the largest N (default 4)")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from scaling.errors import ConfigError
    from scaling.report import write_report

    if args.n_bootstrap < 0:
        raise ConfigError(f"--bootstrap: expected a non-negative integer, got {args.n_bootstrap}")
    if not args.next_factor > 0:
        raise ConfigError(f"--next-factor: expected a positive number, got {args.next_factor}")
    path = write_report(args.folder, out=args.out, n_bootstrap=args.n_bootstrap, next_factor=args.next_factor)
    size = path.stat().st_size / 1e6
    print(f"{path}: {size:.1f} MB")
    return 0
