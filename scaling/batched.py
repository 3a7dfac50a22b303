"""Shim: moved to `scaling.train.stacked` and `scaling.train.pipeline`. Kept for scaling/study
until its imports are re-pointed."""

from scaling.train.pipeline import run_pipeline_batched  # noqa: F401
from scaling.train.stacked import check_stackable  # noqa: F401
