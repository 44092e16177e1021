"""Run folders: where a run's config, metrics, checkpoint, figures and report live.

Every file is written atomically (a temporary file in the same folder, then a rename),
so a crash mid-write leaves the previous version intact.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ppvae.errors import CheckpointError, WriteError, one_line

CONFIG = "config.json"
EPOCHS = "metrics.jsonl"
METRICS = "metrics.json"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"  # the parameters at the best validation bound (runs with data.validation)
REPORT = "report.md"
STATUS = "STATUS"  # one line: running, interrupted, failed or trained, and how to continue
EVALUATIONS = "evaluations"  # a JSON record per evaluation (k, test points, seed, checkpoint); metrics.json: the latest
STANDARDIZATION = "standardization.json"  # the per-feature mean and sd the data were standardized with
LOCK = ".lock"  # held by the one process working in the run folder; holds its PID


def safe_name(name: str) -> str:
    """``name`` as a folder name: characters unsafe in one become ``_``."""
    return re.sub(r"[^\w.+-]", "_", name).lstrip(".") or "run"


def new_run_dir(parent: Path | str, name: str) -> Path:
    """A fresh folder ``parent/name-YYYYmmdd-HHMMSS[-n]``; characters unsafe in a folder name become ``_``."""
    parent = Path(parent)
    name = safe_name(name)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = parent / (f"{name}-{stamp}" + (f"-{n}" if n else ""))
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise write_error(path, e) from None
    raise FileExistsError(f"Could not create a new run folder under {parent}.")


def make_dir(path: Path) -> Path:
    """``path`` as a folder (created with its parents if missing), or a clear error if it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from None
    return path


@contextlib.contextmanager
def owned(run_dir: Path) -> Iterator[None]:
    """Hold the run folder for this process: an OS lock on ``.lock``, released when the process ends
    however it ends, so a crashed run never leaves its folder locked. A second process (a second
    ``--resume``, an ``eval`` during training) is refused at once, with the PID of the holder."""
    try:  # also the check, before any work, that the folder takes the files the work will write
        fd = os.open(Path(run_dir) / LOCK, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    except OSError as e:
        raise write_error(Path(run_dir), e) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise CheckpointError(f"{run_dir} is in use by process {holder}, which is training or evaluating it; wait "
                              f"for it to finish, or stop it (kill {holder}) and run the command again.") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def owned_if_run_folder(path: Path) -> contextlib.AbstractContextManager[None]:
    """:func:`owned` for a run folder (one with ``config.json``); nothing for anything else, which the
    caller then reports as not a run folder (no ``.lock`` is left in a folder given by mistake)."""
    return owned(path) if (Path(path) / CONFIG).is_file() else contextlib.nullcontext()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_error(path: Path, e: OSError, size: int | None = None) -> WriteError:
    """What to do when ``path`` cannot be written: a full disk, or a read-only folder."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        need = "" if size is None else f" ({size / 2**20:.1f} MB)" if size >= 2**20 else f" ({size / 2**10:.1f} KB)"
        return WriteError(f"No space left on the disk for {path}{need}. The files already there are intact (each is "
                          "written whole or not at all, so the last checkpoint is kept): free some space and run the "
                          "command again; a stopped run continues with 'ppvae run --resume RUN_DIR'.")
    return WriteError(f"Cannot write {path}: {e.strerror or e}. Make its folder writable or choose another (--out); "
                      "a run folder on a read-only disk can be copied somewhere writable (cp -r) and the copy given.")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` via a temporary file in the same folder and a rename, with the mode of a plain
    new file (``mkstemp`` would leave it readable by its owner only)."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(path, e, len(data)) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_error(path, e, len(data)) from None
        raise


def write_json(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def read_json(path: Path) -> Any:
    """A run file's JSON; a damaged file is a clear error that names it."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        fix = {METRICS: "'ppvae eval' on its run folder writes it again",
               CONFIG: "the run cannot be rebuilt without it; start it again"}.get(Path(path).name, "restore it")
        raise CheckpointError(f"{path} is damaged ({one_line(e)}); {fix}.") from None


def append_jsonl(path: Path, record: dict) -> None:
    """Append one line; the whole file is rewritten atomically so it is never half-written."""
    path = Path(path)
    old = path.read_bytes() if path.exists() else b""
    write_bytes_atomic(path, old + (json.dumps(record, default=str) + "\n").encode())


def write_jsonl(path: Path, records: list[dict]) -> None:
    write_bytes_atomic(path, "".join(json.dumps(r, default=str) + "\n" for r in records).encode())


def write_npz(path: Path, arrays: dict, compressed: bool = False) -> Path:
    """Save named arrays as one ``.npz`` file, atomically."""
    import numpy as np

    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())
    return Path(path)


def write_status(run_dir: Path, text: str) -> None:
    """Say in the run folder what state the run is in and how to continue it."""
    write_bytes_atomic(Path(run_dir) / STATUS, (text.rstrip() + "\n").encode())


def evaluated(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` has finished: trained to its last epoch and evaluated."""
    status = Path(run_dir) / STATUS
    if not ((Path(run_dir) / METRICS).is_file() and status.is_file()):
        return False
    text = status.read_text()
    return text.startswith("trained:") and " Evaluated: " in text


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file ([] when it does not exist); a damaged line is a clear error."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"Line {number} of {path} is damaged ({e.msg}); delete that line and the lines "
                                  "after it (the checkpoint holds the training state), then run the command "
                                  "again.") from None
    return records


def save_checkpoint(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint, turning a missing or damaged file into a clear error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}. Was the run started with 'ppvae run'?")
    try:
        # weights_only: a checkpoint holds tensors and plain values only, so nothing in it is ever executed
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, unpickling error, wrong format: all mean the file is unusable
        raise CheckpointError(
            f"The checkpoint {path} is damaged or not a ppvae checkpoint ({one_line(e)}). "
            "Restore it from a backup or start the run again."
        ) from None
    if not isinstance(state, dict) or "trainer" not in state:
        raise CheckpointError(f"{path} is not a ppvae checkpoint (no trainer state).")
    return state
