"""Image flows on scikit-learn's 8x8 digits: test bits/dim after a fixed budget, images/s.

Three flows, one run each, the same budget: ``--steps`` Adam steps (lr ``--lr``), batch
``--batch``, fresh uniform dequantisation noise every step, one ``tf.function(jit_compile=True)``
step per call:

* ``realnvp``: ``tff.flows.realnvp([8, 8, 1])``, multi-scale (2 scales, 3 couplings per mask
  block, ConvResNet conditioners with 32 channels and 1 residual block, ActNorm);
* ``masked_conv``: ``tff.flows.masked_conv([8, 8, 1])``, MintNet-style masked convolutions
  (4 linear + non-linear block pairs, 16 hidden channels);
* ``tfp_glow``: TFP's ``tfb.Glow`` (2 blocks of 4 steps: ActNorm, 1x1 conv, affine coupling
  with ``tfb.GlowDefaultNetwork`` of 64 channels), as the TFP reference.

Every flow sits under the same preprocessing, ``Chain([Dequantize(17), Logit(0.05), flow])``,
so all three are densities on dequantised pixels ``u = x + v in [0, 17)^64`` (``x`` in 0..16,
``v ~ U[0, 1)^64``), and

    test bits/dim = mean over test images of -log p(u) / (64 ln 2)

(one fixed noise draw per test image, the same for every flow) is an upper bound on the
discrete test NLL in bits per pixel; 17 bins, so a uniform model scores log2(17) = 4.09.
Training images/s: ``steps * batch / seconds`` of the timed loop (compilation excluded).

    python benchmarks/bench_digits.py            # full run
    python benchmarks/bench_digits.py --quick    # smoke run
"""

import argparse
import datetime
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

import tfp_flows as tff  # noqa: E402

tfb = tfp.bijectors
tfd = tfp.distributions
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SHAPE = [8, 8, 1]
D = 64
BINS = tff.datasets.DIGITS_NUM_BINS


def _preprocessed(flow, base_shape):
  """Density on dequantised pixels [0, 17): Dequantize and Logit on the data side of flow."""
  chain = tfb.Chain([tff.bijectors.Dequantize(BINS), tff.bijectors.Logit(0.05), flow])
  base = tfd.Sample(tfd.Normal(0., 1.), base_shape)
  return tfd.TransformedDistribution(base, chain)


def make_realnvp(seed):
  flow = tff.flows.realnvp(SHAPE, num_layers=3, hidden_units=32, num_blocks=1, num_scales=2,
                           seed=seed)
  return _preprocessed(flow, SHAPE)


def make_masked_conv(seed):
  return _preprocessed(tff.flows.masked_conv(SHAPE, num_layers=4, hidden_units=16,
                                            seed=seed), SHAPE)


def make_tfp_glow(seed):
  glow = tfb.Glow(output_shape=SHAPE, num_glow_blocks=2, num_steps_per_block=4,
                  coupling_bijector_fn=lambda s: tfb.GlowDefaultNetwork(s, num_hidden=64),
                  exit_bijector_fn=tfb.GlowDefaultExitNetwork, seed=seed)
  return _preprocessed(glow, [D])  # TFP's Glow maps a flat latent to the image


FLOWS = {"realnvp": make_realnvp, "masked_conv": make_masked_conv, "tfp_glow": make_tfp_glow}


def test_bits_per_dim(dist, u_test, batch=512):
  log_prob = tf.function(dist.log_prob, jit_compile=True)
  lps = [log_prob(u_test[i:i + batch]).numpy() for i in range(0, len(u_test), batch)]
  return float(np.mean(tff.bijectors.bits_per_dim(np.concatenate(lps), D)))


def run_one(name, x_train, u_test, steps, batch, lr, seed):
  tf.keras.utils.set_random_seed(seed)
  dist = FLOWS[name](seed)
  x_train = tf.constant(x_train, tf.float32)
  # Data-dependent initialisation (ActNorm) on a first dequantised batch.
  init = tff.bijectors.dequantize(x_train[:256].numpy().astype(np.int32), BINS, seed=seed)
  dist.log_prob(init)
  variables = dist.trainable_variables
  num_params = int(sum(np.prod(v.shape) for v in variables))
  bpd_init = test_bits_per_dim(dist, u_test)
  opt = tf.keras.optimizers.Adam(lr)
  n = int(x_train.shape[0])

  def loss_fn(i):  # a fresh batch and fresh dequantisation noise per step, in the graph
    seeds = tf.stack([tf.cast(i, tf.int32), tf.constant(seed, tf.int32)])
    idx = tf.random.stateless_uniform([batch], seeds, maxval=n, dtype=tf.int32)
    x = tf.gather(x_train, idx)
    u = x + tf.random.stateless_uniform(tf.shape(x), seeds + 1)
    return tff.train.negative_log_likelihood(dist, u)

  step = tff.train.make_train_step(loss_fn, opt, variables, jit_compile=True)

  t0 = time.perf_counter()
  float(step(tf.constant(0)))  # compile
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for i in range(1, steps):
    loss = step(tf.constant(i))
  final_loss = float(loss)
  train_s = time.perf_counter() - t0
  return {
      "flow": name, "params": num_params, "steps": steps, "batch": batch, "lr": lr,
      "test_bits_per_dim_init": bpd_init,
      "test_bits_per_dim": test_bits_per_dim(dist, u_test),
      "final_train_loss_nats": final_loss,
      "train_images_per_s": (steps - 1) * batch / train_s,
      "compile_s": compile_s, "train_s": train_s,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="smoke run (few steps)")
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--lr", type=float, default=1e-3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--flows", default=",".join(FLOWS), help="comma-separated subset")
  args = parser.parse_args()
  steps = 20 if args.quick else args.steps
  x_train, x_test = tff.datasets.digits(seed=args.seed)
  u_test = tff.bijectors.dequantize(x_test, BINS, seed=123)
  rows = []
  for name in args.flows.split(","):
    row = run_one(name, x_train, u_test, steps, args.batch, args.lr, args.seed)
    rows.append(row)
    print(f"  {name}: {row['test_bits_per_dim']:.3f} bits/dim", flush=True)

  ref = next((r for r in rows if r["flow"] == "tfp_glow"), None)
  print(f"\nDigits 8x8 (17 levels), {steps} Adam steps (lr {args.lr}), batch {args.batch}; "
        f"{len(x_train)} train / {len(x_test)} test images")
  print(f"{'flow':<12} {'params':>8} {'bits/dim init':>14} {'test bits/dim':>14} "
        f"{'images/s':>10} {'speed vs TFP Glow':>18}")
  for r in rows:
    ratio = (f"{r['train_images_per_s'] / ref['train_images_per_s']:.2f}x" if ref else "-")
    print(f"{r['flow']:<12} {r['params']:>8} {r['test_bits_per_dim_init']:>14.3f} "
          f"{r['test_bits_per_dim']:>14.3f} {r['train_images_per_s']:>10.0f} {ratio:>18}")
  os.makedirs(RESULTS, exist_ok=True)
  out = os.path.join(RESULTS, "digits_quick.json" if args.quick else "digits.json")
  with open(out, "w") as f:
    json.dump({"benchmark": "digits", "date": datetime.datetime.now().isoformat(),
               "machine": platform.platform(), "cpu_count": os.cpu_count(),
               "tensorflow": tf.__version__, "tfp": tfp.__version__,
               "bits_per_dim": "mean -log p(u) / (64 ln 2), u = x + U[0,1)^64 in [0, 17)^64",
               "rows": rows}, f, indent=2)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
