"""Generative side of ppvae: priors, likelihoods, decoders and composed Pyro models.

Installed as ``ppvae.models`` (the folder is mapped in pyproject.toml).
"""

from .likelihoods import LIKELIHOODS, Bernoulli, GaussianFixed, GaussianLearned, GaussianMeanVar
from .priors import PRIORS, StandardNormal
from .vae import VAEModel

__all__ = [
    "LIKELIHOODS", "PRIORS", "Bernoulli", "GaussianFixed", "GaussianLearned", "GaussianMeanVar",
    "StandardNormal", "VAEModel",
]
