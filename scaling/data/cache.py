"""Where derived data (tokenizers, token arrays) is cached, and how files get there safely."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """$SCALING_CACHE_DIR, else ~/.cache/scaling. Created on first use."""
    root = Path(os.environ.get("SCALING_CACHE_DIR") or Path.home() / ".cache" / "scaling").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename: readers never see a partial file,
    and when several processes race, the last rename wins with identical content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
