"""Tables as Markdown and CSV: the one writer every report, study and comparison uses.

Cells are formatted once here: None and non-finite numbers print as ``-``, floats with
``number`` (a format spec; ``"auto"``: three decimals below 10,000, else four significant
digits), strings as given (so a caller can pre-format a cell).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def cell(value: Any, number: str = "auto") -> str:
    """One table cell as text."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        if number == "auto":
            return f"{value:.3f}" if abs(value) < 1e4 else f"{value:.4g}"
        return format(value, number)
    return str(value)


def markdown(header: Sequence[str], rows: Sequence[Sequence[Any]], number: str = "auto") -> str:
    """A Markdown table (with a trailing newline)."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(v, number) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def records(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], number: str = "auto") -> str:
    """A Markdown table of dicts, one column per key in ``columns``."""
    return markdown(columns, [[r.get(c) for c in columns] for r in rows], number)


def mean_sd(values: Iterable[Any]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the numbers among ``values`` (None, NaN and non-numbers left
    out): the summary across seeds; None where there is no number, or only one for the deviation."""
    known = [float(v) for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return (statistics.fmean(known) if known else None, statistics.stdev(known) if len(known) > 1 else None)


def csv_bytes(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """The same rows as CSV (raw values, no formatting)."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode()


__all__ = ["cell", "markdown", "records", "mean_sd", "csv_bytes"]
