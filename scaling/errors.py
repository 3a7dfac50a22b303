"""Typed errors. Every error a user can cause derives from ScalingError; the CLI prints its
message on one line and exits with status 2."""


class ScalingError(Exception):
    """Base class for errors caused by input: bad config, bad data, impossible fits."""


class ConfigError(ScalingError):
    """A config or spec value is missing, of the wrong type or impossible."""


class DataError(ScalingError):
    """A corpus, task or table is missing, empty or malformed."""


class FitError(ScalingError):
    """A fit cannot be made from the given table (too few cells, nothing bracketed, ...)."""


class TrainingDiverged(ScalingError):
    """The training loss became non-finite (or exploded). Carries the step where it happened."""

    def __init__(self, step: int, loss: float, phase: str = "pretraining"):
        self.step = step
        self.loss = loss
        self.phase = phase
        super().__init__(f"{phase} diverged at step {step}: loss {loss}")
