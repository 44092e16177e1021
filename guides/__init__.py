"""Inference side of ppvae: encoders, posterior families and composed Pyro guides.

Installed as ``ppvae.guides`` (the folder is mapped in pyproject.toml).
"""

from .posteriors import (FAMILIES, BetaFamily, DiagonalNormal, InverseAutoregressiveFlow, KumaraswamyFamily,
                         LowRankNormal, PointMass)
from .vae import VAEGuide

__all__ = ["FAMILIES", "DiagonalNormal", "PointMass", "VAEGuide", "BetaFamily", "KumaraswamyFamily", "LowRankNormal",
           "InverseAutoregressiveFlow"]
