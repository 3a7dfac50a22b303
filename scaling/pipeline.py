"""Shim: moved to `scaling.train.pipeline`. Kept for scaling/study until its imports are re-pointed."""

from scaling.train.pipeline import run_pipeline  # noqa: F401
