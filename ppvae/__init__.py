"""ppvae: variational autoencoders as composable Pyro model/guide pairs.

The pieces most scripts need::

    from ppvae import config, load_dataset, build_pair, make_estimator, Trainer, evaluate
"""

from ppvae.build import build_pair
from ppvae.data import Dataset, load_dataset
from ppvae.estimators import make_estimator
from ppvae.evaluate import evaluate
from ppvae.train import Trainer

__version__ = "0.1.0"

__all__ = ["Dataset", "Trainer", "build_pair", "evaluate", "load_dataset", "make_estimator"]
