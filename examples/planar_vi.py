"""Variational inference with planar flows on the U1-U4 energies of Rezende & Mohamed (2015).

Fits ``q = planar flow (K layers) applied to N(0, I)`` to ``p(z) ∝ exp(-U(z))`` by reverse KL
(``tff.train.make_vi_step``) for K = 1, 2, 10, 32, and draws one figure per potential: the
target, then q after each K (the density of q on a grid comes from ``q.log_prob``, i.e. through
the numerical inverse of every tanh layer). Also writes ``planar_vi_grid.png`` (all
potentials) and ``metrics.json`` with KL(q || p) per potential and K: the mean loss of the last
10% of steps plus ``log Z`` (``tff.datasets.potential(name).log_normalizer()``, by quadrature).

The energies and their soft wall ``((|z1| - 4)_+ / 0.2)^2 / 2`` (U2-U4 alone are not
integrable) are ``tff.datasets.potential("U1")`` .. ``("U4")``; inside the plotted box
[-4, 4]^2 they are those of the paper.

    python examples/planar_vi.py --out runs/planar_vi          # about 2-4 minutes, 2 cores
    python examples/planar_vi.py --quick --out /tmp/planar_vi  # smoke run (seconds)

Reference: Rezende, Mohamed. Variational Inference with Normalizing Flows. ICML 2015, fig. 3.
"""

import json
import os
import time

from absl import app
from absl import flags

import keras
import numpy as np
import tensorflow as tf

import tfp_flows as tff

flags.DEFINE_string("out", "runs/planar_vi", "directory for the PNGs and metrics.json")
flags.DEFINE_list("potentials", list(tff.datasets.POTENTIAL_NAMES), "energies to fit")
flags.DEFINE_list("num_layers", ["1", "2", "10", "32"], "flow depths K to fit")
flags.DEFINE_integer("steps", 2000, "optimizer steps per fit")
flags.DEFINE_integer("num_samples", 256, "Monte-Carlo samples of q per step")
flags.DEFINE_float("learning_rate", 1e-2, "Adam learning rate")
flags.DEFINE_integer("grid", 200, "grid points per axis for the plots")
flags.DEFINE_integer("seed", 0, "seed of the flows' initial values and of the samples")
flags.DEFINE_bool("quick", False, "smoke run: U1, K = 1 and 2, 30 steps, coarse grid")
FLAGS = flags.FLAGS

BOX = tff.datasets.POTENTIAL_BOX


def fit(target, num_layers, steps, num_samples, learning_rate, seed):
  """Fits a K-layer planar flow to ``target`` by reverse KL; returns (q, losses, seconds)."""
  q = tff.flows.distribution(tff.flows.planar([2], num_layers=num_layers, seed=seed), [2])
  step = tff.train.make_vi_step(q, target.log_prob, keras.optimizers.Adam(learning_rate),
                                num_samples)
  start = time.perf_counter()
  losses = [step(tf.constant([seed, i], tf.int32)) for i in range(steps)]
  losses = np.array([float(v) for v in losses])
  return q, losses, time.perf_counter() - start


def _grid(points):
  axis = np.linspace(-BOX, BOX, points)
  xx, yy = np.meshgrid(axis, axis)
  return axis, np.stack([xx.ravel(), yy.ravel()], -1).astype(np.float32)


def _draw(ax, axis, density, title):
  ax.imshow(density.reshape(len(axis), len(axis)), origin="lower", cmap="viridis",
            extent=(axis[0], axis[-1], axis[0], axis[-1]))
  ax.set_xticks([])
  ax.set_yticks([])
  if title:
    ax.set_title(title, fontsize=9)


def main(argv):
  del argv
  potentials, layers = FLAGS.potentials, [int(k) for k in FLAGS.num_layers]
  steps, grid_points = FLAGS.steps, FLAGS.grid
  if FLAGS.quick:
    potentials, layers, steps, grid_points = ["U1"], [1, 2], 30, 40
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  os.makedirs(FLAGS.out, exist_ok=True)
  axis, grid = _grid(grid_points)
  metrics = {"steps": steps, "num_samples": FLAGS.num_samples,
             "learning_rate": FLAGS.learning_rate, "results": {}}
  rows = []
  for name in potentials:
    target = tff.datasets.potential(name)
    log_z = target.log_normalizer()
    panels = [(f"exp(-{name})", np.exp(target.log_prob(grid).numpy() - log_z))]
    metrics["results"][name] = {"log_normalizer": log_z}
    for k in layers:
      q, losses, seconds = fit(target, k, steps, FLAGS.num_samples, FLAGS.learning_rate,
                               FLAGS.seed)
      # The loss is KL(q || p) - log Z; average the last 10% of steps.
      kl = float(np.mean(losses[-max(1, len(losses) // 10):])) + log_z
      log_q = tff.train.batched_log_prob(q, grid, batch_size=len(grid) // 8 + 1,
                                         jit_compile=True)
      cell = (axis[1] - axis[0]) ** 2
      panels.append((f"K = {k}", np.exp(log_q)))
      metrics["results"][name][f"K={k}"] = {
          "kl_q_p": kl, "final_loss": float(losses[-1]), "seconds": seconds,
          "q_mass_on_box": float(np.sum(np.exp(log_q)) * cell)}
      print(f"{name} K={k:>2}: KL(q||p) ~ {kl:.3f}  ({seconds:.1f}s)", flush=True)
    rows.append((name, panels))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.8))
    for ax, (title, dens) in zip(np.atleast_1d(axes), panels):
      _draw(ax, axis, dens, title)
    fig.tight_layout()
    fig.savefig(os.path.join(FLAGS.out, f"planar_vi_{name}.png"), dpi=110)
    plt.close(fig)

  fig, axes = plt.subplots(len(rows), len(rows[0][1]),
                           figsize=(2.4 * len(rows[0][1]), 2.4 * len(rows)), squeeze=False)
  for r, (name, panels) in enumerate(rows):
    for c, (title, dens) in enumerate(panels):
      _draw(axes[r, c], axis, dens, title if r == 0 or c == 0 else None)
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.out, "planar_vi_grid.png"), dpi=100)
  plt.close(fig)
  with open(os.path.join(FLAGS.out, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2)
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
