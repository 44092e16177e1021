"""Your own data: an ``.npz`` file with an array ``x`` (images, or real values with ``scale = "real"``
or ``"standardize"``) and optional integer labels ``y``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np

from ppvae import registry
from ppvae.data.dataset import Arrays, DataSource, checked_labels
from ppvae.errors import ConfigError, DataError
from ppvae.registry import Param


def _npz_image_shape(x: np.ndarray, path: Path) -> tuple[int, ...]:
    if x.ndim == 2:
        side = int(round(np.sqrt(x.shape[1])))
        return (1, side, side) if side * side == x.shape[1] else (1, 1, x.shape[1])
    if x.ndim == 3:
        return (1, *x.shape[1:])
    if x.ndim == 4:
        if x.shape[1] > 4 and x.shape[3] in (1, 3, 4):
            raise DataError(f"{path}: 'x' has shape {x.shape}, which looks channels-last (N, H, W, C); "
                            "save it as (N, C, H, W), e.g. np.savez(path, x=x.transpose(0, 3, 1, 2)).")
        return tuple(x.shape[1:])
    raise DataError(f"{path}: 'x' has shape {x.shape}; expected (N, D), (N, H, W) or (N, C, H, W).")


def _scale_npz(x: np.ndarray, how: str, path: Path) -> np.ndarray:
    """Bring pixel values into [0, 1]; refuse to guess when the data do not look like images."""
    lo, hi = (float(x.min()), float(x.max()))
    if how == "255":
        if lo < 0 or hi > 255:
            raise DataError(f"{path}: 'x' ranges over [{lo:g}, {hi:g}], not 0..255, so data.scale = '255' "
                            "does not fit; rescale the data to [0, 1] and set data.scale = 'none'.")
        return x.astype(np.float32) / 255.0
    if 0 <= lo and hi <= 1:
        return x.astype(np.float32)
    looks_uint8 = lo >= 0 and hi <= 255 and (x.dtype == np.uint8 or bool(np.all(x == np.round(x))))
    if how == "auto" and looks_uint8:
        return x.astype(np.float32) / 255.0
    if lo < 0:
        fix = "rescale the data to [0, 1] (negative values are not pixel intensities)"
    elif how == "none":
        fix = "set data.scale = '255' to divide by 255, or rescale the data to [0, 1]"
    else:
        fix = "rescale the data to [0, 1] (or set data.scale = '255' if they are 0..255 pixels)"
    raise DataError(f"{path}: 'x' ranges over [{lo:g}, {hi:g}], outside [0, 1] (data.scale = {how!r}); {fix}.")



@registry.register("dataset", "npz", binary=None, labels=None, images=None)
class Npz(DataSource):
    """Your own images or real values: data.path is an .npz with x (N, D), (N, H, W) or (N, C, H, W) and
    optional integer labels y (N,); split at random by test_fraction."""

    def __init__(self, *,
                 path: Annotated[str, Param(doc="the .npz file (array 'x', optional 'y')")] = "",
                 scale: Annotated[str, Param(doc="pixel scaling: 'auto' divides 0..255 integer images by 255, "
                                                 "'255' always divides, 'none' uses values as stored (must lie "
                                                 "in [0, 1]); for real values, not pixels: 'real' as stored, "
                                                 "'standardize' per feature by the training split (undone for "
                                                 "samples and reconstructions)",
                                             choices=("auto", "none", "255", "real", "standardize"))] = "auto",
                 **common):
        super().__init__(**common)
        self.path, self.scale = path, scale
        self.real_valued = scale in ("real", "standardize")
        self.standardize = scale == "standardize"

    @staticmethod
    def check_params(params: dict, key: str) -> None:
        if not params["path"]:
            raise ConfigError(f"{key}.name = 'npz' needs {key}.path = 'file.npz' (an array 'x', optional 'y').")

    def arrays(self) -> Arrays:
        path = Path(self.path).expanduser()
        if not path.is_file():
            raise DataError(f"data.path {str(path)!r} does not exist (looked in {path.resolve().parent}); "
                            "point data.path at your .npz file.")
        save_hint = "save it with np.savez(path, x=images[, y=labels])"
        with open(path, "rb") as fh:
            start = fh.read(6)
        if not start.startswith((b"PK", b"\x93NUMPY")):  # the zip archive np.savez writes, or a bare .npy
            raise DataError(f"{path} is not an .npz file (it starts with {start!r}, not a zip archive's 'PK'); "
                            f"{save_hint}.")
        try:
            f = np.load(path, allow_pickle=False)
        except Exception as e:
            raise DataError(f"Cannot read {path} as .npz ({type(e).__name__}: {e}); {save_hint}.") from e
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise DataError(f"{path} is a single .npy array; {save_hint}.")
        with f:
            if "x" not in f.files:
                raise DataError(f"{path} has no array named 'x' (it has: {', '.join(f.files) or 'none'}); {save_hint}.")
            try:
                x = f["x"]
                y = f["y"] if "y" in f.files else None
            except Exception as e:
                raise DataError(f"Cannot read arrays from {path} ({type(e).__name__}: {e}); {save_hint}.") from e
        if x.dtype == bool:
            x = x.astype(np.uint8)
        if x.dtype.kind not in "iuf":
            raise DataError(f"{path}: 'x' has dtype {x.dtype}; it must hold real numbers (pixel values).")
        shape = _npz_image_shape(x, path)
        if len(x) < 2:
            raise DataError(f"{path}: 'x' holds {len(x)} image(s); at least 2 are needed for a train/test split.")
        if not np.isfinite(x).all():
            raise DataError(f"{path}: 'x' contains NaN or infinite values; clean the data first.")
        self.images = not self.real_valued or x.ndim > 2  # a 2-D array of real values is a table of features
        x = (x.astype(np.float32) if self.real_valued else _scale_npz(x, self.scale, path)).reshape(len(x), -1)
        y, num_classes = checked_labels(y, len(x), path, "'y'")
        return (*self.split(x, y), shape, num_classes)
