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
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["epochs"] == 3 and config["name"] == "quickstart"


def test_list_shows_experiments_and_components(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ["quickstart", "bernoulli", "gaussian_learned", "normal", "delta", "trace", "meanfield", "renyi", "iwae", "mlp"]:
        assert word in out, word
