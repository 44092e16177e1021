"""Inference side of ppvae: encoders, posterior families and composed Pyro guides.

Installed as ``ppvae.guides`` (the folder is mapped in pyproject.toml). Importing it registers
every posterior family in ``families/``.
"""

from . import families
from .families.delta import PointMass
from .families.normal import DiagonalNormal
from .vae import VAEGuide

__all__ = ["families", "DiagonalNormal", "PointMass", "VAEGuide"]
