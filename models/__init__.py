"""Generative side of ppvae: priors, likelihoods, decoder weights and composed Pyro models.

Installed as ``ppvae.models`` (the folder is mapped in pyproject.toml). Importing it registers
every part in ``likelihoods/`` and ``priors/`` and the decoder-weight parts.
"""

from . import likelihoods, priors
from .bayesian import BayesianVAEModel, BayesianWeights
from .hierarchical import TwoLayerModel
from .likelihoods.bernoulli import Bernoulli
from .likelihoods.calibrated import GaussianOptimal, GaussianPerPixel
from .likelihoods.gaussian import GaussianFixed, GaussianLearned, GaussianMeanVar
from .priors.normal import StandardNormal
from .vae import PointWeights, VAEModel

__all__ = ["likelihoods", "priors", "BayesianVAEModel", "BayesianWeights", "TwoLayerModel", "Bernoulli",
           "GaussianOptimal", "GaussianPerPixel", "GaussianFixed", "GaussianLearned", "GaussianMeanVar",
           "StandardNormal", "PointWeights", "VAEModel"]
