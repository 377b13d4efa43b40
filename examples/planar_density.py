"""Density estimation with planar (or radial) flows: maximum likelihood through the inverse.

A planar flow is defined in the sampling direction ``x = f_K(...f_1(z))``; its density
``log p(x) = log N(f^-1(x)) - log|det J_f(f^-1(x))|`` needs the inverse of every layer, which for
tanh layers is a one-dimensional root search along w (``tff.bijectors.Planar``). Gradients of
the log-likelihood flow through the root by implicit differentiation, so training is the plain
maximum-likelihood step of ``tff.train.fit``.

Writes ``density.png`` (data histogram, model density on a grid with axes and a colour bar,
model samples) and ``metrics.json`` (test NLL; KL(data || model) for toy densities with an exact
log_prob).

    python examples/planar_density.py --out runs/planar_density     # ~1-3 minutes, 2 cores
    python examples/planar_density.py --dataset 8gaussians --num_layers 32 --steps 3000
    python examples/planar_density.py --flow radial --out runs/radial_density
    python examples/planar_density.py --quick --out /tmp/planar_density   # smoke run
"""

import json
import os
import time

from absl import app
from absl import flags

import keras
import numpy as np

import tfp_flows as tff

flags.DEFINE_enum("dataset", "moons", list(tff.datasets.TOY_NAMES), "toy density to fit")
flags.DEFINE_enum("flow", "planar", ["planar", "radial"], "flow family")
flags.DEFINE_enum("activation", "tanh", ["tanh", "leaky_relu"], "planar activation")
flags.DEFINE_integer("num_layers", 16, "flow layers")
flags.DEFINE_integer("steps", 1500, "Adam steps")
flags.DEFINE_integer("batch_size", 512, "training batch size")
flags.DEFINE_float("learning_rate", 5e-3, "Adam learning rate")
flags.DEFINE_integer("grid", 200, "grid points per axis for the density plot")
flags.DEFINE_integer("seed", 0, "seed of the data, the flow's initial values and the batches")
flags.DEFINE_string("out", "runs/planar_density", "output directory")
flags.DEFINE_bool("quick", False, "smoke run: 2 layers, 30 steps, coarse grid")
FLAGS = flags.FLAGS


def build(flow, num_layers, activation, seed):
  if flow == "planar":
    return tff.flows.planar([2], num_layers=num_layers, activation=activation, seed=seed)
  return tff.flows.radial([2], num_layers=num_layers, seed=seed)


def main(argv):
  del argv
  num_layers, steps, grid_points = FLAGS.num_layers, FLAGS.steps, FLAGS.grid
  if FLAGS.quick:
    num_layers, steps, grid_points = 2, 30, 40
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  os.makedirs(FLAGS.out, exist_ok=True)
  toy = tff.datasets.toy(FLAGS.dataset)
  train = toy.sample(20_000, seed=FLAGS.seed)
  test = toy.sample(5_000, seed=FLAGS.seed + 1)
  # Standardise (the flow starts at N(0, I)); the log-det of the scaling is added back below.
  mean, std = train.mean(0), train.std(0)
  log_scale = float(np.sum(np.log(std)))

  dist = tff.flows.distribution(build(FLAGS.flow, num_layers, FLAGS.activation, FLAGS.seed),
                                [2])

  def report(i, loss):
    if (i + 1) % max(1, steps // 5) == 0:
      print(f"step {i + 1}: train NLL (standardised) {float(loss):.3f}", flush=True)

  start = time.perf_counter()
  tff.train.fit(dist, (train - mean) / std, optimizer=keras.optimizers.Adam(FLAGS.learning_rate),
                steps=steps, batch_size=FLAGS.batch_size, seed=FLAGS.seed, callback=report)
  seconds = time.perf_counter() - start

  def model_log_prob(x):  # density in data units
    return tff.train.batched_log_prob(dist, (np.asarray(x) - mean) / std, batch_size=10_000,
                                      jit_compile=True) - log_scale

  test_lp = model_log_prob(test)
  metrics = dict(dataset=FLAGS.dataset, flow=FLAGS.flow, activation=FLAGS.activation,
                 num_layers=num_layers, steps=steps, seconds=seconds,
                 test_nll=float(-np.mean(test_lp)),
                 non_finite_test_log_probs=int(np.sum(~np.isfinite(test_lp))))
  if toy.has_log_prob:
    metrics["kl_data_model"] = float(np.mean(toy.log_prob(test) - test_lp))
  print(json.dumps(metrics, indent=2))

  lim = float(np.abs(train).max() * 1.1)
  axis = np.linspace(-lim, lim, grid_points)
  xx, yy = np.meshgrid(axis, axis)
  density = np.exp(model_log_prob(np.stack([xx.ravel(), yy.ravel()], -1)))
  samples = np.asarray(dist.sample(5000, seed=FLAGS.seed)) * std + mean
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
  box = [[-lim, lim], [-lim, lim]]
  axes[0].hist2d(test[:, 0], test[:, 1], bins=100, range=box)
  axes[0].set_title(f"data ({FLAGS.dataset})")
  image = axes[1].imshow(density.reshape(grid_points, grid_points), origin="lower",
                         extent=(-lim, lim, -lim, lim))
  fig.colorbar(image, ax=axes[1], label="p(x)")
  axes[1].set_title(f"{FLAGS.flow} K={num_layers}: density")
  axes[2].hist2d(samples[:, 0], samples[:, 1], bins=100, range=box)
  axes[2].set_title("model samples")
  for ax in axes:
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.set_aspect("equal")
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.out, "density.png"), dpi=110)
  plt.close(fig)
  with open(os.path.join(FLAGS.out, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2)
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
