"""Where a study's runs execute: one after another in this process, or as Ray tasks in worker
processes, one run at a time in each (Pyro's parameter store is global: the trainer clears it for
each run, so a worker is reused for the next run and its start-up is paid once).

Every run has a fixed folder, so running the same study again skips the runs that finished,
resumes the ones that stopped from their last checkpoint and starts the rest. A Ray worker that
dies (killed, out of memory, a lost node) is retried by Ray, and the retried task resumes from
that checkpoint, not from step 0.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ppvae import runs
from ppvae.config import Config, build, to_dict
from ppvae.errors import ConfigError, Interrupted, PPVAEError, TrainingError, one_line
from ppvae.evaluation.loglik import Pointwise, pointwise
from ppvae.infer.trainer import noting_signals
from ppvae.nn import eval_mode
from ppvae.studies import run as one_run

RETRIES = 3  # times Ray runs a task again after its worker died; each retry resumes the run folder
STOP_WAIT_S = 60  # after Ctrl-C: how long the workers get to save their exact position


@dataclasses.dataclass(frozen=True)
class Pool:
    """How a study's runs execute: ``workers`` at once (1: in this process, one after another),
    each with ``threads`` torch threads and ``gpus`` of a GPU, on this machine or on the Ray
    cluster at ``address`` ("auto", "HOST:PORT" or "ray://HOST:PORT")."""

    workers: int = 1
    threads: int | None = None
    gpus: float = 0.0
    address: str | None = None

    @property
    def on_ray(self) -> bool:
        return self.workers > 1 or self.address is not None

    def check(self) -> None:
        """Refuse what cannot work, before any run starts."""
        if self.gpus < 0:
            raise ConfigError(f"--gpus-per-run {self.gpus:g} must be positive, e.g. 0.25 to share a GPU among four.")
        if self.gpus > 0 and self.address is None and not torch.cuda.is_available():
            raise ConfigError(f"--gpus-per-run {self.gpus:g} asks for a GPU, but this machine has none that PyTorch "
                              "sees; drop the option to run on CPU, or give --address of a Ray cluster with GPUs.")
        if self.address is not None:
            _check_reachable(self.address)


@dataclasses.dataclass(frozen=True)
class Job:
    """One run of a study: the config it is built from (base dict and overrides, with the folders of
    the runs it starts from filled in), its fixed folder, and the folders of the runs it needs first."""

    label: str
    base: dict
    overrides: tuple[str, ...]
    folder: Path
    group: str  # the grid point and seed: the runs of one group may start from each other
    needs: tuple[Path, ...] = ()


def check_folder(job: Job) -> Config:
    """The run's config; refused if its folder already holds a run with other settings (somebody's
    result, which must not be overwritten or continued as if it were this run)."""
    cfg = one_run.absolute_paths(build(job.base, list(job.overrides)))
    if (job.folder / runs.CONFIG).is_file():
        planned = json.loads(json.dumps(to_dict(cfg), default=str))  # as config.json holds it
        changed = one_run.changed_keys(runs.read_json(job.folder / runs.CONFIG), planned)
        if changed:
            raise ConfigError(f"{job.folder} holds a run with other settings than the study plans now (changed: "
                              f"{', '.join(changed)}); give the study another --out, or delete that folder to run "
                              "it again.")
    return cfg


def run_one(job: Job, threads: int | None = None) -> Path:
    """Run, continue or keep one run in its fixed folder: a finished run is kept as it is, a stopped
    one resumes from its checkpoint, anything else starts."""
    if threads:
        torch.set_num_threads(threads)
    cfg = check_folder(job)
    if runs.evaluated(job.folder):
        return job.folder
    if (job.folder / runs.CHECKPOINT).is_file():
        return one_run.run(None, resume=job.folder, trust=True)
    return one_run.run(cfg, folder=job.folder)


def _enter_worker(cwd: str, threads: int | None) -> None:
    """A Ray task's set-up: the driver's working folder (relative paths in a config mean what they
    meant there) when this machine has it, and the task's torch threads."""
    if os.path.isdir(cwd):
        os.chdir(cwd)
    if threads:
        torch.set_num_threads(threads)


def _run_in_worker(job: Job, threads: int | None, cwd: str) -> Path:
    """:func:`run_one` in a Ray worker."""
    _enter_worker(cwd, threads)
    return run_one(job)


def execute(jobs: list[Job], pool: Pool, on_done: Callable[[Job], None] = lambda job: None) -> dict[Path, str]:
    """Run ``jobs`` (each after the jobs it needs) and return what went wrong, by folder: a run that
    failed, and the runs that start from it, which are not run. The others all run.

    A line per finished run and a bar of runs done go to stderr. Ctrl-C or SIGTERM stops every
    run after its current step with its position saved, and raises :class:`Interrupted`."""
    count = iter(range(1, len(jobs) + 1))
    with tqdm(total=len(jobs), unit="run", dynamic_ncols=True, file=sys.stderr, disable=None) as bar:
        def done(job: Job, kept: bool) -> None:
            bar.update(1)
            bar.write(f"[{next(count)}/{len(jobs)}] {job.label}: {_headline(job.folder, kept)}", file=sys.stderr)
            on_done(job)

        try:
            return (_on_ray if pool.on_ray else _here)(jobs, pool, done)
        except Interrupted as e:
            again = ("Every run folder is resumable: run the same command again to continue (finished runs are "
                     "kept, stopped ones resume from their checkpoints).")
            raise Interrupted(f"{e} {again}", e.signum) from None


def _here(jobs: list[Job], pool: Pool, done: Callable[[Job, bool], None]) -> dict[Path, str]:
    failed: dict[Path, str] = {}
    for job in jobs:
        if _blocked(job, failed, jobs):
            continue
        kept = runs.evaluated(job.folder)
        try:
            run_one(job, pool.threads)
        except Interrupted:
            raise
        except PPVAEError as e:
            failed[job.folder] = one_line(e)
            continue
        done(job, kept)
    return failed


def _blocked(job: Job, failed: dict[Path, str], jobs: list[Job]) -> bool:
    """Whether ``job`` starts from a run that failed (it is then marked as not run)."""
    bad = [n for n in job.needs if n in failed]
    if bad:
        label = next(j.label for j in jobs if j.folder == bad[0])
        failed[job.folder] = f"not run: it starts from the run {label!r}, which did not finish"
    return bool(bad)


def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--workers > 1 and --address run on Ray, which is not installed: pip install 'ray>=2.9' "
                          "(or drop the options to run in this process).") from None
    return ray


def _on_ray(jobs: list[Job], pool: Pool, done: Callable[[Job, bool], None]) -> dict[Path, str]:
    ray = _ray()
    threads = pool.threads or 1
    _start(ray, pool, threads)
    task = ray.remote(num_cpus=threads, num_gpus=pool.gpus, max_retries=RETRIES,
                      retry_exceptions=False)(_run_in_worker)
    failed: dict[Path, str] = {}
    finished: set[Path] = set()
    pending, inflight = list(jobs), {}
    try:
        with noting_signals() as noted:
            while pending or inflight:
                if noted:
                    raise Interrupted(f"Stopped by {signal.Signals(noted[0]).name}.", noted[0])
                for job in list(pending):
                    if _blocked(job, failed, jobs):
                        pending.remove(job)
                    elif len(inflight) < pool.workers and all(n in finished for n in job.needs):
                        inflight[task.remote(job, pool.threads, os.getcwd())] = (job, runs.evaluated(job.folder))
                        pending.remove(job)
                ready = ray.wait(list(inflight), num_returns=1, timeout=1.0)[0] if inflight else []
                if not ready:  # a short wait, so that Ctrl-C is seen at once
                    continue
                job, kept = inflight.pop(ready[0])
                try:
                    ray.get(ready[0])
                except ray.exceptions.RayError as e:
                    failed[job.folder] = _task_error(e)
                    continue
                finished.add(job.folder)
                done(job, kept)
    except Interrupted:
        for ref in inflight:
            ray.cancel(ref)  # the worker's Ctrl-C: it stops after its step and saves its position
        ray.wait(list(inflight), num_returns=len(inflight), timeout=STOP_WAIT_S)
        raise
    finally:
        ray.shutdown()
    return failed


def _start(ray, pool: Pool, threads: int) -> None:
    """Connect to the cluster at ``pool.address``, or start one on this machine sized so that
    ``pool.workers`` runs of ``threads`` threads run at once."""
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    # Ray puts the driver's working folder on its workers' import path; from a checkout of ppvae that
    # folder's ppvae/ (without models/ and guides/, which install under it) would hide the installed one.
    here = os.getcwd()
    os.chdir(tempfile.gettempdir())
    try:
        if pool.address is None:
            ray.init(num_cpus=pool.workers * threads, **quiet)
        else:
            ray.init(address=pool.address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError) as e:
        if pool.address is None:
            raise
        raise ConfigError(f"No Ray cluster answered at --address {pool.address} ({one_line(e)}); start one with "
                          "'ray start --head', or drop --address to run on this machine.") from None
    finally:
        os.chdir(here)
    if pool.gpus > 0 and not ray.cluster_resources().get("GPU"):
        ray.shutdown()
        raise ConfigError(f"--gpus-per-run {pool.gpus:g} asks for GPUs, but the Ray cluster has none; drop the option "
                          "to run on CPU.")


def _check_reachable(address: str) -> None:
    """A HOST:PORT that answers within seconds (Ray itself would retry for minutes)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or auto.")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ConfigError(f"Cannot reach a Ray cluster at --address {address} ({e.strerror or e}); check the address "
                          "and that the cluster is up ('ray status' on its head node), or drop --address to run on "
                          "this machine.") from None


def _task_error(e: Exception) -> str:
    """What a failed Ray task's run says (its ppvae error), or why its worker is gone."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        return one_line(cause)
    return f"its worker was lost {RETRIES + 1} times ({one_line(e)})"


def _headline(folder: Path, kept: bool) -> str:
    m = runs.read_json(folder / runs.METRICS)
    nll = m.get("test_nll")
    text = "finished earlier, kept" if kept else "done"
    if isinstance(nll, float):
        text += f"; test NLL {nll:.2f} (s.e. {m.get('test_ll_se', float('nan')):.2f})"
    if isinstance(m.get("test_elbo"), float):
        text += f", ELBO {m['test_elbo']:.2f}"
    return f"{text} ({folder.name})"


def evaluation_shards(run_dir: Path, overrides: list[str], points: int, pool: Pool) -> Callable[[int], Pointwise]:
    """``shards(seed)`` for :func:`ppvae.evaluation.loglik.evaluate_detailed`: the ``points`` test rows
    cut into ``pool.workers`` slices, each evaluated by a Ray task that loads the run folder itself;
    the draws are those of one evaluation with that seed (tiles of the whole test set), so the
    numbers are too."""
    def shards(seed: int) -> Pointwise:
        ray = _ray()
        _start(ray, pool, pool.threads or 1)
        try:
            task = ray.remote(num_cpus=pool.threads or 1, num_gpus=pool.gpus, max_retries=RETRIES,
                              retry_exceptions=False)(_evaluate_rows)
            cuts = np.linspace(0, points, pool.workers + 1).round().astype(int)
            refs = [task.remote(str(run_dir), overrides, slice(int(a), int(b)), seed, pool.threads, os.getcwd())
                    for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
            try:
                return Pointwise.join(ray.get(refs))
            except ray.exceptions.RayError as e:
                raise TrainingError(f"A slice of the evaluation failed: {_task_error(e)}") from None
        finally:
            ray.shutdown()

    return shards


def _evaluate_rows(run_dir: str, overrides: list[str], rows: slice, seed: int, threads: int | None,
                   cwd: str) -> Pointwise:
    """One slice of a run's evaluation, in a Ray worker: the run rebuilt from its folder, the
    evaluated checkpoint loaded and prepared as :func:`ppvae.studies.run.finish` prepares it."""
    _enter_worker(cwd, threads)
    cfg, data, trainer, _ = one_run.load_run(Path(run_dir), overrides, trust=True)
    one_run.evaluated_checkpoint(cfg, Path(run_dir), trainer, data)
    x, y = one_run.test_points(cfg, data)
    with eval_mode(trainer.model, trainer.guide):
        return pointwise(trainer.model, trainer.guide, x, y, k=cfg.eval.k, seed=seed, rows=rows,
                         chunk_size=cfg.eval.chunk_size, keep_log_weights=one_run.keeps_log_weights(cfg, x),
                         max_hours=cfg.eval.max_hours)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` as (i, n), 1 <= i <= n."""
    i, sep, n = text.partition("/")
    if not (sep and i.isdigit() and n.isdigit() and 1 <= int(i) <= int(n)):
        raise ConfigError(f"--shard {text!r} must be i/n with 1 <= i <= n, e.g. --shard 1/4 for the first of four "
                          "slices.")
    return int(i), int(n)


def shard(jobs: list[Job], i: int, n: int) -> list[Job]:
    """The i-th of n slices of ``jobs``, by group, so a run and the runs it starts from stay in one slice."""
    groups = list(dict.fromkeys(job.group for job in jobs))
    return [job for job in jobs if groups.index(job.group) % n == i - 1]


__all__ = ["Pool", "Job", "check_folder", "run_one", "execute", "evaluation_shards", "parse_shard", "shard"]
