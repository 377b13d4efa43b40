"""Inverse accuracy and cost of planar and radial stacks (issue 4).

For a stack of K (default 32) layers on 2-D events, over N (default 100k) standard-normal
points z:

* ``max |f^-1(f(z)) - z|`` (the inverse gets a fresh copy of f(z), so no cache answers it);
* for float32, the conditioning floor: the same parameters in float64 inverting the same
  float32 outputs (what rounding f(z) to float32 costs, whatever solver inverts it);
* mean iterations of the tanh inverse's root finder (over layers and points);
* forward and inverse wall time (``tf.function(jit_compile=True)``; forward and inverse calls
  interleaved, median of repeats) and their ratio, next to TFP's own
  ``MaskedAutoregressiveFlow`` stack of the same depth (MADE with one hidden layer of 8 units)
  in the same run, for scale.

Parameters: every family with random parameters (identity initialisation plus N(0, 0.5²)
noise on every variable, ``--scale``); planar-tanh also at smaller noise, and *trained*: 32-layer
planar flows fitted by reverse KL (``tff.train.make_vi_step``, ``--trained_steps`` Adam steps
each) to the U1-U4 energies of Rezende & Mohamed (``tff.datasets.potential``), which is how
planar stacks are used.

Targets (issue 4): round trip <= 1e-5 (float32) and <= 1e-10 (float64); inverse <= 10x forward.

    python benchmarks/bench_planar.py            # full run (~7 minutes on 2 quiet CPU cores)
    python benchmarks/bench_planar.py --quick    # smoke run: 2k points, 8 layers, 20 VI steps

Writes ``benchmarks/results/planar.json`` (``planar_quick.json`` with ``--quick``).
"""

import time

from absl import app
from absl import flags

import _common

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfp_flows as tff  # noqa: E402

flags.DEFINE_bool("quick", False, "smoke run: 2k points, 8 layers, 20 VI steps")
flags.DEFINE_integer("layers", 32, "layers per stack")
flags.DEFINE_integer("points", 100_000, "points per round trip and timed call")
flags.DEFINE_integer("repeats", 15, "alternating timing rounds")
flags.DEFINE_float("scale", 0.5, "std of the noise added to every variable of the random stacks")
flags.DEFINE_integer("trained_steps", 500,
                     "Adam steps of each U1-U4 VI fit (0: skip the trained stacks)")
flags.DEFINE_integer("seed", 0, "seed of the points, the random variables and the VI samples")
FLAGS = flags.FLAGS

TARGETS = {"float32": 1e-5, "float64": 1e-10}


def _time_pair(forward, z, inverse, y, repeats):
  """Median wall times of forward(z) and inverse(y), calls alternating (same machine state)."""
  times = _common.interleaved_times({"forward": lambda: forward(z), "inverse": lambda: inverse(y)},
                                    calls=1, rounds=repeats, sync=lambda t: t.numpy())
  return times["forward"], times["inverse"]


def _mean_iterations(flow, y):
  """Inverts layer by layer (data side first), collecting root-finder iteration counts."""
  counts = []
  for layer in flow.bijectors:
    if isinstance(layer, tff.bijectors.Planar):
      y, info = layer.solve_inverse(y)
      counts.append(float(np.mean(info.num_iterations)))
    else:
      y = layer.inverse(y)
  return float(np.mean(counts)) if counts else 0.


def bench_one(flow, name, params, dtype, num_layers, num_points, repeats, seed):
  z = tf.constant(np.random.default_rng(seed).standard_normal((num_points, 2)), dtype)
  forward = tf.function(lambda x: flow.forward(x), jit_compile=True)
  inverse = tf.function(lambda x: flow.inverse(x), jit_compile=True)
  y = forward(z)
  z_back = inverse(tf.constant(np.array(y)))
  err = float(np.max(np.abs(np.asarray(z_back, np.float64) - np.asarray(z, np.float64))))
  floor = None
  if dtype == tf.float32 and name != "maf":
    # Conditioning floor: the same parameters in float64 invert the same float32 outputs y; the
    # error left is what rounding y to float32 costs, whatever the float32 solver does.
    flow64 = _float64_copy(flow, name)
    z64 = tf.function(lambda x: flow64.inverse(x), jit_compile=True)(
        tf.cast(tf.constant(np.array(y)), tf.float64))
    floor = float(np.max(np.abs(np.asarray(z64) - np.asarray(z, np.float64))))
  t_fwd, t_inv = _time_pair(forward, tf.constant(np.array(z)), inverse,
                            tf.constant(np.array(y)), repeats)
  iters = _mean_iterations(flow, tf.constant(np.array(y))) if name.startswith("planar") else 0.
  return dict(flow=name, params=params, dtype=dtype.name, layers=num_layers,
              points=num_points, max_round_trip_error=err,
              float64_inverse_of_same_outputs=floor, mean_root_iterations=iters,
              forward_ms=1e3 * t_fwd, inverse_ms=1e3 * t_inv, inverse_over_forward=t_inv / t_fwd)


def _build(name, dtype, num_layers, seed):
  if name.startswith("planar"):
    return tff.flows.planar([2], num_layers=num_layers, activation=name[len("planar-"):],
                            dtype=dtype, seed=seed)
  if name == "radial":
    return tff.flows.radial([2], num_layers=num_layers, dtype=dtype, seed=seed)
  return tff.flows.maf([2], num_layers=num_layers, hidden_units=[8], dtype=dtype, seed=seed)


def _float64_copy(flow, name):
  flow64 = _build(name, tf.float64, len(flow.bijectors), seed=0)
  for v64, v32 in zip(flow64.trainable_variables, flow.trainable_variables):
    v64.assign(tf.cast(v32, tf.float64))
  return flow64


def random_flow(name, dtype, num_layers, scale, seed):
  flow = _build(name, dtype, num_layers, seed)
  tff.testing.randomize_variables(flow, scale=scale if name != "maf" else 0.1, seed=seed)
  return flow


def trained_flow(potential, num_layers, steps, seed):
  """A float32 planar-tanh stack fitted to exp(-U) by reverse KL (as examples/planar_vi.py)."""
  q = tff.flows.distribution(tff.flows.planar([2], num_layers=num_layers, seed=seed), [2])
  step = tff.train.make_vi_step(q, tff.datasets.potential(potential).log_prob,
                                keras.optimizers.Adam(1e-2), 256)
  start = time.perf_counter()
  losses = np.array([float(v) for v in [step(tf.constant([seed, i])) for i in range(steps)]])
  return q.bijector, float(np.mean(losses[-max(1, steps // 10):])), time.perf_counter() - start


def main(argv):
  del argv
  layers, points, repeats, trained_steps = (FLAGS.layers, FLAGS.points, FLAGS.repeats,
                                            FLAGS.trained_steps)
  if FLAGS.quick:
    layers, points, repeats, trained_steps = 8, 2000, 2, 20
  env = _common.environment()
  print(_common.header_line(env))
  run = lambda flow, name, params, dtype: bench_one(flow, name, params, dtype, layers, points,
                                                    repeats, FLAGS.seed)
  rows = []
  random_params = f"random {FLAGS.scale:g}"
  for dtype in (tf.float32, tf.float64):
    for name in ("planar-tanh", "planar-leaky_relu", "radial", "maf"):
      rows.append(run(random_flow(name, dtype, layers, FLAGS.scale, FLAGS.seed), name,
                      random_params, dtype))
  for scale in (0.1, 0.25):
    rows.append(run(random_flow("planar-tanh", tf.float32, layers, scale, FLAGS.seed),
                    "planar-tanh", f"random {scale:g}", tf.float32))
  for potential in tff.datasets.POTENTIAL_NAMES if trained_steps > 0 else ():
    flow, loss, seconds = trained_flow(potential, layers, trained_steps, FLAGS.seed)
    params = f"VI-fit {potential}"
    for dtype in (tf.float32, tf.float64):
      row = run(flow if dtype == tf.float32 else _float64_copy(flow, "planar-tanh"),
                "planar-tanh", params, dtype)
      row.update(vi_steps=trained_steps, vi_final_loss=loss, vi_seconds=seconds)
      rows.append(row)
  # Ratios to TFP's MAF stack of the same depth and dtype, measured in this run.
  for row in rows:
    ref = next(r for r in rows if r["flow"] == "maf" and r["dtype"] == row["dtype"])
    row["forward_vs_tfp_maf"] = row["forward_ms"] / ref["forward_ms"]
    row["inverse_vs_tfp_maf"] = row["inverse_ms"] / ref["inverse_ms"]
    target = TARGETS[row["dtype"]]
    row["meets_accuracy_target"] = row["max_round_trip_error"] <= target
    row["meets_speed_target"] = row["inverse_over_forward"] <= 10.

  _common.table(
      ["flow", "parameters", "dtype", "K", "points", "max abs f^-1(f(z)) - z", "f64 floor",
       "iterations", "forward ms", "inverse ms", "inverse/forward", "inverse / TFP MAF"],
      [[r["flow"], r["params"], r["dtype"], r["layers"], r["points"],
        f"{r['max_round_trip_error']:.2e}",
        f"{r['float64_inverse_of_same_outputs']:.2e}"
        if r["float64_inverse_of_same_outputs"] is not None else None,
        f"{r['mean_root_iterations']:.2f}", r["forward_ms"], r["inverse_ms"],
        f"{r['inverse_over_forward']:.2f}", f"{r['inverse_vs_tfp_maf']:.2f}"] for r in rows],
      title="Planar and radial stacks: round trip and cost")
  _common.write_results("planar_quick" if FLAGS.quick else "planar",
                        {"quick": FLAGS.quick, "targets": TARGETS, "rows": rows}, env)


if __name__ == "__main__":
  app.run(main)
