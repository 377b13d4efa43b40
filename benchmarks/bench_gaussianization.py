"""Gaussianization flows vs RealNVP vs MAF, same run, same budget (issue 6).

* Toy densities with exact log-probs (``8gaussians``, ``checkerboard``):
  ``KL(data || model) = mean(log p_data(x) - log q(x))`` over fresh test samples, after the
  same number of Adam steps (same batch size and learning rate) for every model; also the
  training-free RBIG fit (``tff.flows.rbig``, no gradient step) and its fit time.
* Digits (64-D, ``tff.datasets.digits``, uniform dequantisation ``v = x + u`` on the 0..17
  scale, modelled in logit space ``s = logit(0.05 + 0.9 v / 17)``): test NLL in bits/dim of
  ``v`` (pixel units, the log-det of the logit map included).
* Inverse accuracy of the fitted Gaussianization flows, float32 and float64:
  ``max |f(f^-1(x)) - x|`` over test data and ``max |f^-1(f(z)) - z|`` over N(0, I) draws
  (fresh tensors, so TFP's cache cannot answer).

The Gaussianization flow starts from its RBIG state (data-dependent init on the training
set), then trains like the others. Timings on a shared CPU are provisional.

    python benchmarks/bench_gaussianization.py            # full run (~6 min on 2 CPU cores)
    python benchmarks/bench_gaussianization.py --quick    # smoke run

Writes ``benchmarks/results/gaussianization.json`` (``gaussianization_quick.json`` with
``--quick``).
"""

import argparse
import json
import os
import time

import numpy as np
import tensorflow as tf

import tfp_flows as tff


def _train(dist, x_train, steps, batch_size, learning_rate, seed):
  """Adam on the mean NLL; projects variables that carry a constraint (MADE masks)."""
  variables = dist.trainable_variables
  opt = tf.keras.optimizers.Adam(learning_rate)
  constrained = [v for v in variables if getattr(v, "constraint", None) is not None]
  data = tf.constant(x_train)

  @tf.function
  def step(idx):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(dist.log_prob(tf.gather(data, idx)))
    opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    for v in constrained:
      v.assign(v.constraint(v))
    return loss

  rng = np.random.default_rng(seed)
  start = time.perf_counter()
  step(rng.integers(0, len(x_train), batch_size))  # trace
  trace_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(steps - 1):
    step(rng.integers(0, len(x_train), batch_size))
  return {"trace_s": trace_s, "steps_per_s": (steps - 1) / (time.perf_counter() - start)}


def _log_prob(dist, x, chunk=4096):
  fn = tf.function(dist.log_prob)
  return np.concatenate([fn(tf.constant(x[i:i + chunk])).numpy()
                         for i in range(0, len(x), chunk)])


def _models(d, cfg, x_train, dtype=tf.float32):
  start = time.perf_counter()
  gauss = tff.flows.rbig(x_train.astype(dtype.as_numpy_dtype), num_layers=cfg["g_layers"],
                         num_components=cfg["g_components"], dtype=dtype)
  rbig_s = time.perf_counter() - start
  return rbig_s, {
      "gaussianization": gauss,
      "realnvp": tff.flows.realnvp([d], num_layers=cfg["nvp_layers"],
                                   hidden_units=cfg["hidden"], dtype=dtype, seed=1),
      "maf": tff.flows.maf([d], num_layers=cfg["maf_layers"], hidden_units=cfg["hidden"],
                           dtype=dtype, seed=1),
  }


def _round_trips(flow, x, d, dtype, seed):
  np_dtype = dtype.as_numpy_dtype
  x = x.astype(np_dtype)
  z = flow.inverse(tf.constant(x)).numpy()
  x_back = flow.forward(tf.constant(np.array(z))).numpy()
  z0 = np.random.default_rng(seed).standard_normal((len(x), d)).astype(np_dtype)
  z_back = flow.inverse(tf.constant(flow.forward(tf.constant(z0)).numpy())).numpy()
  return float(np.max(np.abs(x_back - x))), float(np.max(np.abs(z_back - z0)))


def _compare(d, cfg, x_train, x_test, metric_name, metric, num_round_trip, seed):
  """Training-free rbig, then the same training budget for every model; round-trip errors.

  ``metric(log_probs) -> float`` scores a model on ``x_test``.
  """
  rbig_s, models = _models(d, cfg, x_train)
  gauss = models["gaussianization"]
  rows = {"rbig (no training)": {
      metric_name: metric(_log_prob(tff.flows.distribution(gauss, [d]), x_test)),
      "fit_s": rbig_s}}
  for model, flow in models.items():
    dist = tff.flows.distribution(flow, [d])
    timing = _train(dist, x_train, cfg["steps"], cfg["batch"], cfg["lr"], seed)
    rows[model] = {metric_name: metric(_log_prob(dist, x_test)), **timing}
  rows["accuracy"] = {}
  for dtype in (tf.float32, tf.float64):
    flow = gauss if dtype == tf.float32 else tff.flows.rbig(
        x_train.astype(np.float64), num_layers=cfg["g_layers"],
        num_components=cfg["g_components"])
    rows["accuracy"][dtype.name] = dict(zip(
        ("data_round_trip", "latent_round_trip"),
        _round_trips(flow, x_test[:num_round_trip], d, dtype, seed)))
  return rows


def bench_toy(name, cfg, seed=0):
  toy = tff.datasets.toy(name)
  x_train, x_test = toy.sample(cfg["n_train"], seed=seed), toy.sample(cfg["n_test"], seed=seed + 1)
  ref = toy.log_prob(x_test)
  return _compare(2, cfg, x_train, x_test, "kl", lambda lp: float(np.mean(ref - lp)), 2000,
                  seed)


_ALPHA = 0.05  # logit preprocessing: p = alpha + (1 - 2 alpha) v / 17 in [alpha, 1 - alpha]


def _digits(seed):
  """Dequantised digits in logit space, and log|ds/dv| per image (for bits/dim of ``v``)."""
  x_train, x_test = tff.datasets.digits(seed=seed)
  rng = np.random.default_rng(seed)

  def prep(x):
    v = x.reshape(len(x), -1) + rng.uniform(size=(len(x), 64))
    p = _ALPHA + (1. - 2. * _ALPHA) * v / 17.
    s = np.log(p) - np.log1p(-p)
    log_det = np.sum(np.log((1. - 2. * _ALPHA) / 17.) - np.log(p) - np.log1p(-p), -1)
    return s.astype(np.float32), log_det

  (s_train, _), (s_test, log_det_test) = prep(x_train), prep(x_test)
  return s_train, s_test, log_det_test


def bench_digits(cfg, seed=0):
  x_train, x_test, log_det = _digits(seed)
  bpd = lambda lp: float(-np.mean(lp + log_det) / (64 * np.log(2.)))
  return _compare(64, cfg, x_train, x_test, "bits_per_dim", bpd, 300, seed)


TOY = {"n_train": 20000, "n_test": 10000, "steps": 600, "batch": 256, "lr": 2e-3,
       "g_layers": 8, "g_components": 32, "nvp_layers": 8, "maf_layers": 4, "hidden": [64, 64]}
DIGITS = {"steps": 400, "batch": 128, "lr": 1e-3, "g_layers": 6, "g_components": 16,
          "nvp_layers": 8, "maf_layers": 4, "hidden": [128, 128]}
QUICK = {"n_train": 4000, "n_test": 2000, "steps": 30}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="smoke run (minutes -> seconds)")
  parser.add_argument("--out", default=None, help="JSON path")
  args = parser.parse_args()
  toy_cfg, digits_cfg = dict(TOY), dict(DIGITS)
  if args.quick:
    toy_cfg.update(QUICK, g_layers=4)
    digits_cfg.update(steps=30, g_layers=2)
  start = time.perf_counter()
  results = {"config": {"toy": toy_cfg, "digits": digits_cfg, "quick": args.quick},
             "toy": {n: bench_toy(n, toy_cfg) for n in ("8gaussians", "checkerboard")},
             "digits": bench_digits(digits_cfg)}
  results["wall_s"] = time.perf_counter() - start

  print(f"\nKL(data || model) in nats after {toy_cfg['steps']} Adam steps (batch "
        f"{toy_cfg['batch']}); digits test bits/dim after {digits_cfg['steps']} steps")
  header = f"{'model':<20}{'8gaussians':>12}{'checkerboard':>14}{'digits bpd':>12}{'fit/steps':>22}"
  print(header)
  print("-" * len(header))
  for model in ("rbig (no training)", "gaussianization", "realnvp", "maf"):
    t8, tc, dg = (results["toy"]["8gaussians"][model], results["toy"]["checkerboard"][model],
                  results["digits"][model])
    speed = (f"fit {t8['fit_s']:.1f}s/{dg['fit_s']:.1f}s" if "fit_s" in t8 else
             f"{t8['steps_per_s']:.0f}/{dg['steps_per_s']:.0f} steps/s")
    print(f"{model:<20}{t8['kl']:>12.3f}{tc['kl']:>14.3f}{dg['bits_per_dim']:>12.3f}{speed:>22}")
  for other in ("realnvp", "maf"):
    ratios = {n: r["gaussianization"]["kl"] / r[other]["kl"] for n, r in results["toy"].items()}
    results[f"kl_ratio_gaussianization_over_{other}"] = ratios
    print(f"KL ratio gaussianization / {other}: "
          + ", ".join(f"{n} {v:.2f}" for n, v in ratios.items()))
  print("\nInverse accuracy (max abs round-trip error), fitted Gaussianization flows:")
  for data in ("8gaussians", "checkerboard", "digits"):
    acc = results["toy"][data]["accuracy"] if data != "digits" else results["digits"]["accuracy"]
    print(f"  {data:<13}" + "  ".join(
        f"{dt}: data {a['data_round_trip']:.1e}, latent {a['latent_round_trip']:.1e}"
        for dt, a in acc.items()))
  print(f"wall time {results['wall_s']:.0f}s")

  out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                 "gaussianization_quick.json" if args.quick
                                 else "gaussianization.json")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as f:
    json.dump(results, f, indent=2)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
