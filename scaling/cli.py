"""The `scaling` command: a thin dispatcher over the Python API.

Each subcommand lives in ``scaling.commands.<name>`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` (a callable taking the parsed args and returning an
exit code). Errors derived from :class:`scaling.errors.ScalingError` become one line on stderr
and exit status 2; so do the few other exceptions that input or the machine cause (see
`input_error`: a file that cannot be read or written, memory exhausted, input nested too
deeply, a storage that rejects a write). Any other exception is a bug: its traceback is shown,
followed by one line saying so, exit status 1. Passwords in storage URLs are masked in all of
it. SCALING_DEBUG=1 shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from scaling.errors import ScalingError

COMMANDS = ("train", "bench", "study", "fit", "recommend", "predict", "report", "run")
DEBUG_ENV = "SCALING_DEBUG"
EPILOG = ("environment: SCALING_STORAGE=URL is the Optuna storage for every command with --storage when that flag "
          "is not given (it wins over the spec's storage), so a password need not appear in the command line; "
          "SCALING_DEBUG=1 shows a traceback for every error.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaling",
        description="Weight-decay scaling laws for pretraining, judged after fine-tuning.",
        epilog=EPILOG,
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


def storage_from_env(args: argparse.Namespace) -> None:
    """Fill a command's unset --storage from $SCALING_STORAGE (flag > environment > spec)."""
    from scaling.study.storage import STORAGE_ENV

    if hasattr(args, "storage") and args.storage is None and os.environ.get(STORAGE_ENV):
        args.storage = os.environ[STORAGE_ENV]


def input_error(exc: BaseException) -> str | None:
    """One line for an exception that input or the machine causes, None for a bug."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (
            isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)):
        return ("out of memory: a requested size does not fit in this machine's memory "
                "(check --batch-size, --context, the model size and the token budget)")
    if isinstance(exc, RecursionError) and _raised_in(exc, ("json", "tomllib")):
        return "input nested too deeply to read (a JSON or TOML value inside thousands of brackets)"
    if isinstance(exc, UnicodeDecodeError):
        return f"input is not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    storage_errors = _storage_errors()
    if storage_errors and isinstance(exc, storage_errors):
        cause = getattr(exc, "orig", None) or exc.__cause__ or exc
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        hint = ""
        if "too long" in reason or "max length" in reason:
            hint = (" (Optuna stores a study name '<spec name>/<cell>' in at most 512 characters: "
                    "shorten the spec's name)")
        return f"storage rejected the operation: {reason}{hint}"
    return None


def _storage_errors() -> tuple[type, ...]:
    """Optuna's and SQLAlchemy's database errors, when those libraries are loaded at all."""
    found: list[type] = []
    if "optuna" in sys.modules:
        found.append(sys.modules["optuna"].exceptions.StorageInternalError)
    if "sqlalchemy" in sys.modules:
        exc = importlib.import_module("sqlalchemy.exc")
        found += [exc.OperationalError, exc.DataError, exc.IntegrityError]
    return tuple(found)


def _raised_in(exc: BaseException, modules: tuple[str, ...]) -> bool:
    """Whether the innermost Python frame of `exc` belongs to one of the stdlib `modules`."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return False
    parts = frames[-1].filename.replace("\\", "/").split("/")
    return any(m in parts or f"{m}.py" in parts for m in modules)


def _secrets(args: argparse.Namespace) -> list[str]:
    from scaling.study.storage import STORAGE_ENV, url_secrets

    urls = [getattr(args, "storage", None), os.environ.get(STORAGE_ENV)]
    return [s for url in urls for s in url_secrets(url)]


def _clean(text: str, secrets: list[str]) -> str:
    from scaling.study.storage import mask_secrets

    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return mask_secrets(text)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    storage_from_env(args)
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    prefix = f"scaling {args.command}"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `scaling ... | head` closed the pipe: nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1
    except Exception as exc:  # noqa: BLE001 - sorted into input errors and bugs below
        secrets = _secrets(args)
        message = str(exc) if isinstance(exc, ScalingError) else input_error(exc)
        if debug or message is None:
            print(_clean(traceback.format_exc(), secrets), file=sys.stderr, end="")
        if message is None:
            line = f"{type(exc).__name__}: {exc}".splitlines()[0]
            print(_clean(f"{prefix}: internal error (a bug in scaling, please report it with the traceback "
                         f"above): {line}", secrets), file=sys.stderr)
            return 1
        print(_clean(f"{prefix}: error: {' '.join(message.split())}", secrets), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
