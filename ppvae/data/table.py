"""Real-valued measurements that are not images: a CSV file, one row per point, one column per feature."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np

from ppvae import registry
from ppvae.data.dataset import Arrays, DataSource, checked_labels
from ppvae.errors import ConfigError, DataError
from ppvae.registry import Param


@registry.register("dataset", "csv", binary=False, labels=None, images=False)
class Csv(DataSource):
    """Real values from a CSV file (a header row is optional; one column may hold integer labels), for
    Gaussian likelihoods; standardized per feature by default, split at random by test_fraction."""

    def __init__(self, *,
                 path: Annotated[str, Param(doc="the .csv file: one row per point, numbers only")] = "",
                 label_column: Annotated[str, Param(doc="the column holding integer labels 0..K-1: its header name "
                                                        "or 0-based index; empty: no labels")] = "",
                 delimiter: Annotated[str, Param(doc="the field separator")] = ",",
                 scale: Annotated[str, Param(doc="'standardize' per feature by the training split (undone for "
                                                 "samples and reconstructions), or 'real': values as stored",
                                             choices=("standardize", "real"))] = "standardize",
                 **common):
        super().__init__(**common)
        self.path, self.label_column, self.delimiter = path, label_column, delimiter
        self.real_valued, self.standardize, self.images = True, scale == "standardize", False

    @staticmethod
    def check_params(params: dict, key: str) -> None:
        if not params["path"]:
            raise ConfigError(f"{key}.name = 'csv' needs {key}.path = 'file.csv' (one row per point).")
        if len(params["delimiter"]) != 1:
            raise ConfigError(f"{key}.delimiter = {params['delimiter']!r} must be one character, e.g. ',' or ';'.")

    def arrays(self) -> Arrays:
        path = Path(self.path).expanduser()
        if not path.is_file():
            raise DataError(f"data.path {str(path)!r} does not exist (looked in {path.resolve().parent}); "
                            "point data.path at your .csv file.")
        try:
            lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
        except UnicodeDecodeError as e:
            raise DataError(f"{path} is not a text file ({e.reason} at byte {e.start}); save it as CSV.") from None
        if not lines:
            raise DataError(f"{path} is empty; it needs one row per point.")
        first = [f.strip() for f in lines[0][1].split(self.delimiter)]
        header = first if not all(_is_number(f) for f in first) else None
        rows = lines[1:] if header else lines
        x = self._numbers(rows, len(first), path)
        y = None
        if self.label_column:
            column = self._label_index(header, len(first), path)
            y, x = x[:, column], np.delete(x, column, axis=1)
        if len(x) < 2:
            raise DataError(f"{path} holds {len(x)} row(s); at least 2 are needed for a train/test split.")
        if not np.isfinite(x).all():
            row, col = map(int, np.argwhere(~np.isfinite(x))[0])
            raise DataError(f"{path}, line {rows[row][0]}: feature {col} is missing, NaN or infinite; fill or drop "
                            "such rows first.")
        y, num_classes = checked_labels(y, len(x), path, f"label column {self.label_column!r}")
        return (*self.split(x.astype(np.float32), y), (1, 1, x.shape[1]), num_classes)

    def _numbers(self, rows: list[tuple[int, str]], width: int, path: Path) -> np.ndarray:
        out = np.empty((len(rows), width))
        for i, (line, row) in enumerate(rows):
            fields = row.split(self.delimiter)
            if len(fields) != width:
                raise DataError(f"{path}, line {line}: {len(fields)} fields, but the first row has {width}; "
                                f"every row needs the same columns (data.delimiter = {self.delimiter!r}).")
            try:
                out[i] = [float(f) if f.strip() else np.nan for f in fields]
            except ValueError:
                bad = next(f for f in fields if f.strip() and not _is_number(f))
                raise DataError(f"{path}, line {line}: {bad.strip()!r} is not a number; the CSV must hold "
                                "numbers only (labels as integers 0..K-1 in data.label_column).") from None
        return out

    def _label_index(self, header: list[str] | None, width: int, path: Path) -> int:
        if header and self.label_column in header:
            return header.index(self.label_column)
        if self.label_column.isdigit() and int(self.label_column) < width:
            return int(self.label_column)
        names = f"its columns are {', '.join(map(repr, header))}" if header else "it has no header row"
        raise DataError(f"data.label_column = {self.label_column!r} is not a column of {path} ({names}, {width} in "
                        "all); give a header name or a 0-based index.")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
