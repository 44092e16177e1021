"""ppvae's importance-weighted (IWAE) bound, with the standard, STL and DReG gradients."""

from __future__ import annotations

import math
import warnings
from typing import Annotated

import pyro
import torch
from pyro import poutine

from ppvae import registry
from ppvae.errors import EstimatorError
from ppvae.infer.estimators.base import Estimator, Objective
from ppvae.infer.generic import max_plate_nesting
from ppvae.infer.importance import log_weights
from ppvae.registry import Param
from ppvae.sites import local_latents

STL_BIAS = ("gradient = 'stl' with k > 1 is biased for the IWAE bound (Tucker et al. 2019: the score term it "
            "drops does not vanish for k > 1); use gradient = 'dreg' (unbiased and as low in variance with one "
            "stochastic layer) or 'standard'.")
DREG_LAYERS_BIAS = ("gradient = 'dreg' with k > 1 is biased when one guide latent feeds another guide site (two "
                    "stochastic layers: it drops the score terms of q(z2 | z); Bauer & Mnih 2021), and this guide has "
                    "{n} local latent sites; use gradient = 'standard' unless they are independent given x.")


def biased_gradient(gradient: str, k: int, layered: bool = False) -> bool:
    """Whether an IWAE gradient estimator is biased at k samples: STL for k > 1, and DReG for k > 1 when a
    guide latent may feed another guide site (``layered``: the guide has several local latent sites)."""
    return k > 1 and (gradient == "stl" or (gradient == "dreg" and layered))


@registry.register("estimator", "iwae")
class IWAEEstimator(Estimator):
    """ppvae's importance-weighted bound with k samples per data point (Burda et al. 2015).

    objective = scale * sum_n [logsumexp_k log w_kn - log k] + mean_k global_k

    Gradients: ``standard`` differentiates the bound; ``stl`` drops the score term of
    q (guide parameters detached inside log q; Roeder et al. 2017); ``dreg`` additionally
    weights the encoder's path gradient by the squared normalized weights (Tucker et al.
    2018), implemented as a gradient hook on the reparameterized samples. DReG assumes
    each guide latent is not an input to another guide site (one stochastic layer): the config
    rules refuse it with two, and for a pair of one's own with several local latent sites the
    check before training warns. STL is unbiased only at k = 1: for k > 1 the term it drops does
    not vanish (Tucker et al. 2019), so it warns and says so in ``metrics.json``.
    """

    name = "iwae"

    def __init__(self, *, k: Annotated[int, Param(">= 1", "importance samples per data point")] = 5,
                 gradient: Annotated[str, Param(doc="IWAE gradient estimator: standard, stl (sticking the landing) "
                                                    "or dreg (doubly reparameterized)",
                                                choices=("standard", "stl", "dreg"))] = "standard",
                 **kl_weight):
        super().__init__(**kl_weight)
        self.k, self.gradient = k, gradient
        if biased_gradient(gradient, k):
            self.notes["biased_gradient"] = STL_BIAS
            warnings.warn(f"iwae: {STL_BIAS}", stacklevel=2)
        self._nesting: dict[tuple[int, int], int] = {}

    def _nesting_of(self, model, guide, x, y) -> int:
        key = (id(model), id(guide))
        if key not in self._nesting:
            self._nesting[key] = max_plate_nesting(model, guide, x, y)
        return self._nesting[key]

    def check(self, model, guide, x, y=None) -> None:
        """Refuse global latent sites (outside the data plate) drawn anew for each of the k samples, and
        warn for DReG on a guide with several local latent sites (see the class docstring).

        With ``log p(theta) - log q(theta)`` outside the logsumexp, the objective is a lower bound
        on log p(x) only when the k samples of every data point share one draw of theta (as
        ppvae's Bayesian decoder guide does); the random state is restored after the check.
        """
        rng = pyro.util.get_rng_state()
        try:
            lw = log_weights(model, guide, x, y, k=2, nesting=self._nesting_of(model, guide, x, y))
            if self.gradient == "dreg" and self.k > 1:  # (a trace in training mode moves batch-norm statistics)
                sites = len(local_latents(poutine.trace(guide).get_trace(x, y)))
                if biased_gradient(self.gradient, self.k, layered=sites > 1):
                    self.notes["biased_gradient"] = DREG_LAYERS_BIAS.format(n=sites)
                    warnings.warn(f"iwae: {self.notes['biased_gradient']}", stacklevel=2)
        finally:
            pyro.util.set_rng_state(rng)
        if not torch.equal(lw.global_[0], lw.global_[1]):
            raise EstimatorError(
                "iwae: the guide draws its global latent sites (outside pyro.plate('data')) separately for "
                "each of the k samples, and with their log p - log q outside the logsumexp that is not a bound "
                "on log p(x). Draw them once per call and share the draw across the enclosing plates (see "
                "ppvae.guides.bayesian.WeightPosterior), or use the 'trace' estimator.")

    def __call__(self, model, guide, x, y=None) -> Objective:
        k, gradient = self.k, self.gradient
        lw = log_weights(model, guide, x, y, k=k, nesting=self._nesting_of(model, guide, x, y),
                         beta=self.beta, detach_guide_params=gradient in ("stl", "dreg"))
        log_w = lw.log_w
        bound = lw.scale * (torch.logsumexp(log_w, 0) - math.log(k)).sum() + lw.global_.mean()
        if gradient != "dreg":
            return Objective(-bound, -bound.detach())
        w = torch.softmax(log_w.detach(), dim=0)
        for z in lw.guide_values:
            w_z = w.reshape(w.shape + (1,) * (z.dim() - w.dim()))
            z.register_hook(lambda g, w_z=w_z: g * w_z)
        surrogate = lw.scale * (w * log_w).sum() + lw.global_.mean()
        return Objective(-surrogate, -bound.detach())
