"""[log]: TensorBoard and MLflow get what the run folder gets, read back from their own files; a resumed run
continues its MLflow run; a failing tracker costs the run nothing."""

from __future__ import annotations

import json

import pytest

from ppvae import registry
from ppvae.cli import main
from ppvae.loggers import Logger

RUN = ["run", "quickstart", "train.epochs=2", "eval.k=10", "eval.num_test=40", "log.tensorboard=true",
       "log.mlflow=true"]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    out = tmp_path_factory.mktemp("tracked")
    assert main([*RUN, "--out", str(out)]) == 0
    (run_dir,) = [p for p in out.iterdir() if p.name not in ("mlflow.db", "mlartifacts")]
    assert main(["run", "--resume", str(run_dir), "train.epochs=3"]) == 0  # a second session of the same run
    return run_dir


def test_tensorboard_holds_the_epochs_the_metrics_the_figures_and_the_config(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    epochs = [json.loads(line) for line in (tracked / "metrics.jsonl").read_text().splitlines()]
    written = events.Scalars("epoch/test_elbo")
    assert [e.step for e in written] == [1, 2, 3]
    assert [e.value for e in written] == pytest.approx([r["test_elbo"] for r in epochs], rel=1e-6)
    metrics = json.loads((tracked / "metrics.json").read_text())
    assert events.Scalars("eval/test_ll")[-1].value == pytest.approx(metrics["test_ll"], rel=1e-6)
    assert {"samples", "reconstructions", "manifold"} <= set(events.Tags()["images"])
    assert "config" in "".join(events.Tags()["tensors"])  # add_text lands as a tensor summary


def test_mlflow_store_holds_params_metrics_and_the_run_folder(tracked):
    from mlflow.tracking import MlflowClient

    saved = json.loads((tracked / "mlflow_run.json").read_text())
    assert saved["tracking_uri"] == f"sqlite:///{tracked.parent / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=saved["tracking_uri"])
    run = client.get_run(saved["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == tracked.name
    assert run.data.params["train.epochs"] == "2" and run.data.params["data.name"] == '"digits"'
    history = client.get_metric_history(saved["run_id"], "epoch/test_elbo")
    epochs = [json.loads(line) for line in (tracked / "metrics.jsonl").read_text().splitlines()]
    assert [m.step for m in history] == [1, 2, 3]  # both sessions in one MLflow run
    assert [m.value for m in history] == pytest.approx([r["test_elbo"] for r in epochs], rel=1e-6)
    metrics = json.loads((tracked / "metrics.json").read_text())
    assert run.data.metrics["eval/test_ll"] == pytest.approx(metrics["test_ll"], rel=1e-6)
    artifacts = {a.path for a in client.list_artifacts(saved["run_id"])}
    assert {"metrics.json", "report.md", "config.json", "samples.png"} <= artifacts and "checkpoint.pt" not in artifacts


def test_a_failing_tracker_is_dropped_with_a_warning_and_the_run_finishes(tmp_path, caplog):
    @registry.register("logger", "broken_probe")
    class Broken(Logger):
        """A tracker whose server is down."""

        def epoch(self, record):
            raise ConnectionError("tracking server unreachable")

    try:
        assert main(["run", "quickstart", "train.epochs=2", "eval.k=5", "eval.num_test=20", "log.broken_probe=true",
                     "--out", str(tmp_path)]) == 0
    finally:
        registry._ENTRIES["logger"].pop("broken_probe")
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / "metrics.json").is_file()
    (warning,) = [r.message for r in caplog.records if "broken_probe" in r.message or "Broken" in r.message]
    assert "tracking server unreachable" in warning and "goes on without it" in warning


def test_an_unknown_tracker_names_the_choices():
    assert main(["run", "quickstart", "log.wandb=true"]) == 2
