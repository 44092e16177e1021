"""Networks keep any leading (particle, batch) dimensions; CNNs fit every image shape we ship."""

import json

import pytest
import torch

from ppvae import config, experiment
from ppvae.config import NetworkConfig
from ppvae.nn import MLP, eval_mode, make_network


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (1, 28, 20)])
@pytest.mark.parametrize("outputs_per_pixel", [1, 2])
def test_cnn_encoder_and_decoder_shapes(shape, outputs_per_pixel):
    D = shape[0] * shape[1] * shape[2]
    cnn = NetworkConfig(kind="cnn", hidden=[8, 16])
    enc = make_network(cnn, D, 6, shape)
    dec = make_network(NetworkConfig(kind="cnn", hidden=[16, 8]), 3, D * outputs_per_pixel, shape, "decoder")
    x = torch.rand(5, 4, D)
    assert enc(x).shape == (5, 4, 6)
    assert dec(torch.randn(5, 4, 3)).shape == (5, 4, D * outputs_per_pixel)


def test_mlp_depth_and_eval_mode():
    net = MLP(10, [7, 7, 7], 3, "tanh")
    assert sum(isinstance(m, torch.nn.Linear) for m in net) == 4
    enc = make_network(NetworkConfig(kind="cnn", hidden=[4]), 64, 2, (1, 8, 8))
    with eval_mode(enc, lambda x: x):
        assert not enc.training
    assert enc.training


def test_cnn_vae_trains_with_iwae(tmp_path):
    cfg = config.load("quickstart", ["model.decoder.kind=cnn", "model.decoder.hidden=[16, 8]",
                                     "guide.encoder.kind=cnn", "guide.encoder.hidden=[8, 16]",
                                     "estimator.name=iwae", "estimator.k=3", "train.epochs=5",
                                     "data.max_train=500", "eval.k=10"])
    metrics = json.loads((experiment.run(cfg, out=tmp_path) / "metrics.json").read_text())
    assert 0 < metrics["test_nll"] < 64 * 0.7
