"""Datasets as flat float tensors kept whole in memory (and on the device), with batching.

A :class:`Dataset` holds train and test images flattened to ``[N, D]`` in [0, 1], their
``image_shape`` for plots and CNNs, optional integer labels, and the binarization rule.
With ``binarize = "dynamic"`` the stored training images are grey levels and every batch
is a fresh Bernoulli draw; the test set is binarized once with a fixed seed, as in
Burda et al. (2015).

Each file in this folder registers data sets (parts of kind ``dataset``): a subclass of
:class:`DataSource` whose ``arrays()`` reads the raw data; the keyword arguments of
:class:`DataSource` are the ``[data]`` keys every set takes, and a set adds its own. Its
``binary`` and ``labels`` traits say whether its images are 0/1 and whether it has labels
(None: it depends on the file), so :mod:`ppvae.rules` can refuse a mismatch before loading.
"""

from __future__ import annotations

from typing import Any

from ppvae import registry
from ppvae.data.dataset import Dataset, DataSource
from ppvae.registry import Spec


def load_dataset(spec: Spec | str | dict[str, Any], **params: Any) -> Dataset:
    """Load the data set a ``[data]`` section names (a spec, a name, or a table), split, slice and binarize it,
    e.g. ``load_dataset("digits", binarize="dynamic")``."""
    if not isinstance(spec, Spec):
        spec = registry.spec("dataset", spec, "data")
    if params:
        spec = registry.spec("dataset", spec.to_dict() | params, "data")
    return spec.create().load(spec.name)


registry.discover(__name__)

__all__ = ["Dataset", "DataSource", "load_dataset"]
