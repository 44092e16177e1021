"""Generative side of ppvae: priors, likelihoods, decoders and composed Pyro models.

Installed as ``ppvae.models`` (the folder is mapped in pyproject.toml).
"""

from .likelihoods import (LIKELIHOODS, Bernoulli, GaussianFixed, GaussianLearned, GaussianMeanVar, GaussianOptimal,
                          GaussianPerPixel)
from .bayesian import BayesianVAEModel
from .priors import PRIORS, GaussianMixture, SparseBeta, StandardNormal, ZeroOneMixture
from .vae import VAEModel

__all__ = [
    "LIKELIHOODS", "PRIORS", "Bernoulli", "GaussianFixed", "GaussianLearned", "GaussianMeanVar", "GaussianOptimal",
    "GaussianPerPixel",
    "StandardNormal", "VAEModel", "SparseBeta", "ZeroOneMixture", "GaussianMixture", "BayesianVAEModel",
]
