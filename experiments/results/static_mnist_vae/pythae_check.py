"""pythae's own VAE on Larochelle & Murray's binarized MNIST, set up as its reproduction script
(examples/scripts/reproducibility/vae.py of clementchadebec/benchmark_VAE): 784-400-40 ReLU, a log-variance
encoder, sigmoid decoder with BCE, Adam 1e-4, batch 100, MultiStepLR at 200/350/500/750/1000 by 10^(-1/5),
seed 123. It prints pythae's train and validation loss per epoch, to set beside ppvae's metrics.jsonl.

    python -m venv /tmp/pythae && /tmp/pythae/bin/pip install torch==2.14.1 pythae
    OMP_NUM_THREADS=1 /tmp/pythae/bin/python pythae_check.py 100 /tmp/pythae_runs ../shared/data > pythae100.log
"""

import gzip
import sys

import numpy as np
import torch
from pythae.data.preprocessors import DataProcessor
from pythae.models import VAE, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.trainers import BaseTrainer, BaseTrainerConfig
from torch import nn


class Encoder(BaseEncoder):
    def __init__(self, config: VAEConfig):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(784, 400), nn.ReLU())
        self.embedding, self.log_var = nn.Linear(400, config.latent_dim), nn.Linear(400, config.latent_dim)

    def forward(self, x):
        h = self.body(x.reshape(-1, 784))
        return ModelOutput(embedding=self.embedding(h), log_covariance=self.log_var(h))


class Decoder(BaseDecoder):
    def __init__(self, config: VAEConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(config.latent_dim, 400), nn.ReLU(), nn.Linear(400, 784), nn.Sigmoid())

    def forward(self, z):
        return ModelOutput(reconstruction=self.net(z).reshape(z.shape[0], 1, 28, 28))


def main(epochs: int, out: str, data_dir: str) -> None:
    def split(name: str) -> np.ndarray:
        path = f"{data_dir}/binarized_mnist/binarized_mnist_{name}.amat.gz"
        return np.loadtxt(gzip.open(path)).astype(np.float32).reshape(-1, 1, 28, 28)

    torch.set_num_threads(1)
    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=40, reconstruction_loss="bce")
    model = VAE(model_config=config, encoder=Encoder(config), decoder=Decoder(config))
    training = BaseTrainerConfig(output_dir=out, per_device_train_batch_size=100, per_device_eval_batch_size=100,
                                 num_epochs=epochs, learning_rate=1e-4, steps_saving=None, steps_predict=None,
                                 no_cuda=True, scheduler_cls="MultiStepLR",
                                 scheduler_params={"milestones": [200, 350, 500, 750, 1000], "gamma": 10 ** (-1 / 5)})
    torch.manual_seed(123)
    processor = DataProcessor()
    data = {name: processor.to_dataset(processor.process_data(split(name))) for name in ("train", "valid")}
    BaseTrainer(model=model, train_dataset=data["train"], eval_dataset=data["valid"], training_config=training).train()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
