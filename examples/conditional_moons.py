"""Class-conditional two moons: one RealNVP, conditioned on the moon's label, trained with Keras.

The toy sampler ``tff.datasets.toy("moons")`` puts the first half of its ``n`` points on the
upper moon (label 0) and the rest on the lower moon (label 1). A RealNVP whose couplings take
the one-hot label as a conditional input (``conditional_shape=[2]``) is trained with
``tff.keras.FlowModel.fit(x, labels)``; then

* ``model.sample(n, context=one_hot(c))`` draws from each class, and we report the fraction
  of class-c samples that lie nearer to moon c's arc than to the other (the arcs are known in
  closed form);
* ``argmax_c log p(x | c)`` classifies held-out points (Bayes rule with equal priors);
* the held-out NLL given the true label, in nats.

    python examples/conditional_moons.py --out runs/conditional_moons      # ~1-2 min CPU
    python examples/conditional_moons.py --quick --out /tmp/conditional_moons  # smoke run

Writes ``metrics.json`` and (with matplotlib) ``samples.png`` to ``--out``.
"""

import json
import os

from absl import app
from absl import flags

import keras
import numpy as np

import tfp_flows as tff

flags.DEFINE_integer("epochs", 40, "training epochs (FlowModel.fit)")
flags.DEFINE_integer("batch_size", 256, "training batch size")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate")
flags.DEFINE_integer("seed", 0, "seed of the data and of the flow's initial values")
flags.DEFINE_string("out", "runs/conditional_moons", "output directory")
flags.DEFINE_bool("quick", False, "smoke run: 3 epochs on 4096 points")
FLAGS = flags.FLAGS


def labelled_moons(n, seed):
  """Points and labels: the sampler's first ``n // 2`` points are the upper moon (0)."""
  x = tff.datasets.toy("moons").sample(n, seed=seed)
  return x, (np.arange(n) >= n // 2).astype(np.int64)


def nearest_moon(x):
  """0 or 1: which noiseless arc (in the sampler's coordinates) is nearer to each point."""
  u = x / 2. + np.array([0.5, 0.25])  # undo the sampler's final 2 (x - [0.5, 0.25])
  t = np.linspace(0., np.pi, 400)
  upper = np.stack([np.cos(t), np.sin(t)], 1)
  lower = np.stack([1. - np.cos(t), 0.5 - np.sin(t)], 1)
  d_up = np.min(np.linalg.norm(u[:, None] - upper[None], axis=-1), axis=1)
  d_low = np.min(np.linalg.norm(u[:, None] - lower[None], axis=-1), axis=1)
  return (d_low < d_up).astype(np.int64)


def main(argv):
  del argv
  n_train, epochs = (4096, 3) if FLAGS.quick else (16384, FLAGS.epochs)
  out = FLAGS.out
  os.makedirs(out, exist_ok=True)

  x, y = labelled_moons(n_train, seed=FLAGS.seed)
  x_test, y_test = labelled_moons(4096, seed=FLAGS.seed + 1)
  onehot = np.eye(2, dtype=np.float32)

  flow = tff.flows.realnvp([2], num_layers=6, hidden_units=[64, 64], conditional_shape=[2],
                           seed=FLAGS.seed)
  dist = tff.flows.distribution(flow, [2])
  model = tff.keras.FlowModel(dist)
  model.compile(keras.optimizers.Adam(FLAGS.learning_rate))
  history = model.fit(x, onehot[y], batch_size=FLAGS.batch_size, epochs=epochs,
                      validation_data=(x_test, onehot[y_test]), verbose=2)

  # Bayes rule with equal priors: log p(x | c) for both labels, in compiled batches.
  lp = np.stack([tff.train.batched_log_prob(dist, x_test, context=np.tile(onehot[c],
                                                                          [len(x_test), 1]))
                 for c in (0, 1)], 1)
  metrics = {
      "epochs": epochs,
      "train_nll": float(history.history["loss"][-1]),
      "test_nll_given_label": float(-np.mean(lp[np.arange(len(y_test)), y_test])),
      "bayes_accuracy": float(np.mean(np.argmax(lp, 1) == y_test)),
  }
  samples = {c: model.sample(2000, seed=c, context=onehot[c]).numpy() for c in (0, 1)}
  for c in (0, 1):
    metrics[f"samples_on_moon_{c}"] = float(np.mean(nearest_moon(samples[c]) == c))
  with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2)
  print(json.dumps(metrics, indent=2))

  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    return
  fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharex=True, sharey=True)
  for c, color in ((0, "tab:blue"), (1, "tab:orange")):
    axes[0].scatter(*x_test[y_test == c][:1000].T, s=2, color=color, label=f"moon {c}")
    axes[1].scatter(*samples[c][:1000].T, s=2, color=color, label=f"context = moon {c}")
  axes[0].set_title("held-out data")
  axes[1].set_title("model.sample(n, context=one_hot(c))")
  for ax in axes:
    ax.legend(markerscale=4, loc="lower left")
  fig.tight_layout()
  fig.savefig(os.path.join(out, "samples.png"), dpi=120)


if __name__ == "__main__":
  app.run(main)
