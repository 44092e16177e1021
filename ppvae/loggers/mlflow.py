"""MLflow: the config as parameters, metrics per epoch, the test metrics, and the run folder as artifacts."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

from ppvae import registry, runs
from ppvae.errors import ConfigError
from ppvae.loggers import Logger, flat, numbers
from ppvae.registry import Param

RUN_ID = "mlflow_run.json"  # in the run folder: the MLflow run a resumed session continues


@registry.register("logger", "mlflow")
class MLflow(Logger):
    """MLflow tracking (a local SQLite store beside the run folders, or tracking_uri): params, metrics per epoch,
    test metrics, and the run folder (figures, report, metrics) as artifacts; a resumed run continues its MLflow
    run."""

    def __init__(self, *,
                 tracking_uri: Annotated[str, Param(doc="an MLflow tracking server or store; empty: a SQLite "
                                                        "store beside the run folders (mlflow.db, artifacts in "
                                                        "mlartifacts/)")] = "",
                 experiment: Annotated[str, Param(doc="MLflow experiment name; empty: the config's name")] = "",
                 artifacts: Annotated[bool, Param(doc="copy the run folder (without checkpoints) as artifacts "
                                                      "at the end")] = True):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:  # mlflow-skinny, with sqlalchemy and alembic for the local store
            raise ConfigError("log.mlflow needs MLflow: pip install 'ppvae[log]' (or pip install mlflow-skinny).") \
                from None
        self.client_class, self.tracking_uri, self.experiment, self.artifacts = (MlflowClient, tracking_uri,
                                                                                 experiment, artifacts)
        self.client = self.run_id = self.run_dir = None
        self.step = 0

    def start(self, config: dict, run_dir: Path, resumed: bool) -> None:
        parent = run_dir.resolve().parent
        # MLflow 3 keeps its plain-folder store in maintenance mode and recommends SQLite for local use
        uri = self.tracking_uri or f"sqlite:///{parent / 'mlflow.db'}"
        for name in ("mlflow.store.db.utils", "alembic"):  # table creation and migrations: not the run's news
            logging.getLogger(name).setLevel(logging.WARNING)
        self.client, self.run_dir = self.client_class(tracking_uri=uri), run_dir
        saved = run_dir / RUN_ID
        if resumed and saved.is_file():
            self.run_id = runs.read_json(saved)["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = self.experiment or config.get("name") or "ppvae"
        found = self.client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found else self.client.create_experiment(
            name, artifact_location=None if self.tracking_uri else (parent / "mlartifacts").as_uri())
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
        runs.write_json(saved, {"run_id": self.run_id, "tracking_uri": uri})
        from mlflow.entities import Param as MlflowParam

        params = [MlflowParam(k, v[:6000]) for k, v in flat(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per call
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def _metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def epoch(self, record: dict) -> None:
        self.step = int(record["epoch"])
        self._metrics({f"epoch/{k}": v for k, v in numbers(record).items() if k != "epoch"}, self.step)

    def finish(self, metrics: dict, figures: list[Path]) -> None:
        self._metrics({f"eval/{k}": v for k, v in numbers(metrics).items()}, self.step)
        if self.artifacts:
            for path in sorted(self.run_dir.iterdir()):
                if path.is_file() and path.suffix != ".pt" and not path.name.startswith("."):
                    self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, "FINISHED")

    def close(self) -> None:
        if self.client is not None and self.client.get_run(self.run_id).info.status == "RUNNING":
            self.client.set_terminated(self.run_id, "KILLED")  # stopped or failed: resume continues it
