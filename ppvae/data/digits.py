"""scikit-learn's 8x8 digits: shipped with the library, so the quickstart and the tests need no download."""

from __future__ import annotations

import numpy as np

from ppvae import registry
from ppvae.data.dataset import Arrays, DataSource


@registry.register("dataset", "digits", labels=True)
class Digits(DataSource):
    """scikit-learn's 8x8 digits (1,797 images, 10 classes), split at random by test_fraction."""

    def arrays(self) -> Arrays:
        from sklearn.datasets import load_digits

        d = load_digits()
        x = (d.data / 16.0).astype(np.float32)
        return (*self.split(x, d.target.astype(np.int64)), (1, 8, 8), 10)
