"""Optuna studies over size x token budget x weight decay.

    from scaling.study import load_spec, run_study, study_status, export_study
    spec = load_spec("studies/quickstart.toml")
    run_study(spec, workers=2)          # plan, then train every planned trial once
    print(study_status(spec).to_text())
    export_study(spec)                  # results/<name>/trials.csv, curves.csv, failed.csv

A trial trains one `RunConfig` into a metrics dict with the real pipeline;
`run_study(trial_fn=...)` swaps in any function `RunConfig -> metrics`.

The names below are imported on first use, so loading a spec imports neither Optuna nor
SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOMES = {
    "Cell": "spec", "StudySpec": "spec", "find_spec": "spec", "load_spec": "spec", "parse_spec": "spec",
    "ExportResult": "export", "export_study": "export",
    "RunReport": "runner", "run_study": "runner",
    "CellStatus": "status", "StudyStatus": "status", "study_status": "status",
}
__all__ = sorted(_HOMES)

if TYPE_CHECKING:
    from scaling.study.export import ExportResult, export_study
    from scaling.study.runner import RunReport, run_study
    from scaling.study.spec import Cell, StudySpec, find_spec, load_spec, parse_spec
    from scaling.study.status import CellStatus, StudyStatus, study_status


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'scaling.study' has no attribute {name!r}")
    return getattr(importlib.import_module(f"scaling.study.{_HOMES[name]}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
