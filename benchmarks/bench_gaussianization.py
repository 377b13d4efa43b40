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
set), then trains like the others: ``tff.train.make_ml_step`` (Adam; compiled with
``tf.function``, with XLA under ``--jit_compile``) on batches drawn with replacement.

    python benchmarks/bench_gaussianization.py            # full run (~6 min on 2 quiet cores)
    python benchmarks/bench_gaussianization.py --quick    # smoke run

Writes ``benchmarks/results/gaussianization.json`` (``gaussianization_quick.json`` with
``--quick``).
"""

import time

from absl import app
from absl import flags

import _common

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfp_flows as tff  # noqa: E402

flags.DEFINE_bool("quick", False, "smoke run (minutes -> seconds)")
flags.DEFINE_bool("jit_compile", False, "compile the training steps with XLA")
FLAGS = flags.FLAGS


def _train(dist, x_train, steps, batch_size, learning_rate, seed):
  """Adam on the mean NLL (tff.train: constraints such as MADE's masks applied every step)."""
  step = tff.train.make_ml_step(dist, keras.optimizers.Adam(learning_rate),
                                jit_compile=FLAGS.jit_compile)
  data = tf.constant(x_train)
  rng = np.random.default_rng(seed)
  batch = lambda: tf.gather(data, rng.integers(0, len(x_train), batch_size))
  start = time.perf_counter()
  float(step(batch()))  # trace (and compile)
  trace_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(steps - 1):
    loss = step(batch())
  float(loss)
  return {"trace_s": trace_s, "steps_per_s": (steps - 1) / (time.perf_counter() - start)}


def _log_prob(dist, x):
  return tff.train.batched_log_prob(dist, x)


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


def main(argv):
  del argv
  toy_cfg, digits_cfg = dict(TOY), dict(DIGITS)
  if FLAGS.quick:
    toy_cfg.update(QUICK, g_layers=4)
    digits_cfg.update(steps=30, g_layers=2)
  env = _common.environment()
  print(_common.header_line(env))
  start = time.perf_counter()
  results = {"config": {"toy": toy_cfg, "digits": digits_cfg, "quick": FLAGS.quick,
                        "jit_compile": FLAGS.jit_compile},
             "toy": {n: bench_toy(n, toy_cfg) for n in ("8gaussians", "checkerboard")},
             "digits": bench_digits(digits_cfg)}
  results["wall_s"] = time.perf_counter() - start

  rows = []
  for model in ("rbig (no training)", "gaussianization", "realnvp", "maf"):
    t8, tc, dg = (results["toy"]["8gaussians"][model], results["toy"]["checkerboard"][model],
                  results["digits"][model])
    speed = (f"fit {t8['fit_s']:.1f}s / {dg['fit_s']:.1f}s" if "fit_s" in t8 else
             f"{t8['steps_per_s']:.0f} / {dg['steps_per_s']:.0f} steps/s")
    rows.append([model, t8["kl"], tc["kl"], dg["bits_per_dim"], speed])
  _common.table(["model", "8gaussians KL", "checkerboard KL", "digits bits/dim",
                 "fit time or steps/s (toy / digits)"], rows,
                title=f"KL(data || model) in nats after {toy_cfg['steps']} Adam steps (batch "
                      f"{toy_cfg['batch']}); digits test bits/dim after {digits_cfg['steps']}")
  for other in ("realnvp", "maf"):
    ratios = {n: r["gaussianization"]["kl"] / r[other]["kl"] for n, r in results["toy"].items()}
    results[f"kl_ratio_gaussianization_over_{other}"] = ratios
    print(f"KL ratio gaussianization / {other}: "
          + ", ".join(f"{n} {v:.2f}" for n, v in ratios.items()))
  print()
  acc_rows = []
  for data in ("8gaussians", "checkerboard", "digits"):
    acc = results["toy"][data]["accuracy"] if data != "digits" else results["digits"]["accuracy"]
    for dt, a in acc.items():
      acc_rows.append([data, dt, f"{a['data_round_trip']:.1e}", f"{a['latent_round_trip']:.1e}"])
  _common.table(["data", "dtype", "max abs f(f^-1(x)) - x", "max abs f^-1(f(z)) - z"], acc_rows,
                title="Inverse accuracy of the fitted Gaussianization flows")
  print(f"wall time {results['wall_s']:.0f}s")
  _common.write_results("gaussianization_quick" if FLAGS.quick else "gaussianization", results,
                        env)


if __name__ == "__main__":
  app.run(main)
