"""ppvae: variational autoencoders as composable Pyro model/guide pairs.

The pieces most scripts need, imported on first use (so ``import ppvae`` stays cheap)::

    from ppvae import config, load_dataset, build_pair, make_estimator, Trainer, evaluate

and the notebook API: ``ppvae.run(experiment, **overrides)`` and ``ppvae.load(run_dir)`` give a
:class:`~ppvae.api.Run` (see :mod:`ppvae.api`).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "Dataset": "ppvae.data",
    "load_dataset": "ppvae.data",
    "build_pair": "ppvae.build",
    "make_estimator": "ppvae.infer.estimators",
    "Trainer": "ppvae.infer.trainer",
    "evaluate": "ppvae.evaluation.loglik",
    "Run": "ppvae.api",
    "run": "ppvae.api",
    "load": "ppvae.api",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ppvae' has no attribute {name!r}")
