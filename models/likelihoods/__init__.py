"""Likelihoods p(x|z): map decoder outputs to a distribution over the flat image.

Each file here registers one or more parts of kind ``likelihood``. A likelihood says how many
decoder outputs it needs per pixel (``outputs_per_pixel``) and owns its own parameters (a
learned sigma), so swapping it swaps the whole observation model without touching the decoder.
It may define ``after_step(out, x)`` (a closed-form update after every optimizer step, given
the decoder outputs for the batch just trained on), ``on_epoch_end(epoch)`` and ``metrics()``.
"""

from ppvae import registry

registry.discover(__name__)
