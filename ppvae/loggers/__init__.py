"""Trackers a run also writes to, besides its folder: parts of kind ``logger`` (``[log.<name>]``).

A logger is told when the run folder exists (:meth:`Logger.start`, with the resolved config), after
every epoch (:meth:`Logger.epoch`, the record ``metrics.jsonl`` gets) and after the evaluation
(:meth:`Logger.finish`, the metrics and figures). Trackers name the epoch records ``epoch/<key>``
and the evaluation's metrics ``eval/<key>``. The run folder stays the source of truth, so a
tracker that fails to write costs nothing but its own copy. A new logger is one file here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ppvae import registry


class Logger:
    """The base of every logger part: each hook does nothing unless overridden."""

    def start(self, config: dict, run_dir: Path, resumed: bool) -> None:
        """The run folder exists (``resumed``: it continues an earlier session of the same run)."""

    def epoch(self, record: dict) -> None:
        """One epoch's record, as written to ``metrics.jsonl``."""

    def finish(self, metrics: dict, figures: list[Path]) -> None:
        """The evaluation's metrics and the figures drawn."""

    def close(self) -> None:
        """The run ends (finished, stopped or failed)."""


def numbers(record: dict[str, Any]) -> dict[str, float]:
    """The finite scalar entries of a record (what trackers plot)."""
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")}


def flat(config: dict, prefix: str = "") -> dict[str, str]:
    """A nested config as dotted keys and text values (``train.lr``: ``0.001``)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = registry.toml_value(value)
    return out


registry.discover(__name__)

__all__ = ["Logger", "numbers", "flat"]
