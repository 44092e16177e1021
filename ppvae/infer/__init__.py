"""Inference: importance weights (the generic Pyro path ``generic``, the fast path ``fast`` and the entry point
``importance``), estimators (``estimators/``, one file each), optimizers, learning-rate schedules, the
pair-contract check (``contract``), the ``[train]`` section (``settings``, without torch) and the trainer
(``trainer``)."""
