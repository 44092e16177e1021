"""What each headline metric of ``metrics.json`` means and in which unit: the columns ``report.md`` adds."""

from __future__ import annotations

NATS = "nats per point"

GLOSSARY: dict[str, tuple[str, str]] = {
    "test_ll": (NATS, "IWAE bound on log p(x) with eval_k samples, averaged over the test points (higher is better)"),
    "test_ll_se": (NATS, "standard error of test_ll across the test points"),
    "test_nll": (NATS, "-test_ll: the negative log-likelihood the literature reports (lower is better)"),
    "test_elbo": (NATS, "the ELBO, E_q[log p(x|z)] - KL(q(z|x) || p(z)), on the test points"),
    "test_recon_loglik": (NATS, "E_q[log p(x|z)]: the reconstruction term of the ELBO"),
    "test_kl": (NATS, "KL(q(z|x) || p(z)): the rate, the ELBO's cost of the code"),
    "test_recon_mse": ("squared units per value", "mean squared error of E[x|z] at the posterior mean"),
    "test_recon_mse_sampled": ("squared units per value", "mean squared error of the average of E[x|z] over 10 "
                                                          "draws z ~ q(z|x)"),
    "khat_share_above_0_7": ("share of points", "Pareto k-hat above 0.7: the IWAE estimate of those points is "
                                                "unreliable"),
    "khat_share_above_1": ("share of points", "Pareto k-hat above 1: the importance weights have no finite mean"),
    "khat_median": ("", "median Pareto k-hat of the guide as an importance-sampling proposal"),
    "khat_max": ("", "largest Pareto k-hat over the test points"),
    "ess_median": ("samples", "median effective sample size of the eval_k normalized weights"),
    "ess_p05": ("samples", "5th percentile of that effective sample size"),
    "active_units": ("units", "latent units with Cov_x E_q[z_j] > 0.01 (Burda et al.)"),
    "latent_units": ("units", "latent units in all"),
    "test_units_carrying_kl": ("units", "latent units whose average KL exceeds 0.01 nats"),
    "test_units_for_90pct_kl": ("units", "the fewest latent units that carry 90 % of the KL (no absolute threshold)"),
    "test_mutual_information": ("nats", "I_q(x; z) of the ELBO split: the average KL minus KL(q(z) || p(z))"),
    "test_kl_aggregate_prior": ("nats", "KL(q(z) || p(z)) of the aggregate posterior, from the same split"),
    "test_mi_at_bound": ("", "true when I_q reached its bound log N: the split is then an upper estimate"),
    "test_nll_marginal": (NATS, "a conditional pair's -log sum_y p(y) p(x | y), IWAE per label: comparable with "
                                "test_nll of unconditional models"),
    "test_nll_given_label": (NATS, "-log p(x | y) at the true label, with the marginal's samples per label"),
    "label_accuracy": ("share of points", "p(y | x) of the conditional pair, used as a classifier, picks the true "
                                          "label"),
    "eval_k": ("samples", "importance samples per test point"),
    "eval_points": ("points", "test points evaluated"),
    "eval_seconds": ("seconds", "time of the evaluation"),
    "final_train_loss": (NATS, "the training objective of the last epoch (negative bound, on training batches)"),
    "epochs": ("epochs", "epochs trained"),
    "steps": ("steps", "optimizer steps taken"),
    "seconds_per_epoch": ("seconds", "mean training time per epoch"),
    "train_seconds_this_session": ("seconds", "training time of the last session (a resumed run counts its own)"),
    "likelihood_sigma": ("data units", "the Gaussian likelihood's global sigma at the end of training"),
}


def describe(key: str) -> tuple[str, str]:
    """(unit, meaning) of a metric; empty for one the glossary does not hold (an analysis' own)."""
    return GLOSSARY.get(key, ("", ""))


__all__ = ["GLOSSARY", "describe"]
