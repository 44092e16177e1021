"""TensorBoard: scalars per epoch, the final metrics, the figures as images and the config as text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np

from ppvae import registry
from ppvae.errors import ConfigError
from ppvae.loggers import Logger, numbers
from ppvae.registry import Param


@registry.register("logger", "tensorboard")
class TensorBoard(Logger):
    """TensorBoard event files in the run folder (tensorboard/ unless dir says otherwise): per-epoch scalars,
    the test metrics, the figures and the config; view with tensorboard --logdir RUNS_DIR."""

    def __init__(self, *, dir: Annotated[str, Param(doc="folder of the event files, relative to the run folder")]
                 = "tensorboard"):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("log.tensorboard needs the tensorboard package: pip install 'ppvae[log]' (or "
                              "pip install tensorboard).") from None
        self.dir, self.writer_class, self.writer, self.step = dir, SummaryWriter, None, 0

    def start(self, config: dict, run_dir: Path, resumed: bool) -> None:
        self.writer = self.writer_class(str(run_dir / self.dir))
        if not resumed:
            self.writer.add_text("config", "```json\n" + json.dumps(config, indent=2) + "\n```")

    def epoch(self, record: dict) -> None:
        self.step = int(record["epoch"])
        for key, value in numbers(record).items():
            if key != "epoch":
                self.writer.add_scalar(f"epoch/{key}", value, self.step)
        self.writer.flush()

    def finish(self, metrics: dict, figures: list[Path]) -> None:
        from PIL import Image

        for key, value in numbers(metrics).items():
            self.writer.add_scalar(f"eval/{key}", value, self.step)
        for path in figures:
            with Image.open(path) as image:
                self.writer.add_image(path.stem, np.asarray(image.convert("RGB")), self.step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
