"""The first-run experience: `ppvae run quickstart` writes a complete run folder."""

import json

from ppvae.cli import main

FIGURES = ["reconstructions.png", "samples.png", "elbo.png", "latent.png", "manifold.png"]


def test_quickstart_end_to_end(tmp_path, capsys):
    code = main(["run", "quickstart", "train.epochs=3", "eval.k=50", "--out", str(tmp_path)])
    assert code == 0
    (run_dir,) = tmp_path.iterdir()
    assert str(run_dir) in capsys.readouterr().out
    for name in ["config.json", "metrics.jsonl", "checkpoint.pt", "metrics.json", "report.md", *FIGURES]:
        assert (run_dir / name).stat().st_size > 0, name
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # 64 binary pixels: any sensible model scores between 0 and 64 log 2 = 44.4 nats
    assert 0 < metrics["test_nll"] < 64 * 0.6932
    assert metrics["test_ll"] >= metrics["test_elbo"] - 0.5  # IWAE_50 is (up to noise) above the ELBO
    assert metrics["test_kl"] > 0 and 0 < metrics["test_recon_mse"] < 1
    assert abs(metrics["test_elbo"] - (metrics["test_recon_loglik"] - metrics["test_kl"])) < 1e-4
    report = (run_dir / "report.md").read_text()
    assert all(f"]({name})" in report for name in FIGURES)
    nll = next(line for line in report.splitlines() if line.startswith("| test_nll |"))
    assert "| nats per point |" in nll and "lower is better" in nll  # each metric's unit and meaning
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["epochs"] == 3 and config["name"] == "quickstart"


def test_list_shows_experiments_and_components(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ["quickstart", "bernoulli", "gaussian_learned", "normal", "delta", "trace", "meanfield", "renyi", "iwae", "mlp"]:
        assert word in out, word


def test_help_a_cached_list_and_a_config_error_answer_without_torch(tmp_path):
    """``ppvae --help`` never imports torch; ``ppvae list`` builds its catalog once, then reads it back, and a
    config error is then told without torch too."""
    import os
    import subprocess
    import sys

    from ppvae import registry

    probe = ("import sys; from ppvae.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    env = os.environ | {"PPVAE_CACHE": str(tmp_path / "cache")}

    def ask(*argv):
        done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, cwd=tmp_path,
                              env=env, check=True)
        return done.stdout.splitlines()

    assert ask("--help")[-1] == "NO-TORCH"
    first = ask("list")
    assert first[-1] == "TORCH" and (tmp_path / "cache" / registry.CATALOG).is_file()  # the parts imported once
    second = ask("list")
    assert second[-1] == "NO-TORCH" and second[:-1] == first[:-1]  # the same text, from the parts' catalog
    keys = ask("list", "--keys")
    assert keys[-1] == "NO-TORCH" and any(line.startswith("model.top.hidden ") for line in keys)
    # a config error is found from the parts' descriptions alone (the registry's catalog, built by 'list')
    done = subprocess.run([sys.executable, "-c", probe, "run", "quickstart", "train.epochz=5"], capture_output=True,
                          text=True, cwd=tmp_path, env=env)
    assert "Did you mean 'train.epochs'?" in done.stderr and done.stdout.splitlines()[-1] == "NO-TORCH"


def test_a_finished_run_prints_its_headline_numbers(tmp_path, capsys):
    assert main(["run", "quickstart", "train.epochs=1", "eval.k=10", "eval.num_test=30", "--out", str(tmp_path)]) == 0
    headline, folder = capsys.readouterr().out.splitlines()[:2]
    assert headline.startswith("test NLL ") and "+- " in headline and "k = 10, 30 points" in headline
    assert "ELBO -" in headline and "active units " in headline and " of 2" in headline
    assert folder.startswith("run folder: ")
