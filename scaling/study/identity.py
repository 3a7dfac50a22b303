"""A planned trial's identity: everything that changes its result, as fields and a hash.

A cell's identity is its RunConfig (every field but decay and seed, which are the plan key), the
corpus by content (the bundled corpus's manifest hash, or a hash of the user's files) and every
`jsonl:` task file by content. Planning stores it on the cell's Optuna study and tags each trial
with its hash, so a spec edited under the same name is caught (`changes`), and trials planned
under another identity are stale: not counted, not exported.

The code version is provenance, not identity: each trial records `code_version` and
`git_commit`, but a new commit does not invalidate a study (docs/studies.md says why).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from scaling.study.spec import Cell, StudySpec

IDENTITY = "identity"  # trial user attr and study user attr: the hash
IDENTITY_FIELDS = "identity_fields"  # study user attr: the fields hashed
LEGACY = "identity_legacy"  # study user attr: the identity of trials planned before identities existed
_TEXT_AND_TOKENS = (".txt", ".jsonl", ".parquet", ".npy", ".bin")


def cell_identity(spec: StudySpec, cell: Cell) -> dict[str, Any]:
    """The fields that decide a cell's results (JSON values)."""
    config = spec.run_config(cell, spec.decay_bounds(cell)[0], spec.seeds[0]).to_dict()
    corpus = config.pop("corpus")  # by content: the same files moved are the same corpus
    for key in ("decay", "seed"):
        config.pop(key)
    config["corpus_sha256"] = corpus_sha256(corpus)
    for task in config["tasks"]:
        if task.startswith("jsonl:"):
            config[f"task_sha256 {task}"] = file_sha256(Path(task[len("jsonl:"):]).expanduser())
    return config


def identity_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """"field: old -> new" for every field that differs (a field only one side has included)."""
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, "(none)") != new.get(key, "(none)"):
            out.append(f"{key}: {_show(old.get(key, '(none)'))} -> {_show(new.get(key, '(none)'))}")
    return out


def trial_identity(trial: FrozenTrial, study_attrs: dict[str, Any]) -> str | None:
    """The identity a trial was planned under (trials from before identities: the study's legacy one)."""
    return trial.user_attrs.get(IDENTITY, study_attrs.get(LEGACY))


def current(trials: Iterable[FrozenTrial], study_attrs: dict[str, Any]) -> list[FrozenTrial]:
    """The trials planned under the study's current identity (all of them if it has none yet)."""
    now = study_attrs.get(IDENTITY)
    trials = list(trials)
    if now is None:
        return trials
    return [t for t in trials if trial_identity(t, study_attrs) == now]


def spec_changes(spec: StudySpec, storage_url: str) -> list[str]:
    """"<study>: field: old -> new, ..." for each cell whose study was planned under other settings
    than `spec` now gives (empty when the storage or the studies do not exist yet)."""
    import optuna

    from scaling.study.storage import open_storage, sqlite_file_missing

    if sqlite_file_missing(storage_url):
        return []
    store = open_storage(storage_url, spec.worker)
    try:
        summaries = {s.study_name: s.user_attrs for s in optuna.get_all_study_summaries(store, include_best_trial=False)}
        out = []
        for cell in spec.cells():
            old = summaries.get(spec.study_name(cell), {}).get(IDENTITY_FIELDS)
            if old is not None:
                changed = changes(old, cell_identity(spec, cell))
                if changed:
                    out.append(f"{spec.study_name(cell)}: {'; '.join(changed)}")
        return out
    finally:
        store.engine.dispose()


def corpus_sha256(corpus: str | None) -> str:
    """The corpus by content: the bundled manifest's hash, or one over the user's files."""
    if corpus is None:
        manifest = json.loads(resources.files("scaling.data").joinpath("corpus_manifest.json").read_text())
        return "bundled:" + manifest["sha256_jsonl"]
    root = Path(corpus).expanduser()
    if root.is_file():
        return file_sha256(root)
    if not root.is_dir():
        return "missing:" + str(root)  # the preflight says so; here it only has to differ from a real hash
    h = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in _TEXT_AND_TOKENS):
        h.update(file.relative_to(root).as_posix().encode() + b"\0" + file_sha256(file).encode())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError:
        return "missing:" + str(path)
    return _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file is hashed again
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    except OSError:
        return "unreadable:" + path
    return h.hexdigest()


def _show(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."
