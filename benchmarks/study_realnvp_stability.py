"""Why the image RealNVP was unstable on real 28x28 images: one factor at a time.

Every variant trains the same multi-scale RealNVP (3 couplings per mask block, 32-channel
ConvResNets with 1 residual block, 2 scales) under ``Chain([Dequantize(256), Logit(0.05),
flow])`` on real MNIST (``--data``, 7,000 train / 1,000 test images), Adam 1e-3, batch 64, the
same seed and the same batches, for ``--steps`` steps, and changes ONE thing against a
reference:

* ``old``: the previous defaults (full-resolution checkerboard couplings, ``tanh`` log-scale
  bounded by 3);
* ``tanh3``: checkerboard couplings in the squeezed layout (the speed change), ``tanh`` scale
  bounded by 3 -- the reference for the single-factor variants below;
* ``tanh1``: ``tanh`` bound 1 (scale parameterisation);
* ``sigmoid``: Glow's bounded ``sigmoid`` scale (scale parameterisation): a coupling expands
  the data -> latent direction by at most 13.5 % (offset 2);
* ``sigmoid0``: the same with offset 0 (expansion up to 2x per coupling; the builder's
  default is offset -1, ``sigmoid-1``: 3.7x);
* ``warmup``: linear learning-rate warm-up over 200 steps (learning-rate warm-up);
* ``no_data_init``: ActNorms start at the identity instead of the first batch's statistics;
* ``no_actnorm``: no ActNorm at all (data init and its placement);
* ``no_logit``: pixels scaled to ``[-0.5, 0.5)`` instead of RealNVP's logit (preprocessing);
* ``random_output``: conditioners' output layers start random (``N(0, 0.1 / fan_in)``)
  instead of zero (conditioner init);
* ``clip``: gradients clipped to global norm 10 (of the bits/dim loss);
* ``sigmoid0_clip``: ``sigmoid0`` with that clipping;
* ``tanh<b>`` / ``sigmoid<a>`` (e.g. ``tanh2``, ``sigmoid-2``): any bound or offset, and
  ``+clip`` / ``+warmup`` after any variant (``sigmoid-2+clip``).

Reported per variant: bits/dim at initialisation (test), the largest rise of the training
loss above its running minimum ("spike", bits/dim), the number of steps more than 0.5
bits/dim above the running minimum, median and max global gradient norm (of the mean
bits/dim loss), mean training loss over the last 50 steps, test bits/dim at the end and the
worst test image's bits/dim (how far one unexpected image lands). ``--seeds`` repeats every
variant with other initial weights and batch orders; the table then shows the mean over seeds
and the worst seed's spike.

    python benchmarks/study_realnvp_stability.py                 # all variants, 400 steps
    python benchmarks/study_realnvp_stability.py --quick         # smoke run
    python benchmarks/study_realnvp_stability.py --variants tanh3,sigmoid --seeds 0,1,2
"""

import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

import tfp_flows as tff  # noqa: E402

tfb = tfp.bijectors
tfd = tfp.distributions
SHAPE = [28, 28, 1]
D = 784
VARIANTS = ("old", "tanh3", "tanh1", "sigmoid", "sigmoid0", "warmup", "no_data_init",
            "no_actnorm", "no_logit", "random_output", "clip", "sigmoid0_clip")


def parse(variant):
  """``variant`` -> (base name, builder overrides, clip, warm-up steps).

  A named variant (``VARIANTS``) or a scale spec ``tanh<b>`` / ``sigmoid<a>`` (e.g. ``tanh2``,
  ``sigmoid-2``), each optionally followed by ``+clip`` (global norm 10) and ``+warmup``
  (200 steps).
  """
  base, *flags = variant.split("+")
  unknown = {f for f in flags if f not in ("clip", "latent", "data")
             and not re.fullmatch(r"warmup[0-9]*", f)}
  clip = 10. if "clip" in flags or base in ("clip", "sigmoid0_clip") else None
  warm = 200 if base == "warmup" else 0
  for f in flags:
    if f.startswith("warmup"):
      warm = int(f[6:] or 200)
  kw = {}
  if base == "old":
    kw["squeezed_checkerboard"] = False
  elif base == "tanh1":
    kw["log_scale_bound"] = 1.
  elif base == "sigmoid":
    kw.update(scale="sigmoid", scale_offset=2.)
  elif base in ("sigmoid0", "sigmoid0_clip"):
    kw.update(scale="sigmoid", scale_offset=0.)
  elif base == "no_actnorm":
    kw["actnorm"] = False
  elif re.fullmatch(r"tanh[0-9.]+", base):
    kw["log_scale_bound"] = float(base[4:])
  elif re.fullmatch(r"sigmoid-?[0-9.]+", base):
    kw.update(scale="sigmoid", scale_offset=float(base[7:]))
  elif base not in VARIANTS:
    unknown.add(base)
  if "latent" in flags or "data" in flags:
    kw["latent_shift"] = "latent" in flags
  if unknown:
    raise SystemExit(f"unknown variant parts {sorted(unknown)} in {variant!r}; named variants "
                     f"{VARIANTS} or tanh<bound> / sigmoid<offset>, then +clip / +warmup[N]")
  return base, kw, clip, warm


def build(variant, seed):
  base, overrides, _, _ = parse(variant)
  kw = dict(num_layers=3, hidden_units=32, num_blocks=1, num_scales=2, seed=seed,
            scale="tanh", log_scale_bound=3., latent_shift=False)
  kw.update(overrides)
  flow = tff.flows.realnvp(SHAPE, **kw)
  if base == "no_data_init":
    for m in tff.core.pending_data_init(flow):
      m.initialized.assign(True)
  if base == "random_output":
    rng = np.random.default_rng(seed)
    for m in flow.submodules:
      if isinstance(m, tff.nets.ConvResNet):
        k = m.out.kernel
        fan_in = int(np.prod(k.shape[:3]))
        k.assign(rng.normal(0., 0.1 / fan_in, k.shape).astype(np.float32))
  pre = (tfb.Shift(0.5) if base == "no_logit" else tff.bijectors.Logit(0.05))
  chain = tfb.Chain([tff.bijectors.Dequantize(256), pre, flow])
  return tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0., 1.), SHAPE), chain)


def test_bpd(dist, u_test):
  """(mean, worst) test bits/dim."""
  bpd = tff.bijectors.bits_per_dim(tff.train.batched_log_prob(dist, u_test, batch_size=500), D)
  return float(np.mean(bpd)), float(np.max(bpd))


def run(variant, x_train, u_test, steps, seed):
  tf.keras.utils.set_random_seed(seed)
  dist = build(variant, seed)
  init_batch = tff.bijectors.dequantize(x_train[:256], 256, seed=seed)
  dist.log_prob(init_batch)  # data-dependent init (ActNorm) on one batch
  bpd_init = test_bpd(dist, u_test)[0]
  variables = dist.trainable_variables
  opt = tf.keras.optimizers.Adam(1e-3)
  _, _, clip, warm = parse(variant)
  xtr = tf.constant(x_train, tf.float32)
  n = len(x_train)

  @tf.function(autograph=False)
  def step(i):
    seeds = tf.stack([i, tf.constant(seed)])
    idx = tf.random.stateless_uniform([64], seeds, maxval=n, dtype=tf.int32)
    x = tf.gather(xtr, idx)
    u = x + tf.random.stateless_uniform(tf.shape(x), seeds + 1)
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tff.bijectors.bits_per_dim(dist.log_prob(u), D))
    grads = tape.gradient(loss, variables)
    norm = tf.linalg.global_norm(grads)
    if clip:
      grads, _ = tf.clip_by_global_norm(grads, clip)
    if warm:
      opt.learning_rate.assign(1e-3 * tf.minimum(1., tf.cast(i + 1, tf.float32) / warm))
    opt.apply_gradients(zip(grads, variables))
    return loss, norm

  losses, norms = [], []
  t0 = time.perf_counter()
  for i in range(steps):
    loss, norm = step(tf.constant(i))
    losses.append(float(loss))
    norms.append(float(norm))
  seconds = time.perf_counter() - t0
  losses, norms = np.array(losses), np.array(norms)
  rise = losses[1:] - np.minimum.accumulate(losses)[:-1]
  return {
      "variant": variant, "steps": steps, "test_bpd_init": bpd_init,
      "max_spike_bpd": float(rise.max()), "steps_above_min_0.5": int((rise > 0.5).sum()),
      "grad_norm_median": float(np.median(norms)), "grad_norm_max": float(norms.max()),
      "train_bpd_last50": float(np.mean(losses[-50:])), "seconds": seconds,
      **dict(zip(("test_bpd", "worst_test_image_bpd"), test_bpd(dist, u_test))),
      "seed": seed, "losses": losses.tolist(), "grad_norms": norms.tolist(),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data", default=_common.DEFAULT_MNIST, help="npz with key 'images'")
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--tag", default="", help="suffix of the results file name")
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--seeds", default="0", help="comma-separated seeds")
  parser.add_argument("--quick", action="store_true", help="smoke run: 20 steps, 2 variants")
  args = parser.parse_args()
  variants = ["tanh3", "sigmoid"] if args.quick else args.variants.split(",")
  for v in variants:
    parse(v)  # fail early on a bad name
  steps = 20 if args.quick else args.steps
  env = _common.environment()
  print(_common.header_line(env))
  images = _common.load_mnist(args.data)[..., None].astype(np.int32)
  x_train, x_test = images[:7000], images[7000:8000]
  u_test = tff.bijectors.dequantize(x_test, 256, seed=123).numpy()
  seeds = [int(s) for s in args.seeds.split(",")]
  rows = []
  for seed in seeds:
    for v in variants:
      r = run(v, x_train, u_test, steps, seed)
      rows.append(r)
      print(f"  {v} (seed {seed}): spike {r['max_spike_bpd']:.3g}, test {r['test_bpd']:.3f} "
            f"bits/dim, worst image {r['worst_test_image_bpd']:.3g} ({r['seconds']:.0f} s)",
            flush=True)
  summary = []
  for v in variants:
    rs = [r for r in rows if r["variant"] == v]
    mean = lambda key: float(np.mean([r[key] for r in rs]))  # noqa: E731
    summary.append([v, len(rs), mean("test_bpd_init"), max(r["max_spike_bpd"] for r in rs),
                    mean("steps_above_min_0.5"), mean("grad_norm_median"),
                    max(r["grad_norm_max"] for r in rs), mean("train_bpd_last50"),
                    mean("test_bpd"), max(r["worst_test_image_bpd"] for r in rs)])
  _common.table(
      ["variant", "seeds", "bits/dim at init", "max spike (bits/dim)", "steps > 0.5 above min",
       "grad norm median", "grad norm max", "train bits/dim (last 50)", "test bits/dim",
       "worst test image (bits/dim)"], summary,
      title=f"Image RealNVP stability on MNIST 28x28, {steps} Adam steps (lr 1e-3, batch 64); "
            "means over seeds, maxima for spikes and worst cases")
  name = "realnvp_stability_quick" if args.quick else "realnvp_stability"
  _common.write_results(name + (f"_{args.tag}" if args.tag else ""),
                        {"steps": steps, "seeds": seeds, "rows": rows}, env)


if __name__ == "__main__":
  main()
