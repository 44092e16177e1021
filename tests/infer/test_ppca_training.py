"""SGD on the linear-Gaussian VAE reaches the closed-form maximum-likelihood pPCA solution."""

import torch
from linear_gaussian import D, d
from ppvae.models import ppca

from ppvae import Trainer, build_pair, make_estimator
from ppvae.config import from_dict
from ppvae.data import Dataset

PPCA_CONFIG = {
    "model": {"latent_dim": d, "likelihood": "gaussian_learned", "sigma": 1.0, "decoder": {"hidden": []}},
    "guide": {"family": "normal", "encoder": {"hidden": []}},
    "estimator": {"name": "meanfield"},
    "train": {"optimizer": "adam", "lr": 0.01, "batch_size": 100, "epochs": 60},
}


def linear_gaussian_data(n_train=2000, n_test=1000, seed=0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    true = ppca.PPCAParams(torch.randn(D, d, generator=g), torch.randn(D, generator=g), torch.tensor(0.3))
    x = ppca.sample(true, n_train + n_test, generator=g)
    return Dataset("linear_gaussian", x[:n_train], x[n_train:], (1, 1, D))


def test_sgd_reaches_ml_ppca_log_likelihood():
    data = linear_gaussian_data()
    cfg = from_dict(PPCA_CONFIG)
    model, guide = build_pair(cfg, data)
    trainer = Trainer(model, guide, make_estimator(cfg.estimator), cfg.train)
    trainer.setup(data.train_x[:100])
    for _ in range(cfg.train.epochs):
        trainer.fit_epoch(data)
    learned = ppca.exact_log_likelihood(data.test_x, ppca.params_of(model)).mean().item()
    ml = ppca.exact_log_likelihood(data.test_x, ppca.fit_ml(data.train_x, d)).mean().item()
    assert abs(learned - ml) < 0.01 * abs(ml), (learned, ml)
    # the learned noise level matches the ML one (average discarded eigenvalue)
    assert abs(model.likelihood.sigma.item() - ppca.fit_ml(data.train_x, d).sigma.item()) < 0.02
