"""Where ppvae reads raw data and keeps its own cache: no imports beyond the standard library, so the
command line can find its cache without loading torch."""

from __future__ import annotations

import os
from pathlib import Path


def data_root(data_dir: str) -> Path:
    """``data_dir``, else ``$PPVAE_DATA``, else ``~/.cache/ppvae``."""
    return Path(data_dir or os.environ.get("PPVAE_DATA", "") or Path.home() / ".cache" / "ppvae")


def cache_root() -> Path:
    """ppvae's own cache (derived data, feature networks, the parts catalog): ``$PPVAE_CACHE``, else
    ``~/.cache/ppvae``."""
    return Path(os.environ.get("PPVAE_CACHE", "") or Path.home() / ".cache" / "ppvae")


__all__ = ["data_root", "cache_root"]
