"""What an analysis receives (a trained run) and returns (metrics, figures, a report section)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pyro.distributions import MixtureSameFamily

from ppvae.data import Dataset
from ppvae.evaluation.sampling import fit_aggregate
from ppvae.nn import eval_mode
from ppvae.rng import own_stream
from ppvae.sites import posterior_codes


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
    _shared: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def training_codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training set's posterior means and one draw of q(z|x) each: one pass of the guide in evaluation
        mode, on a stream of its own (``seed + 7``), made once and shared by the analyses that need it."""
        if "codes" not in self._shared:
            x = self.data.train_x
            with eval_mode(self.model, self.guide), own_stream(x.device, self.seed + 7):
                self._shared["codes"] = posterior_codes(self.guide, x, self.data.train_y)
        return self._shared["codes"]

    def aggregate_mixture(self, components: int, fit: str = "means") -> MixtureSameFamily:
        """A Gaussian mixture fit to the training codes, ``"means"`` (the aggregate sampler's) or ``"draws"``;
        fit once per run and shared."""
        key = (fit, components)
        if key not in self._shared:
            means, draws = self.training_codes()
            self._shared[key] = fit_aggregate({"means": means, "draws": draws}[fit], components, self.seed)
        return self._shared[key]

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
