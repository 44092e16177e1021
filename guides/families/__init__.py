"""Posterior families q(z|x): map encoder outputs to a distribution over z.

Each file here registers parts of kind ``family``, built as ``Family(latent_dim, **params)``;
a family says how many encoder outputs it reads (``outputs``), and its ``support`` trait names
the space of z, which must be the prior's. Every family here is reparameterized (Beta through
torch's implicit reparameterization), so every estimator can use it; the closed-form KLs
``meanfield`` can use are Normal-Normal, Beta-Beta, Kumaraswamy-Beta and low-rank-Normal-Normal
(the last three registered in :mod:`ppvae.distributions`).
"""

from ppvae import registry

registry.discover(__name__)
