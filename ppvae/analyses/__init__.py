"""Analyses: optional work added to a run after its evaluation, each a registered part.

An analysis is enabled in a config by its table, ``[eval.sample_quality] n = 1000`` (or
``eval.theory = true`` for its defaults). After the test evaluation, every enabled analysis
gets the trained run (:class:`RunContext`) and returns a :class:`Result`: metrics for
``metrics.json``, figures, and a section for ``report.md``. An analysis may also
``aggregate`` across the runs of a study that enabled it (one figure of every run, a
comparison table), written into the study folder.

Each file here registers one analysis. An analysis that draws random numbers seeds itself from
the run's seed, so its numbers do not depend on which other analyses run.
"""

from ppvae import registry
from ppvae.analyses.base import Analysis, Result, RunContext, StudyRun

registry.discover(__name__)

__all__ = ["RunContext", "Result", "StudyRun", "Analysis"]
