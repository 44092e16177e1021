"""Does evaluation run the networks in training mode? Compare IWAE_k on the same test points
with the pair as ppvae evaluates it (modules left in training mode) and inside ppvae.nn.eval_mode."""
import glob, sys, torch
from ppvae.experiment import load_run
from ppvae.evaluate import log_likelihood
from ppvae.nn import eval_mode

K, N = int(sys.argv[1]), int(sys.argv[2])
for d in sys.argv[3:]:
    cfg, data, trainer, _ = load_run(d)
    m, g = trainer.model, trainer.guide
    x = data.test_x[:N]; y = None if data.test_y is None else data.test_y[:N]
    mods = [p for p in (m, g) if isinstance(p, torch.nn.Module)]
    print(d.split('/')[-1][:45], "training flags:", [p.training for p in mods], flush=True)
    with eval_mode(m, g):
        r_eval = log_likelihood(m, g, x, y, k=K, seed=0)
    r_train = log_likelihood(m, g, x, y, k=K, seed=0)
    for name, r in (("as ppvae evaluates (training mode)", r_train), ("inside eval_mode", r_eval)):
        print(f"  {name}: IWAE_{K} {r['ll'].mean():.3f}  ELBO {r['elbo'].mean():.3f}  KL {r['kl'].mean():.3f}", flush=True)
