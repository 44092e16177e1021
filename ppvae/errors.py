"""Errors a user can act on. The command line prints their message and exits non-zero,
without a traceback; anything else that escapes is a bug in ppvae."""


class PPVAEError(Exception):
    """Base class: the message says what is wrong and what to do."""


class ConfigError(PPVAEError):
    """An experiment config has an unknown key, a wrong type or an invalid value."""


class DataError(PPVAEError):
    """A dataset is missing, corrupted, or does not fit the chosen model."""


class EstimatorError(PPVAEError):
    """An estimator cannot be used with the given model/guide pair."""


class PairError(PPVAEError):
    """A model/guide pair cannot be built, fails on its first batch, or breaks the pair contract."""


class TrainingError(PPVAEError):
    """Training stopped (non-finite loss or gradient, a failing step); the last good checkpoint is kept."""


class Interrupted(TrainingError):
    """Training was stopped by a signal (Ctrl-C, SIGTERM) after saving a checkpoint to resume from."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class CheckpointError(PPVAEError):
    """A checkpoint file is missing, truncated or does not match the run."""


class OutOfMemory(PPVAEError):
    """Even the smallest chunk of a computation does not fit in the device's memory."""
