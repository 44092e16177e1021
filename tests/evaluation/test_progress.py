"""An evaluation says how far it has come and refuses one that would run for days, before it does."""

import pytest

from ppvae.errors import ConfigError
from ppvae.evaluation.progress import EvaluationProgress, duration


@pytest.mark.parametrize("seconds, text", [(40, "40 s"), (150, "2.5 min"), (720, "12 min"), (3 * 3600, "3.0 h"),
                                           (9 * 86400, "9.0 days"), (12 * 86400, "12 days"),
                                           (8.1 * 365 * 86400, "8.1 years")])
def test_durations_read_as_a_person_says_them(seconds, text):
    assert duration(seconds) == text


def test_a_line_per_tenth_when_not_on_a_terminal(capsys):
    with EvaluationProgress(points=10, k=100, max_hours=1.0) as progress:
        for _ in range(20):
            progress(50)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" %")[0] for line in lines] == [f"evaluation: {p}" for p in range(10, 101, 10)]
    assert "of 10 points x k = 100" in lines[-1] and lines[-1].endswith("about 0 s left")


def test_the_second_chunk_decides_and_a_one_chunk_evaluation_is_never_refused():
    with EvaluationProgress(points=1, k=10**12, max_hours=1e-12) as progress:
        progress(1)  # the first chunk pays for setting up: no verdict yet
        with pytest.raises(ConfigError, match="would take about .* more than eval.max_hours"):
            progress(1)
    with EvaluationProgress(points=1, k=10, max_hours=1e-12) as progress:
        progress(10)
