"""The ``ppvae`` command line: run, eval, compare, sample and list."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from ppvae.errors import Interrupted, PPVAEError


def cmd_run(args: argparse.Namespace) -> int | None:
    from ppvae import config

    if args.nproc:
        return launch_ranks(args)
    if args.resume:  # positional arguments are all overrides here
        from ppvae.studies import run as experiment

        overrides = [args.experiment, *args.overrides] if args.experiment else args.overrides
        run_dir = experiment.run(None, resume=Path(args.resume), overrides=overrides, trust=args.trust_pair)
    elif "study" in config.read_experiment(config.resolve_experiment(args.experiment)):
        from ppvae.studies import study, workers

        variants = args.variants.split(",") if args.variants else None
        shard = workers.parse_shard(args.shard) if args.shard else None
        pool = workers.Pool(args.workers, args.threads_per_run, args.gpus_per_run, args.address)
        seeds = study.parse_seeds(args.seeds) if args.seeds else None
        folder = study.run(args.experiment, args.scale or "smoke", args.overrides, out=args.out, variants=variants,
                           pool=pool, shard=shard, seeds=seeds)
        print(f"study folder: {folder}")
        if shard:
            print(f"shard {args.shard} done; once every shard is: ppvae study merge FOLDER... (or this command "
                  "without --shard, where the shards share a folder)")
        else:
            print(f"results:      {folder / 'results.md'}")
        return
    else:
        defaults = vars(parser().parse_args(["run", args.experiment]))
        study_only = [f"--{k.replace('_', '-')}" for k in ("scale", "variants", "seeds", "workers",
                                                            "threads_per_run", "gpus_per_run", "address", "shard")
                      if getattr(args, k) != defaults[k]]
        if study_only:
            raise PPVAEError(f"{args.experiment!r} is a single run, not a study; drop {', '.join(study_only)}.")
        cfg = config.load(args.experiment, args.overrides)  # a config error stops here, before torch is imported
        from ppvae.studies import run as experiment

        run_dir = experiment.run(cfg, out=args.out)
    if experiment.is_main():  # of a data-parallel run, rank 0 speaks
        from ppvae import runs

        print(headline(runs.read_json(run_dir / runs.METRICS)))
        print(f"run folder: {run_dir}")
        print(f"report:     {run_dir / 'report.md'}")


def headline(m: dict) -> str:
    """A finished run's numbers in one line: the test NLL with its standard error, the bound, its KL and the
    active units."""
    units, active = m.get("latent_units"), m.get("active_units")
    active = "-" if active is None else f"{active}" + (f" of {units}" if units else "")
    return (f"test NLL {m['test_nll']:.3f} +- {m['test_ll_se']:.3f} nats (IWAE, k = {m['eval_k']}, "
            f"{m['eval_points']} points); ELBO {m['test_elbo']:.3f}, KL {m['test_kl']:.3f}; active units {active}")


def launch_ranks(args: argparse.Namespace) -> int:
    """``ppvae run CONFIG --nproc N``: the same command as N data-parallel ranks under torchelastic
    (what ``torchrun --standalone`` runs), after the config is checked here. A Ctrl-C or SIGTERM
    reaches every rank, which saves its step; the exit code is then 130 / 143, else the ranks'."""
    import os
    import uuid

    import torch
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from ppvae import config, runs
    from ppvae.infer.trainer import resolve_device
    from ppvae.studies import study

    if args.resume:
        cfg = config.build(runs.read_json(Path(args.resume) / runs.CONFIG))
    elif study.read(args.experiment) is not None:
        raise PPVAEError("--nproc trains one run on several processes; for a study use --workers.")
    else:
        cfg = config.load(args.experiment, args.overrides)
    device = resolve_device(cfg.train.device)
    devices = torch.cuda.device_count() if device.type == "cuda" else os.cpu_count() or 1
    if args.nproc > devices:
        where = f"{devices} GPU(s)" if device.type == "cuda" else f"{devices} CPU core(s)"
        raise PPVAEError(f"--nproc {args.nproc} is more ranks than this machine's {where}; give --nproc {devices} or "
                         "fewer.")
    rest = [a for i, a in enumerate(args.argv) if a != "--nproc" and not (i and args.argv[i - 1] == "--nproc")
            and not a.startswith("--nproc=")]
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.nproc)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # the ranks say what went wrong
    launch = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=args.nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    try:
        elastic_launch(launch, sys.executable)("-P", "-m", "ppvae.cli", *rest)  # -P: the installed ppvae, not ./ppvae
    except ChildFailedError as e:
        return next((f.exitcode for f in e.failures.values() if f.exitcode), 1)
    except SignalException as e:
        print(f"stopped: {signal.Signals(e.sigval).name}; every rank stopped after the same step and rank 0 saved "
              "it: continue with 'ppvae run --resume RUN_DIR' (with or without --nproc).", file=sys.stderr)
        return 128 + e.sigval
    return 0


def cmd_study_merge(args: argparse.Namespace) -> None:
    from ppvae.studies import study

    folder = study.merge([Path(f) for f in args.folders], Path(args.out) if args.out else None)
    print(f"study folder: {folder}")
    print(f"results:      {folder / 'results.md'}")


def cmd_eval(args: argparse.Namespace) -> None:
    from ppvae import runs
    from ppvae.studies import run as experiment
    from ppvae.studies import workers

    overrides = [*args.overrides, *([f"eval.k={args.k}"] if args.k is not None else [])]
    other = [o for o in overrides if not o.startswith("eval.")]
    if other:
        raise PPVAEError(f"ppvae eval changes eval.* settings only, not {', '.join(other)}; "
                         "use 'ppvae run --resume RUN_DIR' to change training.")
    run_dir = Path(args.run_dir)
    pool = workers.Pool(args.workers, args.threads_per_run)
    pool.check()
    with runs.owned_if_run_folder(run_dir):
        cfg, data, trainer, _ = experiment.load_run(run_dir, overrides, trust=args.trust_pair)
        shards = (workers.evaluation_shards(run_dir, overrides, experiment.test_points(cfg, data)[0].shape[0], pool)
                  if pool.on_ray else None)
        metrics = experiment.finish(cfg, run_dir, data, trainer, shards=shards)
    for key in ("test_ll", "test_ll_se", "test_elbo", "test_recon_loglik", "test_kl", "test_recon_mse",
                "active_units", "khat_share_above_0_7", "khat_share_above_1", "ess_median", "ess_p05"):
        value = metrics.get(key)
        print(f"{key:>20}: " + (f"{value:.4f}" if isinstance(value, float) else "-" if value is None else str(value)))
    for note in metrics.get("eval_notes", []):
        print(f"note: {note}")


def cmd_compare(args: argparse.Namespace) -> None:
    from ppvae.studies.compare import compare

    out_dir, tables = compare(args.run_dirs, args.out, trust=args.trust_pair)
    print(tables)
    print(f"comparison: {out_dir / 'comparison.md'}")


def cmd_sample(args: argparse.Namespace) -> None:
    from ppvae.studies.sample import sample_run

    out = sample_run(Path(args.run_dir), args.source, args.n, args.components, args.seed, args.quality,
                     trust=args.trust_pair)
    print(f"samples: {out['grid']}")
    if "uncertainty" in out:
        print(f"per-pixel sigma: {out['uncertainty']}")
    if "kl_mixture_prior" in out:
        print(f"KL(mixture || prior): {out['kl_mixture_prior']:.3f} +- {out['kl_mixture_prior_se']:.3f} nats "
              f"(Monte Carlo, {args.components} components fit to the posterior means: the sampler's KL)")
    if out.get("kl_aggregate_prior") is not None:
        print(f"KL(q(z) || prior): {out['kl_aggregate_prior']:.3f} +- {out['kl_aggregate_prior_se']:.3f} nats, "
              f"I_q(x; z) {out['mutual_information']:.3f}: the average KL {out['kl_avg_posterior_prior']:.3f} "
              f"split over {out['surgery_points']} training points (the aggregate posterior's own KL)")
    if f"fd_{args.source}" in out:
        print(f"Frechet distance in ppvae's classifier features (not the Inception FID), "
              f"{out['fd_points']} images: {out[f'fd_{args.source}']:.3f}")
        print(f"Inception FID: {out.get(f'fid_inception_{args.source}', out['fid_inception'])}")


def cmd_bench(args: argparse.Namespace) -> None:
    from ppvae.experiments import bench

    make = bench.BenchOptions.quick if args.quick else bench.BenchOptions
    bench.run(make(out=args.out, threads=args.threads, data=args.data, data_dir=args.data_dir, device=args.device,
                   compile=args.compile, **({"memory": "none"} if args.no_memory else {}),
                   command=bench.command_line()))


def cmd_list(args: argparse.Namespace) -> None:
    from ppvae import catalog

    print("\n".join(catalog.lines(keys=args.keys)))


def count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum`` (argparse turns the ValueError into a usage error)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise ValueError(text)
        return value
    parse.__name__ = f"integer >= {minimum}"  # what argparse's message calls the type
    return parse


def trust_pair(command: argparse.ArgumentParser) -> None:
    command.add_argument("--trust-pair", action="store_true",
                         help="run the .py files (model.pair, plugins) a run folder's config names even if you have "
                              "not run them before (read them first: a folder from someone else may hold any code)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ppvae", description="Variational autoencoders as Pyro model/guide pairs.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train and evaluate an experiment, writing a run folder")
    r.add_argument("experiment", nargs="?", help="bundled experiment name or path to a .toml config")
    r.add_argument("overrides", nargs="*", help="config overrides such as train.epochs=5")
    r.add_argument("--out", default="runs", help="parent folder of the run folder (default ./runs)")
    r.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a stopped run from its checkpoint; overrides may change train.epochs, "
                        "train.lr, train.device and eval.*")
    r.add_argument("--scale", help="for a study: which [study.scales] entry to run (default smoke)")
    r.add_argument("--variants", metavar="A,B", help="for a study: run only these named [study.variants]")
    r.add_argument("--seeds", metavar="0,1,2", help="for a study: these training seeds instead of its own (one run "
                                                   "per seed of each configuration; results.md adds mean ± s.d.)")
    r.add_argument("--workers", type=count(1), default=1,
                   help="for a study: runs at once, each a Ray task in its own process (default 1: one after another "
                        "in this process)")
    r.add_argument("--threads-per-run", type=count(1), metavar="T", help="for a study: torch threads of each run")
    r.add_argument("--gpus-per-run", type=float, default=0.0, metavar="G",
                   help="for a study on Ray: the share of a GPU each run takes (0.25 packs four runs on one GPU)")
    r.add_argument("--address", help="for a study: the Ray cluster to run on (auto, HOST:PORT or ray://HOST:PORT; "
                                     "default a local one); the study folder must be on a disk every node sees")
    r.add_argument("--nproc", type=count(1), metavar="N",
                   help="train one run data-parallel on N processes (torchrun; gloo on CPU, NCCL on GPUs)")
    r.add_argument("--shard", metavar="I/N", help="for a study: run only the I-th of N slices of its runs "
                                                  "(then: ppvae study merge)")
    trust_pair(r)
    r.set_defaults(func=cmd_run)
    st = sub.add_parser("study", help="work on study folders").add_subparsers(dest="action", required=True)
    mg = st.add_parser("merge", help="one results table and figures from the folders the shards of a study wrote")
    mg.add_argument("folders", nargs="+", metavar="STUDY_DIR")
    mg.add_argument("--out", help="the merged study folder (default the first STUDY_DIR)")
    mg.set_defaults(func=cmd_study_merge)
    e = sub.add_parser("eval", help="re-evaluate a run folder (metrics.json, figures, report.md)")
    e.add_argument("run_dir")
    e.add_argument("overrides", nargs="*", help="eval.* overrides such as eval.num_test=1000 eval.gradient_study=true")
    e.add_argument("--k", type=count(1), help="importance samples (default: the run's eval.k)")
    e.add_argument("--workers", type=count(1), default=1,
                   help="split the test points over N Ray worker processes (default 1: this process); the same numbers")
    e.add_argument("--threads-per-run", type=count(1), metavar="T", help="torch threads of each worker")
    trust_pair(e)
    e.set_defaults(func=cmd_eval)
    c = sub.add_parser("compare", help="table, ArviZ diagnostics (seeds as chains) and figures across run folders")
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders, or folders of run folders (studies)")
    c.add_argument("--out", help="output folder (default: a new ./runs/compare-DATE-TIME)")
    trust_pair(c)
    c.set_defaults(func=cmd_compare)
    sa = sub.add_parser("sample", help="decode samples of a trained run from the prior or the aggregate posterior")
    sa.add_argument("run_dir")
    sa.add_argument("--from", dest="source", choices=("prior", "aggregate"), default="prior",
                    help="prior p(z), or a Gaussian mixture fit to the training set's posterior means (default prior)")
    sa.add_argument("--n", type=count(1), default=64, help="images in the grid (default 64)")
    sa.add_argument("--components", type=count(1), default=32,
                    help="mixture components for --from aggregate (default 32)")
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--quality", type=count(0), default=0, metavar="N",
                    help="also the Frechet distance of N samples to N test images (classifier features)")
    trust_pair(sa)
    sa.set_defaults(func=cmd_sample)
    b = sub.add_parser("bench", help="time ppvae's trainer and evaluator against hand-written PyTorch")
    b.add_argument("--quick", action="store_true", help="every case, briefly (about a minute; rough numbers)")
    b.add_argument("--out", default="bench",
                   help="output folder for bench.json, bench.md and bench_scaling.png (default ./bench)")
    b.add_argument("--threads", type=count(0), default=0, help="torch threads (default: torch's default)")
    b.add_argument("--data", choices=("synthetic", "mnist"), default="synthetic",
                   help="synthetic binary 784-pixel images (default), or statically binarized MNIST")
    b.add_argument("--data-dir", default="", help="folder holding MNIST/raw (with --data mnist)")
    b.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default cpu)")
    b.add_argument("--no-memory", action="store_true", help="skip the per-case peak-memory processes")
    b.add_argument("--compile", action="store_true", help="also time torch.compile variants (slow to compile)")
    b.set_defaults(func=cmd_bench)
    ls = sub.add_parser("list", help="bundled experiments and available components")
    ls.add_argument("--keys", action="store_true", help="list every config key with its default")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: list[str] | None = None) -> int:
    args, extra = parser().parse_known_args(argv)
    if extra and args.command in ("run", "eval") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides += extra  # overrides after an option, e.g. "run NAME --scale full train.epochs=5"
    elif extra:
        parser().error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "run" and not args.experiment and not args.resume:
        parser().error("run needs an experiment name or --resume RUN_DIR")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = args.func(args)
    except Interrupted as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 128 + e.signum  # the shell's convention for a process ended by a signal
    except PPVAEError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped: interrupted; files already written are intact (every write is atomic).", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
