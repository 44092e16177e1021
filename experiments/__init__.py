"""Bundled experiment configs (installed as ``ppvae.experiments``); run one with ``ppvae run NAME``."""
