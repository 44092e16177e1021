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


class TrainingError(PPVAEError):
    """Training stopped (non-finite loss or gradient, interruption) with its state saved."""


class CheckpointError(PPVAEError):
    """A checkpoint file is missing, truncated or does not match the run."""
