"""Shim: moved to `scaling.train.cooldown` and `scaling.train.pipeline`. Kept for scaling/study
until its imports are re-pointed."""

from scaling.train.pipeline import run_pipeline_with_cooldowns  # noqa: F401
