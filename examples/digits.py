"""Train an image flow on scikit-learn's 8x8 digits; report test bits/dim, draw samples and a
latent interpolation between real test digits.

The model is a density on dequantised pixels ``u = x + v in [0, 17)^64`` (``x`` in 0..16,
``v ~ U[0, 1)^64``, fresh noise every step)::

    flow = Chain([Dequantize(17), Logit(0.05), realnvp([8, 8, 1], num_scales=2)])
    test bits/dim = mean -log p(u) / (64 ln 2)       (<= log2(17) = 4.09 for a uniform model)

Writes into ``--out``: ``samples.png`` (a grid of samples at ``--temperature``),
``interpolation.png`` (rows from one real test digit to another along
``z(t) = cos(pi t / 2) z_a + sin(pi t / 2) z_b`` in latent space, which keeps a standard normal's
scale) and ``metrics.json``.

Training: ``tff.train.make_ml_step`` (Adam, XLA) on batches drawn with fresh dequantisation
noise; ``tff.train.initialize`` runs ActNorm's data-dependent initialisation on the first one.

    python examples/digits.py --out runs/digits                 # 1000 steps, a few minutes
    python examples/digits.py --out runs/digits --flow masked_conv
    python examples/digits.py --out /tmp/digits --quick          # smoke run
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

tfb = tfp.bijectors

flags.DEFINE_enum("flow", "realnvp", ["realnvp", "masked_conv"], "image flow")
flags.DEFINE_integer("steps", 1000, "Adam steps")
flags.DEFINE_integer("batch_size", 64, "images per step")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate")
flags.DEFINE_float("temperature", 1.0, "sample z ~ N(0, T^2 I) for the sample grid")
flags.DEFINE_integer("seed", 0, "seed of the split, the flow, the batches and the noise")
flags.DEFINE_string("out", "runs/digits", "output directory")
flags.DEFINE_bool("quick", False, "smoke run (20 steps)")
FLAGS = flags.FLAGS
BINS = tff.datasets.DIGITS_NUM_BINS
SHAPE = [8, 8, 1]
D = 64


def build(flow_name, seed):
  if flow_name == "realnvp":
    flow = tff.flows.realnvp(SHAPE, num_layers=3, hidden_units=32, num_blocks=1, num_scales=2,
                             seed=seed)
  elif flow_name == "masked_conv":
    flow = tff.flows.masked_conv(SHAPE, num_layers=4, hidden_units=16, seed=seed)
  else:
    raise ValueError(f"unknown --flow {flow_name!r}; expected realnvp or masked_conv.")
  chain = tfb.Chain([tff.bijectors.Dequantize(BINS), tff.bijectors.Logit(0.05), flow])
  return chain, tff.flows.distribution(chain, SHAPE, dtype=tf.float32)


def train(dist, x_train, steps, batch_size, learning_rate, seed):
  """Maximum likelihood on dequantised batches (fresh uniform noise every step)."""
  rng = np.random.default_rng(seed)
  step = tff.train.make_ml_step(dist, keras.optimizers.Adam(learning_rate))
  t0 = time.perf_counter()
  for i in range(steps):
    x = x_train[rng.integers(0, len(x_train), batch_size)]
    u = (x + rng.uniform(size=x.shape)).astype(np.float32)
    if i == 0:
      tff.train.initialize(dist, u)  # ActNorm's data-dependent init, eagerly
    loss = step(tf.constant(u))
    if i % max(1, steps // 10) == 0 or i == steps - 1:
      bpd = float(tff.bijectors.bits_per_dim(-loss, D))
      print(f"step {i:5d}  train bits/dim {bpd:.3f}  ({time.perf_counter() - t0:.0f}s)",
            flush=True)


def test_bits_per_dim(dist, u_test):
  log_prob = tff.train.batched_log_prob(dist, u_test, jit_compile=True)
  return float(np.mean(tff.bijectors.bits_per_dim(log_prob, D)))


def _grid(images, rows, cols, path, title):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8 + 0.4))
  for ax, img in zip(np.ravel(axes), images):
    ax.imshow(np.clip(img[..., 0] / BINS, 0., 1.), cmap="gray_r", vmin=0., vmax=1.)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def interpolate(chain, u_a, u_b, num):
  """Latent interpolation between data points ``u_a`` and ``u_b`` (rows of ``num`` images)."""
  z_a, z_b = chain.inverse(u_a), chain.inverse(u_b)
  t = np.linspace(0., 1., num)
  z = (np.cos(np.pi * t / 2)[None, :, None, None, None] * z_a.numpy()[:, None]
       + np.sin(np.pi * t / 2)[None, :, None, None, None] * z_b.numpy()[:, None])
  return chain.forward(tf.constant(z.reshape((-1,) + tuple(SHAPE)), tf.float32)).numpy()


def main(argv):
  del argv
  steps = 20 if FLAGS.quick else FLAGS.steps
  out = FLAGS.out
  os.makedirs(out, exist_ok=True)
  keras.utils.set_random_seed(FLAGS.seed)

  x_train, _, x_test, y_test = tff.datasets.digits(seed=FLAGS.seed, return_labels=True)
  u_test = tff.bijectors.dequantize(x_test, BINS, seed=123)
  chain, dist = build(FLAGS.flow, FLAGS.seed)
  train(dist, x_train.astype(np.float32), steps, FLAGS.batch_size, FLAGS.learning_rate,
        FLAGS.seed)
  bpd = test_bits_per_dim(dist, u_test.numpy())
  print(f"test bits/dim: {bpd:.3f}  ({len(x_test)} test images, 17 levels; uniform = "
        f"{np.log2(BINS):.3f})")

  z = FLAGS.temperature * tf.random.stateless_normal([64] + SHAPE, seed=[FLAGS.seed, 1])
  samples = chain.forward(z).numpy()
  _grid(samples, 8, 8, os.path.join(out, "samples.png"),
        f"{FLAGS.flow} samples (T={FLAGS.temperature:g}), test {bpd:.2f} bits/dim")

  # Pairs of real test digits with different labels: 0->1, 2->3, ..., 8->9.
  first = [int(np.flatnonzero(y_test == k)[0]) for k in range(10)]
  u_a = tf.gather(u_test, first[0::2])
  u_b = tf.gather(u_test, first[1::2])
  rows = interpolate(chain, u_a, u_b, num=10)
  _grid(rows, 5, 10, os.path.join(out, "interpolation.png"),
        f"{FLAGS.flow}: latent interpolation between real test digits")

  metrics = {"flow": FLAGS.flow, "steps": steps, "batch_size": FLAGS.batch_size,
             "learning_rate": FLAGS.learning_rate,
             "test_bits_per_dim": bpd, "num_test": int(len(x_test)),
             "params": int(sum(np.prod(v.shape) for v in dist.trainable_variables))}
  with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2)
  print(f"wrote {out}/samples.png, interpolation.png, metrics.json")


if __name__ == "__main__":
  app.run(main)
