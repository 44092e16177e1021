"""Working within the GPU's memory: retry a chunked computation with smaller chunks.

The evaluator sizes its chunks from an element budget, but the memory actually free on a
GPU depends on everything else living there. Rather than fail a long evaluation on an
out-of-memory error, :func:`retry_on_oom` halves the chunk and tries again.

On the CPU, :func:`reuse_freed_memory` keeps the chunks' freed memory in the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
from collections.abc import Callable
from typing import TypeVar

import torch

from ppvae.errors import OutOfMemory

log = logging.getLogger(__name__)

T = TypeVar("T")


def retry_on_oom(fn: Callable[[int], T], chunk: int, min_chunk: int = 1) -> tuple[T, int]:
    """``fn(chunk)``, halving ``chunk`` after each CUDA out-of-memory error down to ``min_chunk``.

    Returns the result and the chunk that worked, so callers can keep using it for the
    remaining work instead of running out of memory again.
    """
    while True:
        try:
            return fn(chunk), chunk
        except torch.cuda.OutOfMemoryError as e:
            if chunk <= min_chunk:
                raise OutOfMemory(
                    f"Out of GPU memory even with chunks of {chunk}: {str(e).splitlines()[0]} Free GPU memory "
                    "(other processes), lower eval.k / eval.num_test, or set train.device = 'cpu'.") from e
            torch.cuda.empty_cache()
            log.warning("out of GPU memory with chunks of %d; retrying with %d", chunk, max(min_chunk, chunk // 2))
            chunk = max(min_chunk, chunk // 2)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_MALLOC = {"tuned": False}


def reuse_freed_memory() -> None:
    """Serve allocations up to 32 MiB from the heap and trim it only above 256 MiB (glibc; once
    per process, for everything running in it).

    By default glibc hands freed memory back to the OS once enough of it sits at the top of
    the heap, so a chunked loop that frees ~100 MB of temporaries at the end of each chunk
    page-faults them back in at the next. Measured on the IWAE evaluator (784-500-50 VAE,
    k = 1000): 4x the page faults of a hand-written loop and 0.78x its speed; with these
    settings neither faults and both run faster. The process keeps up to 256 MiB of freed
    memory it would otherwise return.
    """
    if _MALLOC["tuned"] or platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    _MALLOC["tuned"] = bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 256 << 20))


__all__ = ["retry_on_oom", "reuse_freed_memory"]
