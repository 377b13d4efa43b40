"""Masked-convolution flows: inverse (sampling) iterations, sampling vs density time, images/s.

For 8x8x1 (scikit-learn's digits) and 28x28x1 (the same digits upsampled bilinearly to 28x28)
images, one ``tff.flows.masked_conv`` flow (``--layers`` layers of LinearMaskedConv2D +
MaskedConv2D, ``--hidden`` hidden channels) is trained for ``--steps`` Adam steps
(``--steps-large`` for 28x28) by maximum
likelihood on dequantised, logit-transformed pixels (``lambda = 0.05``), so that the sampling
solve is measured on trained weights, not the near-identity initialisation. Then:

* iterations: each MintNet block's fixed-point solve (``MaskedConv2D.solve_forward``) at
  tolerance 1e-5 (relative step ``|y_k+1 - y_k| <= 1e-5 (1 + |y|)``), for a batch of latent
  samples ``z ~ N(0, I)`` passed through the flow block by block; mean / max over blocks for the
  "newton" (Jacobian-diagonal) and "chord" (diagonal-bound) preconditioners, with the
  reconstruction error ``max |inverse(forward(z)) - z|``;
* time: ``forward`` (sampling: fixed-point solves and triangular solves) relative to
  ``inverse`` + log-det (the explicit density direction), both under ``tf.function``;
* training images/s: ``tf.function`` steps of ``log_prob`` + gradient + Adam (``--jit`` for
  XLA; on CPU here XLA's convolutions were slower than TensorFlow's oneDNN kernels).

TFP reference in the same run: ``tfb.MaskedAutoregressiveFlow`` (``tff.flows.maf``, MADE
with ``--maf-hidden`` units, same number of layers) on the flattened images, whose sampling
needs one network pass per pixel: its sampling/density time ratio and training images/s.

    python benchmarks/bench_masked_conv.py            # full run
    python benchmarks/bench_masked_conv.py --quick    # smoke run
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
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
LAMBDA = 0.05
TOLERANCE = 1e-5


def digits(size, seed=0):
  """Dequantised digits in logit space, ``[N, size, size, 1]`` float32."""
  from sklearn.datasets import load_digits
  images = load_digits().images.astype(np.float32)[..., None]  # 0..16
  if size != 8:
    images = tf.image.resize(images, [size, size], method="bilinear").numpy()
  u = (images + np.random.default_rng(seed).uniform(size=images.shape)) / 17.
  p = LAMBDA + (1. - 2. * LAMBDA) * u
  return np.log(p / (1. - p)).astype(np.float32)


def count_params(flow):
  return int(sum(np.prod(v.shape) for v in flow.trainable_variables))


def train(dist, variables, data, steps, batch, lr, seed, jit):
  """Adam steps under ``tf.function`` (XLA if ``jit``); returns (images/s, last loss)."""
  optimizer = tf.optimizers.Adam(lr)

  step = tff.train.make_ml_step(dist, optimizer, variables=variables, jit_compile=jit)

  rng = np.random.default_rng(seed)
  batches = [tf.constant(data[rng.choice(len(data), batch, replace=False)])
             for _ in range(steps)]
  step(batches[0])  # compile
  start = time.perf_counter()
  for x in batches:
    loss = step(x)
  loss = float(loss)
  return steps * batch / (time.perf_counter() - start), loss


def best_time(fn, arg, repeats):
  fn(arg)  # trace
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy(), fn(arg))
    times.append(time.perf_counter() - start)
  return min(times)


def sampling_vs_density(flow, x_data, z, repeats):
  density = tf.function(lambda y: (flow.inverse(y), flow.inverse_log_det_jacobian(y, 3)))
  sampling = tf.function(lambda t: flow.forward(t))
  t_density = best_time(density, x_data, repeats)
  t_sampling = best_time(sampling, z, repeats)
  return t_sampling, t_density


def block_iterations(flow, z, solver):
  """Per-block fixed-point iterations at TOLERANCE, walking the chain in sampling order."""
  iterations, converged, current = [], True, z
  for bij in reversed(flow.bijectors):  # Chain.forward applies the last bijector first
    if isinstance(bij, tff.bijectors.MaskedConv2D):
      res = bij.solve_forward(current, tolerance=TOLERANCE, max_iterations=1000, solver=solver)
      iterations.append(int(res.num_iterations))
      converged &= bool(tf.reduce_all(res.converged))
      current = res.solution
    else:
      current = bij.forward(current)
  error = float(tf.reduce_max(tf.abs(flow.inverse(tf.constant(current.numpy())) - z)))
  return iterations, converged, error


def run_size(size, args):
  shape = [size, size, 1]
  data = digits(size)
  x_eval = tf.constant(data[:args.batch])
  z = tf.random.stateless_normal([args.batch] + shape, seed=[3, 4])
  rows = []

  flow = tff.flows.masked_conv(shape, num_layers=args.layers, hidden_units=args.hidden,
                               seed=0)
  dist = tff.flows.distribution(flow, shape)
  steps = args.steps if size <= 8 else args.steps_large
  ips, loss = train(dist, flow.trainable_variables, data, steps, args.batch, args.lr, 0,
                    args.jit)
  t_s, t_d = sampling_vs_density(flow, x_eval, z, args.repeats)
  row = {"image": f"{size}x{size}x1", "flow": "masked_conv", "params": count_params(flow),
         "train_steps": steps, "final_train_nll_nats": loss, "train_images_per_s": ips,
         "sampling_s": t_s, "density_s": t_d, "sampling_over_density": t_s / t_d}
  for solver in ("newton", "chord"):
    its, ok, err = block_iterations(flow, z, solver)
    row[f"{solver}_iterations"] = its
    row[f"{solver}_iterations_mean"] = float(np.mean(its))
    row[f"{solver}_iterations_max"] = int(np.max(its))
    row[f"{solver}_converged"] = ok
    row[f"{solver}_reconstruction_error"] = err
  rows.append(row)

  d = size * size
  maf = tff.flows.maf([d], num_layers=args.layers, hidden_units=[args.maf_hidden], seed=0)
  maf_dist = tff.flows.distribution(maf, [d])
  flat = data.reshape(len(data), d)
  ips, loss = train(maf_dist, maf.trainable_variables, flat, steps, args.batch, args.lr, 0,
                    args.jit)
  density = tf.function(lambda y: maf_dist.log_prob(y))
  sampling = tf.function(lambda t: maf.forward(t))
  t_d = best_time(density, tf.constant(flat[:args.batch]), args.repeats)
  t_s = best_time(sampling, tf.reshape(z, [args.batch, d]), max(1, args.repeats // 2))
  rows.append({"image": f"{size}x{size}x1", "flow": "tfp_maf", "params": count_params(maf),
               "train_steps": steps, "final_train_nll_nats": loss,
               "train_images_per_s": ips, "sampling_s": t_s, "density_s": t_d,
               "sampling_over_density": t_s / t_d, "newton_iterations_mean": float(d),
               "newton_iterations_max": d})
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="fast smoke run")
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--steps-large", type=int, default=30, help="steps for 28x28")
  parser.add_argument("--lr", type=float, default=1e-3)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--hidden", type=int, default=32)
  parser.add_argument("--maf-hidden", type=int, default=512)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--jit", action="store_true", help="XLA-compile the training steps")
  parser.add_argument("--sizes", type=int, nargs="+", default=[8, 28])
  args = parser.parse_args()
  if args.quick:
    args.steps, args.layers, args.hidden, args.maf_hidden, args.repeats = 20, 2, 8, 64, 2
    args.steps_large = 5
    args.batch = 16

  rows = []
  for size in args.sizes:
    rows += run_size(size, args)

  header = (f"{'image':>8} {'flow':>12} {'params':>8} {'train img/s':>11} "
            f"{'sample/density':>14} {'newton it mean/max':>18} {'chord it mean/max':>17} "
            f"{'recon err':>9}")
  print(header)
  for r in rows:
    chord = (f"{r['chord_iterations_mean']:.1f}/{r['chord_iterations_max']}"
             if "chord_iterations_mean" in r else "-")
    newton = f"{r['newton_iterations_mean']:.1f}/{r['newton_iterations_max']}"
    if r["flow"] == "tfp_maf":
      newton = f"{r['newton_iterations_max']} passes"
    err = r.get("newton_reconstruction_error")
    print(f"{r['image']:>8} {r['flow']:>12} {r['params']:>8} {r['train_images_per_s']:>11.0f} "
          f"{r['sampling_over_density']:>14.1f} {newton:>18} {chord:>17} "
          f"{'-' if err is None else f'{err:.1e}':>9}")
  for size in args.sizes:
    mc, maf = [r for r in rows if r["image"] == f"{size}x{size}x1"]
    print(f"{size}x{size}: masked_conv / tfp_maf: training images/s x"
          f"{mc['train_images_per_s'] / maf['train_images_per_s']:.2f}, sampling time x"
          f"{mc['sampling_s'] / maf['sampling_s']:.2f}")

  os.makedirs(RESULTS, exist_ok=True)
  out = os.path.join(RESULTS, "masked_conv_quick.json" if args.quick else "masked_conv.json")
  with open(out, "w") as f:
    json.dump({"benchmark": "masked_conv", "date": datetime.datetime.now().isoformat(),
               "machine": platform.platform(), "cpu_count": os.cpu_count(),
               "tensorflow": tf.__version__, "tfp": tfp.__version__,
               "tolerance": TOLERANCE, "args": vars(args), "rows": rows}, f, indent=2)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
