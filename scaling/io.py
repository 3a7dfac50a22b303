"""Writing result files so that a reader never sees half of one and a failure leaves nothing."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from scaling.errors import DataError


def write_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through a temp file in the same folder and `os.replace`.

    The old file stays intact until the new one is complete; on any failure the temp file is
    removed. DataError (one line) when `path` is a folder or cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a file path to write")
    # A per-process name (not mkstemp: its 0600 mode would survive the rename) in the target's folder.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return path
