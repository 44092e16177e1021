"""How far an evaluation has come, and a refusal of one that would run for days.

A k = 5000 evaluation of MNIST runs for minutes and a mistyped ``eval.k`` for years; both
look the same until one measures. The rate is measured on the first chunk of samples, so
the estimate is of this machine and this pair, not a guess from sizes. An evaluation done in
one chunk is never refused: it is over by then.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from ppvae.errors import ConfigError


def duration(seconds: float) -> str:
    """Seconds as a person reads them: '40 s', '12 min', '3.5 h', '9 days', '8.1 years'."""
    for unit, size in (("years", 365 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            value = seconds / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{seconds:.0f} s"


class EvaluationProgress:
    """Counts importance samples evaluated (points x samples); shows a bar on a terminal and a line
    per tenth elsewhere (a log file), and after the second chunk refuses an evaluation whose
    estimated time exceeds ``max_hours``. A context manager: the bar closes however it ends."""

    def __init__(self, points: int, k: int, max_hours: float) -> None:
        self.points, self.k, self.max_hours = points, k, max_hours
        self.total, self.done, self.chunks, self.next_tenth = points * k, 0, 0, 1
        self.start = self.last = time.perf_counter()
        self.bar = tqdm(total=self.total, unit="sample", unit_scale=True, dynamic_ncols=True, mininterval=1.0,
                        file=sys.stderr, disable=None, desc=f"evaluation (k = {k})", leave=False)

    def __call__(self, samples: int) -> None:
        now = time.perf_counter()
        self.done += samples
        self.bar.update(samples)
        if self.chunks == 1:  # the second chunk's rate: the first also pays for setting up
            rate = samples / max(now - self.last, 1e-9)
            expected = now - self.start + (self.total - self.done) / rate
            if expected > self.max_hours * 3600:
                raise ConfigError(
                    f"Evaluating {self.points} test points with eval.k = {self.k} would take about "
                    f"{duration(expected)} here ({rate:,.0f} samples per second, measured on its second chunk of "
                    f"samples), more than eval.max_hours = {self.max_hours:g}. Lower eval.k or eval.num_test, or "
                    "raise eval.max_hours to run it anyway.")
        self.chunks, self.last = self.chunks + 1, now
        if self.bar.disable and self.done >= self.next_tenth * self.total / 10:
            self.next_tenth = 10 * self.done // self.total + 1
            elapsed = now - self.start
            left = duration(elapsed / self.done * (self.total - self.done))
            print(f"evaluation: {100 * self.done / self.total:.0f} % of {self.points} points x k = {self.k}, "
                  f"{self.done / elapsed:,.0f} samples/s, about {left} left", file=sys.stderr)

    def __enter__(self) -> "EvaluationProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
