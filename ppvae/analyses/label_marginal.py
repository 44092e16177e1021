"""The marginal likelihood of a conditional pair: the label summed out, so a CVAE is scored on p(x) like every
unconditional model of its table, not on p(x | y)."""

from __future__ import annotations

import math
from typing import Annotated

import torch

from ppvae import registry
from ppvae.analyses.base import Analysis, Result, RunContext
from ppvae.evaluation.loglik import log_likelihood
from ppvae.registry import Param


def label_log_prior(train_y: torch.Tensor, num_classes: int, how: str) -> torch.Tensor:
    """log p(y) [classes]: the training set's label frequencies (their maximum-likelihood fit), or uniform."""
    if how == "uniform":
        return torch.full((num_classes,), -math.log(num_classes), dtype=torch.float64)
    counts = torch.bincount(train_y.cpu(), minlength=num_classes).double()
    return torch.log(counts / counts.sum())


@registry.register("analysis", "label_marginal", conditional=True)
class LabelMarginal(Analysis):
    """test_nll_marginal = -log sum_y p(y) p(x | y), each p(x | y) by IWAE_k on the evaluation's test points.

    Each IWAE_k estimate of p(x | y) is unbiased, so their p(y)-weighted sum is an unbiased estimate of p(x)
    and its log a stochastic lower bound (in expectation) on log p(x), like test_ll; the labels are summed
    exactly. The same sums give p(y | x), the pair used as a generative classifier (label_accuracy).
    """

    title = "Marginal likelihood of the conditional pair"

    def __init__(self, *,
                 k: Annotated[int, Param(">= 0", "importance samples per label (0: eval.k / classes, so the marginal "
                                                 "costs what the evaluation of p(x | y) did)")] = 0,
                 label_prior: Annotated[str, Param(doc="p(y): the training labels' frequencies, or uniform",
                                                   choices=("train", "uniform"))] = "train"):
        self.k, self.label_prior = k, label_prior

    def run(self, ctx: RunContext) -> Result:
        classes = ctx.data.num_classes
        k = self.k or max(1, ctx.metrics["eval_k"] // classes)
        x = ctx.test_x
        log_py = label_log_prior(ctx.data.train_y, classes, self.label_prior).to(x.device)
        ll = torch.stack([log_likelihood(ctx.model, ctx.guide, x, torch.full((len(x),), c, device=x.device), k=k,
                                         seed=ctx.seed + 1 + c)["ll"].double() for c in range(classes)], 1)
        joint = ll + log_py  # [points, classes]: log p(y) + IWAE_k of log p(x | y)
        marginal = torch.logsumexp(joint, 1)
        metrics = {"test_nll_marginal": -marginal.mean().item(),
                   "test_nll_marginal_se": (marginal.std() / math.sqrt(len(x))).item() if len(x) > 1 else 0.0,
                   "marginal_k_per_label": k}
        lines = [f"-log p(x) with the label summed out: {metrics['test_nll_marginal']:.2f} "
                 f"(s.e. {metrics['test_nll_marginal_se']:.2f}) nats, IWAE k = {k} per label, p(y) {self.label_prior}."]
        y = ctx.test_y
        if y is not None:
            given = ll.gather(1, y[:, None].to(ll.device)).squeeze(1)
            metrics["test_nll_given_label"] = -given.mean().item()
            metrics["label_accuracy"] = (joint.argmax(1).cpu() == y.cpu()).double().mean().item()
            lines.append(f"-log p(x | y) at the same k: {metrics['test_nll_given_label']:.2f} nats; p(y | x) "
                         f"classifies {100 * metrics['label_accuracy']:.1f} % of the test points right.")
        return Result(metrics, report="\n".join(lines))
