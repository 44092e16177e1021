"""Networks keep any leading (particle, batch) dimensions; CNNs fit every image shape we ship."""

import json

import pytest
import torch

from ppvae import config, registry
from ppvae.nn import eval_mode, kept_buffers, make_network
from ppvae.nn.mlp import MLP
from ppvae.studies import run as experiment


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (1, 28, 20)])
@pytest.mark.parametrize("outputs_per_pixel", [1, 2])
def test_cnn_encoder_and_decoder_shapes(shape, outputs_per_pixel):
    D = shape[0] * shape[1] * shape[2]
    cnn = registry.spec("network", {"name": "cnn", "hidden": [8, 16]}, "test")
    enc = make_network(cnn, D, 6, shape)
    dec = make_network(cnn.replace(hidden=(16, 8)), 3, D * outputs_per_pixel, shape, "decoder")
    x = torch.rand(5, 4, D)
    assert enc(x).shape == (5, 4, 6)
    assert dec(torch.randn(5, 4, 3)).shape == (5, 4, D * outputs_per_pixel)


def test_mlp_depth_and_eval_mode():
    net = MLP(10, (7, 7, 7), 3, "tanh")
    assert sum(isinstance(m, torch.nn.Linear) for m in net) == 4
    enc = make_network(registry.spec("network", {"name": "cnn", "hidden": [4]}, "test"), 64, 2, (1, 8, 8))
    with eval_mode(enc, lambda x: x):
        assert not enc.training
    assert enc.training
    frozen = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    frozen[1].eval()  # a frozen piece inside a training part keeps its own mode
    with eval_mode(frozen):
        assert not any(m.training for m in frozen.modules())
    assert frozen.training and frozen[0].training and not frozen[1].training


def test_kept_buffers_restores_running_statistics():
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with kept_buffers(net, lambda x: x):
        net(torch.randn(10, 3) + 5)
        assert not torch.equal(net[1].running_mean, before["1.running_mean"])
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_cnn_vae_trains_with_iwae(tmp_path):
    cfg = config.load("quickstart", ["model.decoder.name=cnn", "model.decoder.hidden=[16, 8]",
                                     "guide.encoder.name=cnn", "guide.encoder.hidden=[8, 16]",
                                     "estimator.name=iwae", "estimator.k=3", "train.epochs=5",
                                     "data.max_train=500", "eval.k=10"])
    metrics = json.loads((experiment.run(cfg, out=tmp_path) / "metrics.json").read_text())
    assert 0 < metrics["test_nll"] < 64 * 0.7
