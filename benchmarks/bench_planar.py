"""Inverse accuracy and cost of planar and radial stacks (issue 4).

For a stack of K (default 32) layers with random parameters on 2-D events, over N (default
100k) standard-normal points z:

* ``max |f^-1(f(z)) - z|`` (the inverse gets a fresh copy of f(z), so no cache answers it);
* for float32, the conditioning floor: the same parameters in float64 inverting the same
  float32 outputs (what rounding f(z) to float32 costs, whatever solver inverts it);
* mean iterations of the tanh inverse's root finder (over layers and points);
* forward and inverse wall time (``tf.function(jit_compile=True)``, median of repeats) and their
  ratio, next to TFP's own ``MaskedAutoregressiveFlow`` stack of the same depth (MADE with one
  hidden layer of 8 units) in the same run, for scale.

Targets (issue 4): round trip <= 1e-5 (float32) and <= 1e-10 (float64); inverse <= 10x forward.

    python benchmarks/bench_planar.py            # full run (a few minutes on 2 CPU cores)
    python benchmarks/bench_planar.py --quick    # smoke run: 2k points, 8 layers

Writes ``benchmarks/results/planar.json``.
"""

import argparse
import json
import os
import time

import numpy as np
import tensorflow as tf

import tfp_flows as tff

TARGETS = {"float32": 1e-5, "float64": 1e-10}


def _time(fn, arg, repeats):
  fn(arg)  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn(arg)
    tf.nest.map_structure(lambda t: t.numpy(), out)
    times.append(time.perf_counter() - start)
  return float(np.median(times))


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


def bench_flow(family, activation, dtype, num_layers, seed):
  if family == "planar":
    return tff.flows.planar([2], num_layers=num_layers, activation=activation, dtype=dtype,
                            seed=seed)
  if family == "radial":
    return tff.flows.radial([2], num_layers=num_layers, dtype=dtype, seed=seed)
  return tff.flows.maf([2], num_layers=num_layers, hidden_units=[8], dtype=dtype, seed=seed)


def bench_one(family, activation, dtype, num_layers, num_points, repeats, seed):
  flow = bench_flow(family, activation, dtype, num_layers, seed)
  tff.testing.randomize_variables(flow, scale=0.5 if family != "maf" else 0.1, seed=seed)
  z = tf.constant(np.random.default_rng(seed).standard_normal((num_points, 2)), dtype)
  forward = tf.function(flow.forward, jit_compile=True)
  inverse = tf.function(flow.inverse, jit_compile=True)
  y = forward(z)
  z_back = inverse(tf.constant(np.array(y)))
  err = float(np.max(np.abs(np.asarray(z_back, np.float64) - np.asarray(z, np.float64))))
  floor = None
  if dtype == tf.float32 and family != "maf":
    # Conditioning floor: the same parameters in float64 invert the same float32 outputs y; the
    # error left is what rounding y to float32 costs, whatever the float32 solver does.
    flow64 = bench_flow(family, activation, tf.float64, num_layers, seed)
    for v64, v32 in zip(flow64.trainable_variables, flow.trainable_variables):
      v64.assign(tf.cast(v32, tf.float64))
    z64 = tf.function(flow64.inverse, jit_compile=True)(tf.cast(tf.constant(np.array(y)),
                                                                tf.float64))
    floor = float(np.max(np.abs(np.asarray(z64) - np.asarray(z, np.float64))))
  t_fwd = _time(forward, tf.constant(np.array(z)), repeats)
  t_inv = _time(inverse, tf.constant(np.array(y)), repeats)
  iters = _mean_iterations(flow, tf.constant(np.array(y))) if family == "planar" else 0.
  name = family if family != "planar" else f"planar-{activation}"
  return dict(flow=name, dtype=dtype.name, layers=num_layers, points=num_points,
              max_round_trip_error=err, float64_inverse_of_same_outputs=floor,
              mean_root_iterations=iters,
              forward_ms=1e3 * t_fwd, inverse_ms=1e3 * t_inv, inverse_over_forward=t_inv / t_fwd)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="smoke run: 2k points, 8 layers")
  parser.add_argument("--layers", type=int, default=32)
  parser.add_argument("--points", type=int, default=100_000)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                    "planar.json"))
  args = parser.parse_args(argv)
  if args.quick:
    args.layers, args.points, args.repeats = 8, 2000, 2

  rows = []
  for dtype in (tf.float32, tf.float64):
    for family, activation in (("planar", "tanh"), ("planar", "leaky_relu"), ("radial", None),
                               ("maf", None)):
      rows.append(bench_one(family, activation, dtype, args.layers, args.points, args.repeats,
                            args.seed))
  # Ratios to TFP's MAF stack of the same depth and dtype, measured in this run.
  for row in rows:
    ref = next(r for r in rows if r["flow"] == "maf" and r["dtype"] == row["dtype"])
    row["forward_vs_tfp_maf"] = row["forward_ms"] / ref["forward_ms"]
    row["inverse_vs_tfp_maf"] = row["inverse_ms"] / ref["inverse_ms"]
    target = TARGETS[row["dtype"]]
    row["meets_accuracy_target"] = row["max_round_trip_error"] <= target
    row["meets_speed_target"] = row["inverse_over_forward"] <= 10.

  header = (f"{'flow':<18}{'dtype':<9}{'K':>3}{'points':>8}{'max|f^-1(f(z))-z|':>19}"
            f"{'f64 floor':>11}"
            f"{'iters':>7}{'fwd ms':>9}{'inv ms':>9}{'inv/fwd':>9}{'inv/TFP MAF':>13}")
  print(header)
  print("-" * len(header))
  for r in rows:
    print(f"{r['flow']:<18}{r['dtype']:<9}{r['layers']:>3}{r['points']:>8}"
          f"{r['max_round_trip_error']:>19.2e}"
          f"{r['float64_inverse_of_same_outputs'] or float('nan'):>11.2e}"
          f"{r['mean_root_iterations']:>7.1f}"
          f"{r['forward_ms']:>9.1f}{r['inverse_ms']:>9.1f}{r['inverse_over_forward']:>9.2f}"
          f"{r['inverse_vs_tfp_maf']:>13.2f}")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(dict(benchmark="planar", quick=args.quick, targets=TARGETS, rows=rows), f,
              indent=2)
  print(f"wrote {args.out}")
  return rows


if __name__ == "__main__":
  main()
