"""Image flows on real 28x28 images (MNIST): bits/dim at a fixed budget, speed, memory, samples.

Every family is a density on dequantised pixels under the same preprocessing,
``Chain([Dequantize(256), Logit(0.05), flow])``, trained by maximum likelihood (Adam ``--lr``,
batch ``--batch``, fresh uniform dequantisation noise every step, gradients of the bits/dim
loss clipped to global norm ``--clip``, the same for every family: without it one unusual
batch can set any of these flows back by bits/dim, see docs/images.md) on the first 7,000
images of ``--data`` and evaluated on the next 1,000 (one fixed noise draw):

    test bits/dim = mean over test images of -log p(u) / (784 ln 2),   u = x + U[0, 1)^784

an upper bound on the discrete test NLL in bits per pixel (a uniform model scores 8).

Families (``--families``):

* ``realnvp``: ``tff.flows.realnvp([28, 28, 1])``, multi-scale (2 scales, 3 couplings per
  mask block, 64-channel ConvResNets with one residual block of 1x1 convolutions,
  checkerboard couplings in the squeezed layout, the default sigmoid scale with
  offset -1, ActNorm);
* ``masked_conv``: ``tff.flows.masked_conv([28, 28, 1], num_layers=4, hidden_units=16)``
  (MintNet-style; sampling by fixed-point iteration);
* ``glow``: ``tff.flows.glow([28, 28, 1], num_levels=2, num_steps=4, hidden_units=64)``;
* ``rbig``: ``tff.flows.rbig`` on the flattened logit-space training images (4 layers of 16
  logistics per pixel, fixed PCA rotations), fitted without gradient steps (the fit counts
  against the wall-clock budget), then its marginal layers refined by maximum likelihood for
  the rest of the budget;
* ``tfp_glow``: TFP's ``tfb.Glow`` (2 blocks x 4 steps, ``GlowDefaultNetwork`` with 64
  channels), the reference.

Two budgets: the same wall clock for every family (``--budget_seconds``; compilation and
evaluation excluded) and the same number of steps (``--steps``). Each family runs in its own
process, so its peak memory (resident set size, or the GPU allocator's peak on a GPU) is its
own. Training images/s are also measured by interleaved timing of all families' training
steps in one process (``--speed``), which keeps the ratios fair when other processes load the
machine. Sampling: seconds for 64 images (second call of a compiled ``sample``); a grid of the
samples is written to ``benchmarks/results/images_samples_<family>.png``.

The step functions use ``tf.function`` without XLA on a CPU (``--jit auto``): XLA's CPU
convolutions ran 1.5-3.4x slower than TensorFlow's oneDNN kernels here (benchmarks/README.md);
on a GPU ``auto`` compiles with XLA. The script is device-agnostic: the same command runs on a
GPU machine.

    python benchmarks/bench_images.py --data PATH                # speed, then both budgets
    python benchmarks/bench_images.py --data PATH --quick        # smoke run (seconds)
    python benchmarks/bench_images.py --families realnvp,tfp_glow --budget_seconds 180 \\
        --steps 0                                                # one comparison, time only
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import numpy as np  # noqa: E402

FAMILIES = ("realnvp", "masked_conv", "glow", "rbig", "tfp_glow")
SHAPE = [28, 28, 1]
D = 784
BINS = 256
N_TRAIN, N_TEST = 7000, 1000


def _tf():
  import tensorflow as tf  # noqa: F401 (imported lazily: the parent process stays light)
  import tensorflow_probability as tfp
  import tfp_flows as tff
  return tf, tfp, tff


def load(path):
  images = _common.load_mnist(path)
  if images.shape[1:] != (28, 28) or len(images) < N_TRAIN + N_TEST:
    raise SystemExit(f"{path}: expected at least {N_TRAIN + N_TEST} images [N, 28, 28], got "
                     f"{images.shape}")
  images = images[..., None].astype(np.int32)
  return images[:N_TRAIN], images[N_TRAIN:N_TRAIN + N_TEST]


CONFIGS = {  # builder arguments of our families (``--config`` overrides them)
    "realnvp": dict(num_layers=3, num_scales=2, hidden_units=64, num_blocks=1,
                    hidden_kernel_size=1),
    "masked_conv": dict(num_layers=4, hidden_units=16),
    "glow": dict(num_levels=2, num_steps=4, hidden_units=64),
    "rbig": dict(num_layers=4, num_components=16, rotation="pca"),
}


def build(family, x_train, seed, quick, config=None):
  """(distribution, data shape of one event) of a family."""
  tf, tfp, tff = _tf()
  tfb, tfd = tfp.bijectors, tfp.distributions
  pre = [tff.bijectors.Dequantize(BINS), tff.bijectors.Logit(0.05)]
  kwargs = dict(CONFIGS.get(family, {}), **(config or {}))
  if quick and family in ("realnvp", "masked_conv", "glow"):
    kwargs["hidden_units"] = 8
  if family == "realnvp":
    flow = tff.flows.realnvp(SHAPE, seed=seed, **kwargs)
  elif family == "masked_conv":
    flow = tff.flows.masked_conv(SHAPE, seed=seed, **kwargs)
  elif family == "glow":
    flow = tff.flows.glow(SHAPE, seed=seed, **kwargs)
  elif family == "tfp_glow":
    hidden = 8 if quick else 64
    flow = tfb.Glow(output_shape=SHAPE, num_glow_blocks=2, num_steps_per_block=4,
                    coupling_bijector_fn=lambda s: tfb.GlowDefaultNetwork(s, num_hidden=hidden),
                    exit_bijector_fn=tfb.GlowDefaultExitNetwork, seed=seed)
    base = tfd.Sample(tfd.Normal(0., 1.), [D])  # TFP's Glow maps a flat latent to the image
    return tfd.TransformedDistribution(base, tfb.Chain(pre + [flow])), SHAPE
  elif family == "rbig":
    u = tff.bijectors.dequantize(x_train.reshape(len(x_train), D), BINS, seed=seed)
    logits = tfb.Chain(pre).inverse(u)
    if quick:
      kwargs.update(num_layers=2, num_components=4)
    flow = tff.flows.rbig(logits, seed=seed, **kwargs)
    base = tfd.Sample(tfd.Normal(0., 1.), [D])
    return tfd.TransformedDistribution(base, tfb.Chain(pre + [flow])), [D]
  else:
    raise SystemExit(f"unknown family {family!r}; choose from {FAMILIES}")
  return tff.flows.distribution(tfb.Chain(pre + [flow]), SHAPE, dtype=tf.float32), SHAPE


def make_step(dist, x_train, shape, batch, lr, seed, jit, clip=None):
  """A compiled training step ``step(i) -> loss`` (bits/dim) drawing its own batch and noise;
  gradients of the bits/dim loss clipped to global norm ``clip`` (None: no clipping)."""
  tf, _, tff = _tf()
  import keras
  variables = dist.trainable_variables
  optimizer = keras.optimizers.Adam(lr, global_clipnorm=clip or None)
  data = tf.constant(x_train.reshape([len(x_train)] + list(shape)), tf.float32)
  n = len(x_train)

  @tf.function(jit_compile=jit, autograph=False)
  def step(i):
    seeds = tf.stack([tf.cast(i, tf.int32), tf.constant(seed, tf.int32)])
    idx = tf.random.stateless_uniform([batch], seeds, maxval=n, dtype=tf.int32)
    x = tf.gather(data, idx)
    u = x + tf.random.stateless_uniform(tf.shape(x), seeds + 1)
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tff.bijectors.bits_per_dim(dist.log_prob(u), D))
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  return step


def test_bits_per_dim(dist, u_test):
  _, _, tff = _tf()
  lp = tff.train.batched_log_prob(dist, u_test, batch_size=250)
  return float(np.mean(tff.bijectors.bits_per_dim(lp, D)))


def peak_memory_mb():
  """This process's peak memory: the GPU allocator's peak, else the resident set's high-water
  mark ``VmHWM`` (Linux; reset by ``exec``, unlike ``ru_maxrss``, which a worker inherits
  from the parent that forked it -- it reported the parent's size for every family)."""
  tf, _, _ = _tf()
  if tf.config.list_physical_devices("GPU"):
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 2**10  # kB
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux: kilobytes


def use_jit(flag):
  tf, _, _ = _tf()
  if flag == "auto":
    return bool(tf.config.list_physical_devices("GPU"))
  return flag == "on"


def save_grid(samples, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  images = np.clip(np.asarray(samples).reshape(-1, 28, 28), 0., BINS - 1.) / (BINS - 1.)
  n = int(np.ceil(np.sqrt(len(images))))
  grid = np.ones((n * 29, n * 29))
  for k, img in enumerate(images):
    r, c = divmod(k, n)
    grid[r * 29:r * 29 + 28, c * 29:c * 29 + 28] = img
  plt.imsave(path, grid, cmap="gray", vmin=0., vmax=1.)


def worker(args):
  """One family, one budget, in this process; writes a JSON row to ``args.out``."""
  tf, _, tff = _tf()
  tf.keras.utils.set_random_seed(args.seed)
  x_train, x_test = load(args.data)
  if args.quick:
    x_train, x_test = x_train[:512], x_test[:100]
  u_test = tff.bijectors.dequantize(x_test, BINS, seed=123).numpy()
  t0 = time.perf_counter()
  dist, shape = build(args.worker, x_train, args.seed, args.quick, args.config)
  fit_s = time.perf_counter() - t0 if args.worker == "rbig" else 0.
  if args.worker != "rbig":  # data-dependent init (ActNorm) on a first dequantised batch
    dist.log_prob(tff.bijectors.dequantize(x_train[:256], BINS, seed=args.seed)
                  .numpy().reshape([-1] + shape))
  u_test = u_test.reshape([-1] + shape)
  params = int(sum(np.prod(v.shape) for v in dist.trainable_variables))
  bpd_start = test_bits_per_dim(dist, u_test)
  step = make_step(dist, x_train, shape, args.batch, args.lr, args.seed, use_jit(args.jit),
                   args.clip)
  t0 = time.perf_counter()
  float(step(tf.constant(0)))
  compile_s = time.perf_counter() - t0
  budget = args.budget_seconds - fit_s if args.mode == "time" else np.inf
  max_steps = args.steps if args.mode == "steps" else 10**9
  losses, steps, train_s = [], 1, 0.
  t0 = time.perf_counter()
  while steps < max_steps and train_s < budget:
    loss = step(tf.constant(steps))
    steps += 1
    if steps % 10 == 0 or steps >= max_steps:
      losses.append(float(loss))  # waits for the step
      train_s = time.perf_counter() - t0
  train_s = time.perf_counter() - t0
  sample = tf.function(lambda: dist.sample(64, seed=tf.constant([1, 2])), autograph=False)
  t0 = time.perf_counter()
  samples = sample().numpy()
  sample_first_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  samples = sample().numpy()
  sample_s = time.perf_counter() - t0
  name = (f"images_samples_{args.worker}{'_quick' if args.quick else ''}"
          f"{'_' + args.tag if args.tag else ''}.png")
  os.makedirs(_common.RESULTS, exist_ok=True)
  save_grid(samples, os.path.join(_common.RESULTS, name))
  row = {
      "family": args.worker, "mode": args.mode, "params": params, "steps": steps,
      "batch": args.batch, "lr": args.lr, "clip": args.clip, "jit": use_jit(args.jit),
      "test_bpd_start": bpd_start, "test_bpd": test_bits_per_dim(dist, u_test),
      "train_images_per_s": (steps - 1) * args.batch / train_s if train_s else None,
      "train_s": train_s, "fit_s": fit_s, "compile_s": compile_s,
      "sample_64_s": sample_s, "sample_64_first_call_s": sample_first_s,
      "samples_finite": bool(np.isfinite(samples).all()), "peak_memory_mb": peak_memory_mb(),
      "loss_every_10_steps": losses, "samples_png": name,
  }
  with open(args.out, "w") as f:
    json.dump(_common._strict(row), f)  # pylint: disable=protected-access


def speed(args, families):
  """Interleaved timing of every family's training step on the same batches, one process."""
  tf, _, tff = _tf()
  x_train, _ = load(args.data)
  if args.quick:
    x_train = x_train[:512]
  steps = {}
  for family in families:
    dist, shape = build(family, x_train, args.seed, args.quick, args.config)
    if family != "rbig":
      dist.log_prob(tff.bijectors.dequantize(x_train[:256], BINS, seed=args.seed)
                    .numpy().reshape([-1] + shape))
    steps[family] = make_step(dist, x_train, shape, args.batch, args.lr, args.seed,
                              use_jit(args.jit), args.clip)
  counter = iter(range(10**9))
  times = _common.interleaved_times(
      {f: (lambda s=s: s(tf.constant(next(counter)))) for f, s in steps.items()},
      calls=2 if args.quick else 5, rounds=3 if args.quick else 9)
  return {f: args.batch / t for f, t in times.items()}


def run_worker(args, family, mode):
  with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
    out = f.name
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", family, "--mode", mode,
         "--out", out, "--data", args.data, "--budget_seconds", str(args.budget_seconds),
         "--steps", str(args.steps), "--batch", str(args.batch), "--lr", str(args.lr),
         "--seed", str(args.seed), "--jit", args.jit, "--clip", str(args.clip),
         "--tag", args.tag] + (
             ["--quick"] if args.quick else [])
  if args.config:
    cmd += ["--config", json.dumps(args.config)]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode != 0:
    print(proc.stderr[-3000:], file=sys.stderr)
    raise SystemExit(f"{family} ({mode}) failed with exit code {proc.returncode}")
  with open(out) as f:
    row = json.load(f)
  os.remove(out)
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data", default=_common.DEFAULT_MNIST,
                      help="npz with key 'images' (uint8 [N, 28, 28])")
  parser.add_argument("--families", default=",".join(FAMILIES))
  parser.add_argument("--budget_seconds", type=float, default=600.)
  parser.add_argument("--steps", type=int, default=1000, help="step budget (0: skip)")
  parser.add_argument("--no_speed", action="store_true", help="skip the interleaved timing")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--lr", type=float, default=1e-3)
  parser.add_argument("--clip", type=float, default=10.,
                      help="global gradient-norm clip of the bits/dim loss, every family (0: off)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--jit", choices=("auto", "on", "off"), default="auto")
  parser.add_argument("--quick", action="store_true", help="smoke run: tiny models, seconds")
  parser.add_argument("--config", type=json.loads, default=None,
                      help="JSON dict of builder arguments overriding CONFIGS for our families "
                           "(e.g. '{\"num_blocks\": 0}'); use with one family")
  parser.add_argument("--tag", default="", help="suffix of the results file name")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  parser.add_argument("--mode", choices=("time", "steps"), help=argparse.SUPPRESS)
  parser.add_argument("--out", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    return worker(args)
  if args.quick:
    args.budget_seconds, args.steps = 5., 5
  families = args.families.split(",")
  unknown = set(families) - set(FAMILIES)
  if unknown:
    raise SystemExit(f"unknown families {sorted(unknown)}; choose from {FAMILIES}")
  load(args.data)  # fail early on a bad path
  env = _common.environment()
  print(_common.header_line(env), flush=True)
  results = {"budget_seconds": args.budget_seconds, "steps": args.steps, "batch": args.batch,
             "lr": args.lr, "clip": args.clip, "families": families}
  if not args.no_speed:
    ips = speed(args, families)
    results["interleaved_images_per_s"] = ips
    ref = ips.get("tfp_glow")
    _common.table(["family", "train images/s", "vs TFP Glow"],
                  [[f, v, v / ref if ref else None] for f, v in ips.items()],
                  title="Training speed, interleaved timing in one process")
  for mode, on in (("time", args.budget_seconds > 0), ("steps", args.steps > 0)):
    if not on:
      continue
    rows = []
    for family in families:
      rows.append(run_worker(args, family, mode))
      r = rows[-1]
      print(f"  {family} ({mode}): {r['test_bpd']:.3f} bits/dim after {r['steps']} steps",
            flush=True)
    results[f"{mode}_budget"] = rows
    budget = (f"{args.budget_seconds:g} s of training" if mode == "time"
              else f"{args.steps} steps")
    _common.table(
        ["family", "params", "steps", "test bits/dim", "train images/s", "sample 64 (s)",
         "peak memory (MB)", "rbig fit (s)"],
        [[r["family"], r["params"], r["steps"], r["test_bpd"], r["train_images_per_s"],
          r["sample_64_s"], r["peak_memory_mb"], r["fit_s"] or None] for r in rows],
        title=f"MNIST 28x28, {budget}, batch {args.batch}, Adam {args.lr}, "
              f"gradient clip {args.clip or 'off'}")
  if args.config:
    results["config"] = args.config
  name = "images_quick" if args.quick else "images"
  _common.write_results(name + (f"_{args.tag}" if args.tag else ""), results, env)


if __name__ == "__main__":
  main()
