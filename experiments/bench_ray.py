"""What Ray costs a study beside the runs themselves: start-up, a worker's first task (its process
and the import of ppvae), and the dispatch of a task to a warm worker.

    python -m ppvae.experiments.bench_ray [--workers 2] [--tasks 16]
"""

from __future__ import annotations

import argparse
import statistics
import time


def _first_import() -> float:
    start = time.perf_counter()
    import ppvae.studies.workers  # noqa: F401  (what a study's task imports)

    return time.perf_counter() - start


def _nothing() -> None:
    return None


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tasks", type=int, default=16)
    args = p.parse_args(argv)
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    init = time.perf_counter() - start
    importing = ray.remote(num_cpus=1)(_first_import)
    nothing = ray.remote(num_cpus=1)(_nothing)
    start = time.perf_counter()
    imports = ray.get([importing.remote() for _ in range(args.workers)])
    first = time.perf_counter() - start
    dispatch = []
    for _ in range(args.tasks):
        start = time.perf_counter()
        ray.get(nothing.remote())
        dispatch.append(time.perf_counter() - start)
    start = time.perf_counter()
    ray.shutdown()
    out = {"ray_init_s": init, "first_tasks_s": first, "ppvae_import_in_worker_s": statistics.median(imports),
           "dispatch_warm_ms": 1000 * statistics.median(dispatch), "shutdown_s": time.perf_counter() - start}
    for key, value in out.items():
        print(f"{key:>26}: {value:.3f}")
    return out


if __name__ == "__main__":
    main()
