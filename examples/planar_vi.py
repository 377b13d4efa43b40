"""Variational inference with planar flows on the U1-U4 energies of Rezende & Mohamed (2015).

Fits ``q = planar flow (K layers) applied to N(0, I)`` to ``p(z) ∝ exp(-U(z))`` by reverse KL
with ``tfp.vi.fit_surrogate_posterior`` for K = 1, 2, 10, 32, and draws one figure per
potential: the target, then q after each K (the density of q on a grid comes from
``q.log_prob``, i.e. through the numerical inverse of every tanh layer). Also writes
``planar_vi_grid.png`` (all potentials) and ``metrics.json`` with KL(q || p) per potential and K
(the normalising constant of exp(-U) by quadrature on the plotted box).

The energies (w1 = sin(2π z1 / 4), w2 = 3 exp(-((z1 - 1)/0.6)² / 2), w3 = 3 σ((z1 - 1)/0.3))::

    U1 = ((‖z‖ - 2)/0.4)²/2 - log(exp(-((z1 - 2)/0.6)²/2) + exp(-((z1 + 2)/0.6)²/2))
    U2 = ((z2 - w1)/0.4)²/2
    U3 = -log(exp(-((z2 - w1)/0.35)²/2) + exp(-((z2 - w1 + w2)/0.35)²/2))
    U4 = -log(exp(-((z2 - w1)/0.4)²/2) + exp(-((z2 - w1 + w3)/0.35)²/2))

U2-U4 do not confine z1 (exp(-U) is not integrable), so every potential gets a soft wall
``((|z1| - 4)_+ / 0.2)²/2`` that is zero on the plotted box [-4, 4]²; inside the box the targets
are those of the paper.

    python examples/planar_vi.py --out runs/planar_vi               # about 2-4 minutes, 2 cores
    python examples/planar_vi.py --steps 200 --layers 1 2 --potentials U1 --out /tmp/smoke

Reference: Rezende, Mohamed. Variational Inference with Normalizing Flows. ICML 2015, fig. 3.
"""

import argparse
import json
import os
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

import tfp_flows as tff

BOX = 4.


def _w1(z):
  return tf.sin(2. * np.pi * z[..., 0] / 4.)


def _sq(t):
  return 0.5 * tf.square(t)


def _wall(z):
  return _sq(tf.nn.relu(tf.abs(z[..., 0]) - BOX) / 0.2)


def u1(z):
  r = tf.norm(z, axis=-1)
  modes = tf.stack([-_sq((z[..., 0] - 2.) / 0.6), -_sq((z[..., 0] + 2.) / 0.6)], -1)
  return _sq((r - 2.) / 0.4) - tf.reduce_logsumexp(modes, -1)


def u2(z):
  return _sq((z[..., 1] - _w1(z)) / 0.4)


def u3(z):
  w2 = 3. * tf.exp(-_sq((z[..., 0] - 1.) / 0.6))
  a = z[..., 1] - _w1(z)
  return -tf.reduce_logsumexp(tf.stack([-_sq(a / 0.35), -_sq((a + w2) / 0.35)], -1), -1)


def u4(z):
  w3 = 3. * tf.sigmoid((z[..., 0] - 1.) / 0.3)
  a = z[..., 1] - _w1(z)
  return -tf.reduce_logsumexp(tf.stack([-_sq(a / 0.4), -_sq((a + w3) / 0.35)], -1), -1)


POTENTIALS = {"U1": u1, "U2": u2, "U3": u3, "U4": u4}


def target_log_prob_fn(name):
  potential = POTENTIALS[name]
  return lambda z: -(potential(z) + _wall(z))


def _grid(points):
  axis = np.linspace(-BOX, BOX, points)
  xx, yy = np.meshgrid(axis, axis)
  return axis, np.stack([xx.ravel(), yy.ravel()], -1).astype(np.float32)


def _log_density_on_grid(log_prob, grid):
  fn = tf.function(log_prob, jit_compile=True)
  return np.concatenate([fn(tf.constant(chunk)).numpy() for chunk in np.array_split(grid, 8)])


def fit(name, num_layers, steps, sample_size, learning_rate, seed, jit_compile=True):
  """Fits a K-layer planar flow to exp(-U) by reverse KL; returns (q, losses, seconds)."""
  flow = tff.flows.planar([2], num_layers=num_layers, seed=seed)
  q = tff.flows.distribution(flow, [2])
  start = time.time()
  losses = tfp.vi.fit_surrogate_posterior(
      target_log_prob_fn(name), q, optimizer=tf_keras.optimizers.Adam(learning_rate),
      num_steps=steps, sample_size=sample_size, jit_compile=jit_compile, seed=seed)
  return q, np.asarray(losses), time.time() - start


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="runs/planar_vi", help="directory for PNGs and JSON")
  parser.add_argument("--potentials", nargs="+", default=list(POTENTIALS),
                      choices=list(POTENTIALS))
  parser.add_argument("--layers", nargs="+", type=int, default=[1, 2, 10, 32])
  parser.add_argument("--steps", type=int, default=2000, help="optimizer steps per fit")
  parser.add_argument("--sample-size", type=int, default=256, help="Monte-Carlo samples/step")
  parser.add_argument("--learning-rate", type=float, default=1e-2)
  parser.add_argument("--grid", type=int, default=200, help="grid points per axis for plots")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)

  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  os.makedirs(args.out, exist_ok=True)
  axis, grid = _grid(args.grid)
  cell = (axis[1] - axis[0]) ** 2
  metrics = {"steps": args.steps, "sample_size": args.sample_size, "results": {}}
  rows = []
  for name in args.potentials:
    log_p = -(POTENTIALS[name](tf.constant(grid)) + _wall(tf.constant(grid))).numpy()
    log_z = float(np.log(np.sum(np.exp(log_p)) * cell))  # quadrature on the box
    panels = [("exp(-%s)" % name, np.exp(log_p - log_z))]
    metrics["results"][name] = {"log_normalizer": log_z}
    for k in args.layers:
      q, losses, seconds = fit(name, k, args.steps, args.sample_size, args.learning_rate,
                               args.seed)
      # -ELBO = KL(q || p) - log Z, averaged over the last 10% of steps.
      tail = losses[-max(1, len(losses) // 10):]
      kl = float(np.mean(tail)) + log_z
      log_q = _log_density_on_grid(q.log_prob, grid)
      panels.append((f"K = {k}", np.exp(log_q)))
      metrics["results"][name][f"K={k}"] = {"kl_q_p": kl, "final_loss": float(losses[-1]),
                                            "seconds": seconds,
                                            "q_mass_on_box": float(np.sum(np.exp(log_q)) * cell)}
      print(f"{name} K={k:>2}: KL(q||p) ~ {kl:.3f}  ({seconds:.1f}s)", flush=True)
    rows.append((name, panels))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.8))
    for ax, (title, dens) in zip(np.atleast_1d(axes), panels):
      _draw(ax, axis, dens, title)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, f"planar_vi_{name}.png"), dpi=110)
    plt.close(fig)

  fig, axes = plt.subplots(len(rows), len(rows[0][1]),
                           figsize=(2.4 * len(rows[0][1]), 2.4 * len(rows)), squeeze=False)
  for r, (name, panels) in enumerate(rows):
    for c, (title, dens) in enumerate(panels):
      _draw(axes[r, c], axis, dens, title if r == 0 or c == 0 else None)
  fig.tight_layout()
  fig.savefig(os.path.join(args.out, "planar_vi_grid.png"), dpi=100)
  plt.close(fig)
  with open(os.path.join(args.out, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2)
  print(f"wrote {args.out}")
  return metrics


def _draw(ax, axis, density, title):
  ax.imshow(density.reshape(len(axis), len(axis)), origin="lower", cmap="viridis",
            extent=(axis[0], axis[-1], axis[0], axis[-1]))
  ax.set_xticks([])
  ax.set_yticks([])
  if title:
    ax.set_title(title, fontsize=9)


if __name__ == "__main__":
  main()
