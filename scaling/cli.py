"""The `scaling` command: a thin dispatcher over the Python API.

Each subcommand lives in ``scaling.commands.<name>`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` (a callable taking the parsed args and returning an
exit code). Errors derived from :class:`scaling.errors.ScalingError` become one line on stderr
and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from scaling.errors import ScalingError

COMMANDS = ("train", "bench", "study", "fit", "recommend", "predict", "report", "run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaling",
        description="Weight-decay scaling laws for pretraining, judged after fine-tuning.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"scaling.commands.{name}")
        except ModuleNotFoundError as exc:  # a command not built yet must not break the others
            if exc.name == f"scaling.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser




def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ScalingError as exc:
        print(f"scaling {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scaling {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
