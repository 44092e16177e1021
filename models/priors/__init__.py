"""Priors p(z): modules returning a distribution with event shape ``[latent_dim]``.

Each file here registers parts of kind ``prior``, built as ``Prior(latent_dim, **params)``.
Constants are buffers and learned quantities parameters, so a prior follows the model's
device and a learned prior trains with the decoder (the model registers it with
``pyro.module``). A prior whose latent values are not what the decoder should read has a
``decoder_input`` module that the pair builder puts in front of the decoder; its ``support``
trait names the space of z (``real`` or ``unit_interval``), which the guide family must share. A
prior built from the guide's posterior (``needs_guide``, the VampPrior) has ``attach_guide(posterior,
x_dim)``, which the builder calls once the guide exists.
"""

from ppvae import registry

registry.discover(__name__)
