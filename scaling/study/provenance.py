"""Where a trial ran: code version, git commit, host and process, recorded on every trial."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import scaling


def provenance() -> dict[str, Any]:
    """Code version, git commit (with -dirty for uncommitted changes, when the package runs
    from a checkout), host and pid."""
    info: dict[str, Any] = {"code_version": scaling.__version__, "git_commit": None,
                            "host": socket.gethostname(), "worker_pid": os.getpid()}
    root = Path(scaling.__file__).resolve().parent.parent
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10)
            info["git_commit"] = commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    return info
