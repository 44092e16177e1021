"""Evaluation of a trained pair: the test log-likelihood and its diagnostics (``loglik``), ArviZ behind one
module (``diagnostics``), memory planning (``memory``), sampling from a trained pair (``sampling``) and the
figures every run gets (``figures``)."""
