"""``ppvae bench`` runs end to end at a tiny size and writes its table, JSON and figure.

No timing assertions: the numbers depend on the machine and its load.
"""

import json

from ppvae.experiments import bench

from ppvae.cli import parser


def test_tiny_benchmark_writes_json_table_and_figure(tmp_path):
    opts = bench.BenchOptions(
        out=str(tmp_path), threads=1, x_dim=16, hidden=8, latent=2, batch=10, train_ks=(5,), eval_ks=(10, 40),
        eval_test_points=60, rounds=2, eval_rounds=1, seconds=0.01, warmup_seconds=0.0, memory="key",
        sweep_batches=(10, 20), sweep_train_ks=(1, 5), sweep_eval_ks=(1, 40), sweep_rounds=1, sweep_seconds=0.01)
    result = bench.run(opts, log=lambda line: None)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    rows = {r["name"]: r for r in saved["rows"]}
    assert list(rows) == bench.case_names(opts)
    for name, row in rows.items():
        assert row["best"] >= row["median"] > 0, name
        assert (row["reference"] in rows and row["ratio"] > 0) if row["reference"] else "ratio" not in row
    for name in ("reference elbo", "ppvae trace", "reference eval k=40", "ppvae eval k=40"):
        assert rows[name]["peak_rss_mb"] >= rows[name]["baseline_rss_mb"] > 0
    assert saved["sweeps"]["batch"]["x"] == [10, 20] and len(saved["sweeps"]["eval_k"]["ppvae eval"]) == 2
    assert saved["machine"]["torch_threads"] == 1 and "load_average" in saved
    assert "| ppvae trace |" in (tmp_path / "bench.md").read_text()
    assert (tmp_path / "bench_scaling.png").stat().st_size > 10_000


def test_command_line_options():
    args = parser().parse_args(["bench", "--quick", "--out", "x", "--threads", "1", "--data", "mnist", "--no-memory"])
    assert (args.quick, args.out, args.threads, args.data, args.no_memory) == (True, "x", 1, "mnist", True)
