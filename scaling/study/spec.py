"""Study specs: `load_spec(path) -> StudySpec` and the spec's data types.

The data model lives in `spec_model`, the TOML parser and validator in `spec_toml`; this module
is where callers import both from.
"""

from scaling.study.spec_model import (PER_SIZE_KEYS, SAMPLERS, Budget, Cell, DecaySearch, PlannedTrial, RefineSettings,
                                      SizeSpec, StudySpec, WorkerSettings, short_count)
from scaling.study.spec_toml import find_spec, load_spec, parse_spec

__all__ = ["PER_SIZE_KEYS", "SAMPLERS", "Budget", "Cell", "DecaySearch", "PlannedTrial", "RefineSettings", "SizeSpec", "StudySpec",
           "WorkerSettings", "find_spec", "load_spec", "parse_spec", "short_count"]
