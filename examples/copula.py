"""A Gaussian copula, a deep Gaussianization flow and RealNVP on tabular data.

scikit-learn's bundled breast-cancer data (569 tumours, 30 skewed, heavy-tailed features),
standardised with training statistics, split train / validation / test. Models, all
``TransformedDistribution``s over N(0, I):

* ``gaussian``: a multivariate normal fitted by moments (closed form; the baseline);
* ``copula``: one ``MarginalGaussianization`` (data side) then a lower-triangular linear map
  (``tfb.ScaleMatvecTriL``, latent side): the Gaussian copula with learned marginals. Fitted
  without training (marginals from data-dependent init, the triangular factor is the Cholesky
  factor of the correlation of the Gaussianized data), then refined by maximum likelihood;
* ``gaussianization``: ``tff.flows.rbig`` (iterative Gaussianization, no training), refined;
* ``realnvp``: ``tff.flows.realnvp``, trained from its identity initialisation.

Training: full-batch Adam (``tff.train.fit`` with the whole training set as the batch); the
variables with the best validation log-likelihood (checked every ``--eval_every`` steps) are
kept, so small-data overfitting does not decide the comparison. Reported: mean test
log-likelihood per tumour (nats, higher is better).

    python examples/copula.py --out runs/copula            # ~2-4 minutes, 2 cores
    python examples/copula.py --quick --out /tmp/copula    # smoke run

Writes ``metrics.json`` to ``--out``.
"""

import json
import os
import time

from absl import app
from absl import flags

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows as tff

tfb, tfd = tfp.bijectors, tfp.distributions

flags.DEFINE_integer("steps", 800, "full-batch Adam steps per model")
flags.DEFINE_float("learning_rate", None,
                   "Adam learning rate of every model (default: 2e-3 for the copula and the "
                   "Gaussianization flow, 1e-3 for RealNVP)")
flags.DEFINE_integer("eval_every", 25, "steps between validation checks")
flags.DEFINE_integer("seed", 0, "seed of the split")
flags.DEFINE_string("out", "runs/copula", "output directory (metrics.json)")
flags.DEFINE_bool("quick", False, "smoke run: 40 steps")
FLAGS = flags.FLAGS
LEARNING_RATES = {"copula": 2e-3, "gaussianization": 2e-3, "realnvp": 1e-3}


def load(seed=0):
  from sklearn.datasets import load_breast_cancer
  x = load_breast_cancer().data
  idx = np.random.default_rng(seed).permutation(len(x))
  n_test, n_val = len(x) // 5, len(x) // 10
  test, val, train = x[idx[:n_test]], x[idx[n_test:n_test + n_val]], x[idx[n_test + n_val:]]
  mean, std = train.mean(0), train.std(0)
  norm = lambda a: ((a - mean) / std).astype(np.float32)
  return norm(train), norm(val), norm(test)


def gaussian_log_likelihood(train, test):
  mean = train.mean(0).astype(np.float64)
  cov = np.cov(train.T.astype(np.float64)) + 1e-6 * np.eye(train.shape[1])
  mvn = tfd.MultivariateNormalTriL(mean, np.linalg.cholesky(cov))
  return float(np.mean(mvn.log_prob(test.astype(np.float64)).numpy()))


def copula(train, num_components):
  d = train.shape[1]
  marginal = tff.bijectors.MarginalGaussianization(d, num_components=num_components)
  g = marginal.inverse(tf.constant(train)).numpy()  # data-dependent init of the marginals
  chol = np.linalg.cholesky(np.corrcoef(g.T) + 1e-4 * np.eye(d)).astype(np.float32)
  tril = tfb.ScaleMatvecTriL(scale_tril=tfp.util.TransformedVariable(
      chol, tfb.FillScaleTriL(diag_shift=1e-5), name="copula_scale_tril"))
  return tfb.Chain([marginal, tril], name="gaussian_copula")  # data side first


def fit(dist, train, val, steps, learning_rate, eval_every):
  """Full-batch Adam, keeping the variables with the best validation log-likelihood."""
  variables = dist.trainable_variables
  val_ll = lambda: float(np.mean(tff.train.batched_log_prob(dist, val)))
  best = {"ll": val_ll(), "values": [v.numpy() for v in variables]}

  def keep_best(i, loss):
    del loss
    if (i + 1) % eval_every == 0 or i + 1 == steps:
      ll = val_ll()
      if np.isfinite(ll) and ll > best["ll"]:
        best.update(ll=ll, values=[v.numpy() for v in variables])

  tff.train.fit(dist, train, optimizer=keras.optimizers.Adam(learning_rate), steps=steps,
                batch_size=len(train), callback=keep_best)
  for v, value in zip(variables, best["values"]):
    v.assign(value)
  return best["ll"]


def main(argv):
  del argv
  steps = 40 if FLAGS.quick else FLAGS.steps
  train, val, test = load(FLAGS.seed)
  d = train.shape[1]
  print(f"breast cancer: {len(train)} train / {len(val)} validation / {len(test)} test, D={d}")

  results = {"gaussian": {"test_ll": gaussian_log_likelihood(train, test)}}
  flows = {
      "copula": lambda: copula(train, num_components=16),
      "gaussianization": lambda: tff.flows.rbig(train, num_layers=4, num_components=16),
      "realnvp": lambda: tff.flows.realnvp([d], num_layers=6, hidden_units=[64, 64], seed=1),
  }
  for name, make in flows.items():
    start = time.perf_counter()
    flow = make()
    dist = tff.flows.distribution(flow, [d])
    row = {"build_s": time.perf_counter() - start}
    if name != "realnvp":  # these two are usable before any gradient step
      row["test_ll_no_training"] = float(np.mean(tff.train.batched_log_prob(dist, test)))
    start = time.perf_counter()
    row["best_val_ll"] = fit(dist, train, val, steps,
                             FLAGS.learning_rate or LEARNING_RATES[name], FLAGS.eval_every)
    row["train_s"] = time.perf_counter() - start
    row["test_ll"] = float(np.mean(tff.train.batched_log_prob(dist, test)))
    results[name] = row

  print(f"\nmean test log-likelihood per tumour (nats), {steps} Adam steps, best validation "
        "checkpoint")
  print(f"{'model':<18}{'no training':>14}{'trained':>12}")
  for name, row in results.items():
    untrained = row.get("test_ll_no_training", row["test_ll"] if name == "gaussian" else None)
    u = f"{untrained:>14.2f}" if untrained is not None else f"{'-':>14}"
    t = f"{row['test_ll']:>12.2f}" if name != "gaussian" else f"{'-':>12}"
    print(f"{name:<18}{u}{t}")
  results["steps"] = steps
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(os.path.join(FLAGS.out, "metrics.json"), "w") as f:
    json.dump(results, f, indent=2)
  print(f"wrote {FLAGS.out}/metrics.json")


if __name__ == "__main__":
  app.run(main)
