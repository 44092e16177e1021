"""Manifold figures for 3-5 latent units: one slice per pair of units (the 2-D grid: tests/test_cli.py)."""

import torch

from ppvae import config
from ppvae.build import build_pair
from ppvae.data import load_dataset
from ppvae.evaluation import figures


def test_a_three_unit_latent_gets_a_slice_per_pair(tmp_path, monkeypatch):
    cfg = config.load("quickstart", ["model.latent_dim=3"])
    data = load_dataset(cfg.data)
    model, _ = build_pair(cfg, data)
    drawn = {}

    def image_grid(images, shape, path, **kw):
        drawn[path.name] = images
        return path

    monkeypatch.setattr(figures.plots, "image_grid", image_grid)
    paths = figures.manifolds(model, data, data.test_x[:1], None, 3, tmp_path)
    assert [p.name for p in paths] == ["manifold_z1_z2.png", "manifold_z1_z3.png", "manifold_z2_z3.png"]
    a, b = (torch.as_tensor(drawn[n]) for n in ("manifold_z1_z2.png", "manifold_z2_z3.png"))
    assert a.shape == (225, data.x_dim) and not torch.allclose(a, b)  # each slice moves its own two units
