"""What an analysis receives (a trained run) and returns (metrics, figures, a report section)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ppvae.data import Dataset


@dataclass
class RunContext:
    """What an analysis sees of a trained run."""

    run_dir: Path
    name: str
    data: Dataset
    model: Callable
    guide: Callable
    params: dict[str, torch.Tensor]  # the trainer's parameters by Pyro name
    seed: int  # train.seed
    data_seed: int  # data.seed
    num_test: int  # the test points the evaluation used (the first num_test)
    metrics: dict  # what the evaluation measured (test_ll, test_elbo, ...)

    @property
    def test_x(self) -> torch.Tensor:
        return self.data.test_x[:self.num_test]

    @property
    def test_y(self) -> torch.Tensor | None:
        return None if self.data.test_y is None else self.data.test_y[:self.num_test]


@dataclass
class Result:
    """What an analysis adds: metrics (for metrics.json), figures, and a report section (Markdown)."""

    metrics: dict = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    report: str = ""


@dataclass
class StudyRun:
    """One run of a study, as an aggregate sees it."""

    label: str
    run_dir: Path


class Analysis:
    """Base class. ``title`` heads the report section; ``training_mode`` runs the analysis with the
    pair in training mode (the objective that was trained) instead of evaluation mode."""

    title = ""
    training_mode = False

    def run(self, ctx: RunContext) -> Result:
        raise NotImplementedError

    @classmethod
    def aggregate(cls, folder: Path, runs: Sequence[StudyRun]) -> Result | None:
        """Study-level output over the runs that enabled this analysis (None: nothing to add)."""
        return None


__all__ = ["RunContext", "Result", "StudyRun", "Analysis"]
