"""Optuna studies over size x token budget x weight decay (no training code here).

    from scaling.study import load_spec, run_study, study_status, export_study
    spec = load_spec("studies/quickstart.toml")
    run_study(spec, workers=2)          # plan, then train every planned trial once
    print(study_status(spec).to_text())
    export_study(spec)                  # results/<name>/trials.csv, curves.csv, failed.csv

A trial trains one `RunConfig` into a metrics dict with the real pipeline;
`run_study(trial_fn=...)` swaps in any function `RunConfig -> metrics`.
"""

from scaling.study.export import ExportResult, export_study
from scaling.study.runner import RunReport, run_study
from scaling.study.spec import Cell, StudySpec, find_spec, load_spec, parse_spec
from scaling.study.status import CellStatus, StudyStatus, study_status

__all__ = ["Cell", "CellStatus", "ExportResult", "RunReport", "StudySpec", "StudyStatus", "export_study",
           "find_spec", "load_spec", "parse_spec", "run_study", "study_status"]
