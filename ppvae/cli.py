"""The ``ppvae`` command line: run, eval and list."""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
from pathlib import Path

from ppvae import config
from ppvae.errors import PPVAEError


def _first_line(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.splitlines()[0] if doc else ""


def cmd_run(args: argparse.Namespace) -> None:
    from ppvae import experiment, study

    if args.resume:
        run_dir = experiment.run(None, resume=Path(args.resume))
    elif study.read(args.experiment) is not None:
        folder = study.run(args.experiment, args.scale or "smoke", args.overrides, out=args.out)
        print(f"study folder: {folder}")
        print(f"results:      {folder / 'results.md'}")
        return
    else:
        if args.scale:
            raise PPVAEError(f"{args.experiment!r} is a single run, not a study; drop --scale.")
        cfg = config.load(args.experiment, args.overrides)
        run_dir = experiment.run(cfg, out=args.out)
    print(f"run folder: {run_dir}")
    print(f"report:     {run_dir / 'report.md'}")


def cmd_eval(args: argparse.Namespace) -> None:
    import dataclasses

    from ppvae import experiment

    cfg, data, trainer, _ = experiment.load_run(Path(args.run_dir))
    if args.k:
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, k=args.k))
    metrics = experiment.finish(cfg, Path(args.run_dir), data, trainer)
    for key in ("test_ll", "test_ll_se", "test_elbo", "test_recon_loglik", "test_kl", "test_recon_mse"):
        print(f"{key:>18}: {metrics[key]:.4f}")


def cmd_list(args: argparse.Namespace) -> None:
    from ppvae.estimators import ESTIMATORS
    from ppvae.guides import FAMILIES
    from ppvae.models import LIKELIHOODS, PRIORS
    from ppvae.nn import ACTIVATIONS

    if args.keys:
        for key, default, doc in config.field_docs():
            print(f"{key:<26} {default!r:<12} {doc}")
        return
    print("experiments (ppvae run NAME):")
    for name, path in sorted(config.bundled_experiments().items()):
        raw = path.read_text().splitlines()
        desc = next((line.split("=", 1)[1].strip().strip('"') for line in raw if line.startswith("description")), "")
        print(f"  {name:<22} {desc}")
    sections = [("likelihoods (model.likelihood)", LIKELIHOODS), ("priors (model.prior)", PRIORS),
                ("guides (guide.family)", FAMILIES), ("estimators (estimator.name)", ESTIMATORS)]
    for title, registry in sections:
        print(f"{title}:")
        for name, obj in registry.items():
            print(f"  {name:<22} {_first_line(obj)}")
    print("networks (model.decoder / guide.encoder):")
    print(f"  {'mlp':<22} 0-4 hidden layers, activation one of {', '.join(ACTIVATIONS)}")
    print("config keys: ppvae list --keys")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ppvae", description="Variational autoencoders as Pyro model/guide pairs.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train and evaluate an experiment, writing a run folder")
    r.add_argument("experiment", nargs="?", help="bundled experiment name or path to a .toml config")
    r.add_argument("overrides", nargs="*", help="config overrides such as train.epochs=5")
    r.add_argument("--out", default="runs", help="parent folder of the run folder (default ./runs)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoint")
    r.add_argument("--scale", help="for a study: which [study.scales] entry to run (default smoke)")
    r.set_defaults(func=cmd_run)
    e = sub.add_parser("eval", help="re-evaluate a run folder (metrics.json, figures, report.md)")
    e.add_argument("run_dir")
    e.add_argument("--k", type=int, default=0, help="importance samples (default: the run's eval.k)")
    e.set_defaults(func=cmd_eval)
    ls = sub.add_parser("list", help="bundled experiments and available components")
    ls.add_argument("--keys", action="store_true", help="list every config key with its default")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "run" and not args.experiment and not args.resume:
        parser().error("run needs an experiment name or --resume RUN_DIR")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        args.func(args)
    except PPVAEError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
