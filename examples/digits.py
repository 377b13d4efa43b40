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

    python examples/digits.py --out runs/digits                 # 1000 steps, a few minutes
    python examples/digits.py --out runs/digits --flow masked_conv
    python examples/digits.py --out /tmp/digits --quick          # smoke run
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

import tfp_flows as tff  # noqa: E402

tfb = tfp.bijectors
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


def train(dist, x_train, steps, batch, lr, seed):
  x_train = tf.constant(x_train, tf.float32)
  n = int(x_train.shape[0])
  # ActNorm's data-dependent initialisation on a first dequantised batch.
  dist.log_prob(tff.bijectors.dequantize(x_train[:256].numpy(), BINS, seed=seed))
  variables = dist.trainable_variables
  opt = tf.keras.optimizers.Adam(lr)

  @tf.function(jit_compile=True)
  def step(i):
    seeds = tf.stack([tf.cast(i, tf.int32), tf.constant(seed, tf.int32)])
    x = tf.gather(x_train, tf.random.stateless_uniform([batch], seeds, maxval=n, dtype=tf.int32))
    u = x + tf.random.stateless_uniform(tf.shape(x), seeds + 1)
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(dist.log_prob(u))
    opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  t0 = time.perf_counter()
  for i in range(steps):
    loss = step(tf.constant(i))
    if i % max(1, steps // 10) == 0 or i == steps - 1:
      bpd = float(tff.bijectors.bits_per_dim(-loss, D))
      print(f"step {i:5d}  train bits/dim {bpd:.3f}  ({time.perf_counter() - t0:.0f}s)",
            flush=True)


def test_bits_per_dim(dist, u_test):
  log_prob = tf.function(dist.log_prob, jit_compile=True)
  return float(np.mean(tff.bijectors.bits_per_dim(log_prob(u_test).numpy(), D)))


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


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="runs/digits", help="output directory")
  parser.add_argument("--flow", default="realnvp", choices=["realnvp", "masked_conv"])
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--lr", type=float, default=1e-3)
  parser.add_argument("--temperature", type=float, default=1.0,
                      help="sample z ~ N(0, T^2 I) for the sample grid")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--quick", action="store_true", help="smoke run (20 steps)")
  args = parser.parse_args()
  steps = 20 if args.quick else args.steps
  os.makedirs(args.out, exist_ok=True)
  tf.keras.utils.set_random_seed(args.seed)

  x_train, _, x_test, y_test = tff.datasets.digits(seed=args.seed, return_labels=True)
  u_test = tff.bijectors.dequantize(x_test, BINS, seed=123)
  chain, dist = build(args.flow, args.seed)
  train(dist, x_train, steps, args.batch, args.lr, args.seed)
  bpd = test_bits_per_dim(dist, u_test)
  print(f"test bits/dim: {bpd:.3f}  ({len(x_test)} test images, 17 levels; uniform = "
        f"{np.log2(BINS):.3f})")

  z = args.temperature * tf.random.stateless_normal([64] + SHAPE, seed=[args.seed, 1])
  samples = chain.forward(z).numpy()
  _grid(samples, 8, 8, os.path.join(args.out, "samples.png"),
        f"{args.flow} samples (T={args.temperature:g}), test {bpd:.2f} bits/dim")

  # Pairs of real test digits with different labels: 0->1, 2->3, ..., 8->9.
  first = [int(np.flatnonzero(y_test == k)[0]) for k in range(10)]
  u_a = tf.gather(u_test, first[0::2])
  u_b = tf.gather(u_test, first[1::2])
  rows = interpolate(chain, u_a, u_b, num=10)
  _grid(rows, 5, 10, os.path.join(args.out, "interpolation.png"),
        f"{args.flow}: latent interpolation between real test digits")

  metrics = {"flow": args.flow, "steps": steps, "batch": args.batch, "lr": args.lr,
             "test_bits_per_dim": bpd, "num_test": int(len(x_test)),
             "params": int(sum(np.prod(v.shape) for v in dist.trainable_variables))}
  with open(os.path.join(args.out, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2)
  print(f"wrote {args.out}/samples.png, interpolation.png, metrics.json")


if __name__ == "__main__":
  main()
