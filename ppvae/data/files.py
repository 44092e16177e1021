"""Raw data files on disk: where they live, checksums, downloads, and the error that says what to put where.

Raw files live under ``data.data_dir`` (default ``$PPVAE_DATA`` or ``~/.cache/ppvae``). They are
md5-checked and read directly, so a read-only shared copy works; a missing file is a
:class:`~ppvae.errors.DataError` that names the files and the folder.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import socket
import zlib
from collections.abc import Iterator
from pathlib import Path

from ppvae.errors import DataError
from ppvae.paths import cache_root, data_root

_DATA_DIR_HINT = "Set data.data_dir (or $PPVAE_DATA) to a folder that holds them, or copy them there."
_DOWNLOAD_TIMEOUT_S = 20.0


def cache_file(source: Path, name: str) -> Path:
    """Where a copy derived from ``source`` is cached: in ``cache_root()/derived``, never beside the raw
    files (their folder may be shared or read-only), keyed by the source's full path."""
    key = hashlib.sha1(str(Path(source).resolve()).encode()).hexdigest()[:12]
    return cache_root() / "derived" / f"{key}-{name}"


def md5(data: bytes | Path) -> str:
    if isinstance(data, Path):
        h = hashlib.md5()
        with open(data, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    return hashlib.md5(data).hexdigest()


def check_md5(path: Path, expected: str, data: bytes | None = None) -> None:
    """Catch truncated or altered files here, not as a confusing parse error later."""
    actual = md5(path if data is None else data)
    if actual != expected:
        raise DataError(
            f"{path} is truncated or corrupted (md5 {actual}, expected "
            f"{expected}). Delete it and download it again, or copy it again from a good source.")


def read_bytes(path: Path) -> bytes:
    """The file's contents, gunzipped for ``.gz``; an unreadable file is a DataError."""
    try:
        return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"Cannot read {path} ({e}); delete it and download or copy it again.") from e


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """urllib waits forever by default; offline or firewalled machines must fail fast instead."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def download(urls: list[str], folder: Path, filename: str, md5sum: str) -> str | None:
    """Fetch ``filename`` into ``folder`` from the first URL that works; return the failure, if any.

    A partial file left by a failed attempt is removed so it is never mistaken for data, and so are
    the folders the attempt created (a mistyped ``data_dir`` is not left behind).
    """
    from torchvision.datasets.utils import download_url

    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    errors = []
    for url in urls:
        try:
            with _socket_timeout(_DOWNLOAD_TIMEOUT_S):
                download_url(url, str(folder), filename=filename, md5=md5sum)
            return None
        except Exception as e:  # any network, disk or checksum failure becomes one DataError
            errors.append(f"{url}: {type(e).__name__}: {e}")
            with contextlib.suppress(OSError):
                (folder / filename).unlink()
    for path in created:
        with contextlib.suppress(OSError):  # only if empty: never a file someone put there meanwhile
            path.rmdir()
    return "; ".join(errors)


def missing_files_error(what: str, folder: Path, names: list[str], download: bool,
                        failure: str | None, urls: str = "") -> DataError:
    listed = "\n".join(f"  {folder / n}" for n in names)
    how = (f"Downloading them failed ({failure}); is there no network here? " if download and failure
           else "Downloading is off (data.download = false). " if not download else "")
    src = f" They are available from {urls}." if urls else ""
    return DataError(f"{what} files are missing. Put these files in {folder}:\n{listed}\n"
                     f"{how}{_DATA_DIR_HINT}{src}")


__all__ = ["data_root", "md5", "check_md5", "read_bytes", "download", "missing_files_error"]
