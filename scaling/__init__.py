"""scaling: plasticity-aware weight-decay scaling laws for language-model pretraining.

Python API (the CLI calls the same functions; see README.md, "Python API"):

    run(spec)                      study -> export -> fit -> recommend -> report; a RunOutcome
    load_trials(path)              a trials table (DataFrame), e.g. results/<study>/trials.csv
    fit_study(trials)              decay laws, per-cell optima, loss surface, backtests (StudyFit)
    recommend(fit, n_params=..., n_tokens=...)   decays for a new budget, with intervals
    write_report(folder, fit)      results/<study>/report.html
    train_one(RunConfig(...))      one trial: pretrain, probes, fine-tune, score -> metrics dict
    load_spec(path), RunConfig     a study spec; one run's settings

Names resolve on first use, so `import scaling.fit` or `import scaling.study.spec` does not
import torch. (`scaling.fit` and `scaling.report` are the subpackages, hence `fit_study` and
`write_report` here.)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "run": "scaling.api",
    "RunOutcome": "scaling.api",
    "load_trials": "scaling.api",
    "fit_study": "scaling.api",
    "recommend": "scaling.api",
    "write_report": "scaling.api",
    "train_one": "scaling.api",
    "load_spec": "scaling.study.spec",
    "RunConfig": "scaling.config",
    "ScalingError": "scaling.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'scaling' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
