"""Errors a user can act on. The command line prints their message and exits non-zero,
without a traceback; anything else that escapes is a bug in ppvae.

:func:`reported_as` turns an error from inside PyTorch or Pyro (a user's pair failing on its
first batch, say) into one of these, with the original error on one line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


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


class WriteError(PPVAEError):
    """A file could not be written: the disk is full, or the folder is read-only."""


class OutOfMemory(PPVAEError):
    """Even the smallest chunk of a computation does not fit in the device's memory."""


def one_line(e: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line, without the trace-shape table Pyro appends to errors in a model."""
    text = " ".join(str(e).split("Trace Shapes:")[0].split())
    text = text if len(text) <= limit else text[:limit] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@contextlib.contextmanager
def reported_as(what: str, error: type[PPVAEError] = PairError) -> Iterator[None]:
    """Turn any non-ppvae exception inside the block into ``error("<what>: <one line>")``."""
    try:
        yield
    except PPVAEError:
        raise
    except Exception as e:
        raise error(f"{what}: {one_line(e)}") from e
