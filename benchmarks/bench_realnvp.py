"""Coupling training-step speed: our RealNVP and NSF vs TFP, zuko and the matmul floor.

Setting (issue 13): D = 64, 8 couplings, conditioner MLPs 2x256 (ReLU), batch 1024, one
maximum-likelihood Adam step per call (``tff.train.make_ml_step``, ``jit_compile=True``).

Rows (all timed in one process, interleaved round by round with ``_common.interleaved_times``,
so their ratios are robust to load that drifts during the run):

* ``tfp_flows realnvp``: ``tff.flows.realnvp([64], num_layers=8, hidden_units=[256, 256])``;
* ``tfp_flows nsf``: ``tff.flows.nsf([64], num_layers=8, hidden_units=[256, 256])``
  (rational-quadratic spline couplings, 8 bins: 23 outputs per transformed entry);
* ``tfp_flows nsf (transform_kept)``: the same with ``transform_kept=True`` (each coupling also
  moves its kept half by a spline with learned constant parameters, as zuko's NSF does): twice
  the spline work, the same matmuls;
* ``TFP tfb.RealNVP``: TFP's own coupling with the very same MLP class and reverse
  permutations between layers (isolates the bijector machinery);
* ``matmul floor (2 / 23 params)``: only the conditioners' matmuls and ReLUs, forward and
  backward, same shapes (output layer 256 x 64 for affine, 256 x 736 for the spline); no
  optimizer;
* ``spline transformers alone``: the 8 layers' rational-quadratic splines (inverse, value and
  gradient) on ``[1024, 32]`` with fixed parameters: what the NSF step adds to its matmuls;
* ``zuko RealNVP`` / ``zuko NSF (passes=2)`` (PyTorch, if installed): zuko's flows of the same
  depth and MLPs, Adam. zuko's coupling NSF is a MADE with two passes, so its networks take
  all 64 inputs and produce 64 x 23 outputs (twice our coupling's matmul work).

Reported: ms/step, samples/s, each flow's time over its own matmul floor and our samples/s
over zuko's. Figures from a shared machine are noisy; the ratios are what to compare.

    python benchmarks/bench_realnvp.py            # full run
    python benchmarks/bench_realnvp.py --quick    # smoke run
    python benchmarks/bench_realnvp.py --skip-tfp --breakdown   # + the NSF step in parts

Density quality (KL) lives in ``bench_density.py``.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

import tfp_flows as tff  # noqa: E402

tfb = tfp.bijectors
D, LAYERS, HIDDEN, BATCH, BINS = 64, 8, [256, 256], 1024, 8
THREADS = None  # --threads: intra-op threads of TensorFlow and PyTorch alike


class _TFPRealNVP(tf.Module):
  """TFP's RealNVP with our MLPs (held here so tf.Module traversal finds them)."""

  def __init__(self):
    super().__init__()
    self.nets = [tff.nets.MLP(D // 2, 2 * (D - D // 2), HIDDEN, seed=i) for i in range(LAYERS)]
    layers = []
    for i, net in enumerate(self.nets):
      if i:
        layers.append(tfb.Permute(np.arange(D)[::-1].astype(np.int32)))

      def fn(x, output_units, net=net):
        del output_units
        return tuple(tf.split(net(x), 2, axis=-1))

      layers.append(tfb.RealNVP(num_masked=D // 2, shift_and_log_scale_fn=fn))
    self.bijector = tfb.Chain(layers[::-1])


def ours_step(family, x):
  import keras
  if family == "tfp":
    holder = _TFPRealNVP()
    dist = tff.flows.distribution(holder.bijector, [D])
    variables = holder.trainable_variables
  else:
    builder = tff.flows.realnvp if family == "realnvp" else tff.flows.nsf
    kwargs = {} if family == "realnvp" else {"num_bins": BINS}
    if family == "nsf_kept":
      kwargs["transform_kept"] = True
    dist = tff.flows.distribution(builder([D], num_layers=LAYERS, hidden_units=HIDDEN,
                                          **kwargs), [D])
    variables = dist.trainable_variables
  step = tff.train.make_ml_step(dist, keras.optimizers.Adam(1e-4), variables=variables)
  return lambda: step(x)


def nsf_breakdown(x):
  """The NSF step in parts: the gradient without the optimizer update (XLA and not), and the
  loss alone (forward only) -- where the step's time beyond its matmul floor goes."""
  dist = tff.flows.distribution(tff.flows.nsf([D], num_layers=LAYERS, hidden_units=HIDDEN,
                                              num_bins=BINS), [D])
  variables = dist.trainable_variables

  def gradient(x):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(dist.log_prob(x))
    grads = tape.gradient(loss, variables)
    return loss + 0. * tf.add_n([tf.reduce_sum(g) for g in grads])

  grad_xla = tf.function(gradient, jit_compile=True)
  grad_plain = tf.function(gradient, jit_compile=False)
  loss = tf.function(lambda x: -tf.reduce_mean(dist.log_prob(x)), jit_compile=True)
  return {"nsf: gradient, no optimizer update": lambda: grad_xla(x),
          "nsf: loss only (forward)": lambda: loss(x),
          "nsf: gradient, no optimizer, no XLA": lambda: grad_plain(x)}


def floor_step(num_params, x):
  """The conditioners' matmuls (and ReLUs) alone, forward and backward."""
  nets = [tff.nets.MLP(D // 2, num_params * (D - D // 2), HIDDEN, seed=i, init="random")
          for i in range(LAYERS)]
  variables = [v for n in nets for v in n.trainable_variables]

  @tf.function(jit_compile=True)
  def step(x):
    with tf.GradientTape() as tape:
      h, total = x[:, :D // 2], 0.
      for n in nets:
        out = n(h)
        total += tf.reduce_sum(out)
        h = out[:, :D // 2]
    grads = tape.gradient(total, variables)
    return total + tf.add_n([tf.reduce_sum(g) for g in grads]) * 0.

  return lambda: step(x)


def spline_step(x):
  """The 8 layers' rational-quadratic splines alone (inverse, as in ``log_prob``, value and
  gradient with respect to inputs and parameters), without networks or optimizer."""
  t = tff.bijectors.transformers.RationalQuadraticSpline(BINS)
  n = D - D // 2
  # One parameter tensor per layer, as in a flow (one tensor shared by all layers let XLA fuse
  # the eight layers' gradient sums into one loop that recomputed them many times over).
  params = [tf.Variable(0.3 * tf.random.stateless_normal([BATCH, t.num_params, n], [0, i]))
            for i in range(LAYERS)]

  @tf.function(jit_compile=True)
  def step(x):
    y = x[:, D // 2:]
    with tf.GradientTape() as tape:
      tape.watch(y)
      h, total = y, 0.
      for p in params:
        h, log_det = t.inverse(h, p)
        total += tf.reduce_sum(log_det)
      total += tf.reduce_sum(h)
    g_y, *g_p = tape.gradient(total, [y] + params)
    return total + 0. * (tf.reduce_sum(g_y) + tf.add_n([tf.reduce_sum(g) for g in g_p]))

  return lambda: step(x)


def zuko_step(family, x_np):
  try:
    import torch
    import zuko
  except ImportError:
    return None
  torch.manual_seed(0)
  torch.set_num_threads(THREADS or os.cpu_count() or 1)
  if family == "realnvp":
    flow = zuko.flows.RealNVP(D, transforms=LAYERS, hidden_features=tuple(HIDDEN))
  else:
    flow = zuko.flows.NSF(D, transforms=LAYERS, passes=2, bins=BINS,
                          hidden_features=tuple(HIDDEN))
  opt = torch.optim.Adam(flow.parameters(), lr=1e-4)
  x = torch.from_numpy(x_np)

  def step():
    loss = -flow().log_prob(x).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.detach()

  return step


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="few timing rounds (smoke run)")
  parser.add_argument("--calls", type=int, default=5, help="steps per timed block")
  parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
  parser.add_argument("--threads", type=int, default=0,
                      help="intra-op threads for TensorFlow and PyTorch alike (0: defaults; 1 "
                           "on an oversubscribed machine, where spinning threads distort)")
  parser.add_argument("--skip-tfp", action="store_true", help="leave out TFP's tfb.RealNVP row")
  parser.add_argument("--breakdown", action="store_true",
                      help="add the NSF step's parts (gradient only, loss only, no XLA)")
  args = parser.parse_args()
  if args.quick:
    args.calls, args.rounds = 2, 2
  if args.threads:
    global THREADS
    THREADS = args.threads
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  env = _common.environment()
  print(_common.header_line(env), flush=True)
  x_np = np.random.default_rng(0).normal(size=(BATCH, D)).astype(np.float32)
  x = tf.constant(x_np)
  fns = {"tfp_flows realnvp": ours_step("realnvp", x), "tfp_flows nsf": ours_step("nsf", x),
         "tfp_flows nsf (transform_kept)": ours_step("nsf_kept", x),
         "matmul floor (2 params)": floor_step(2, x),
         f"matmul floor ({3 * BINS - 1} params)": floor_step(3 * BINS - 1, x),
         "spline transformers alone": spline_step(x)}
  if not args.skip_tfp:
    fns["TFP tfb.RealNVP"] = ours_step("tfp", x)
  if args.breakdown:
    fns.update(nsf_breakdown(x))
  for family, label in (("realnvp", "zuko RealNVP"), ("nsf", "zuko NSF (passes=2)")):
    step = zuko_step(family, x_np)
    if step is not None:
      fns[label] = step
  for name, fn in fns.items():  # compile / warm up, with progress (interleaved_times re-warms)
    t0 = time.perf_counter()
    float(fn())
    print(f"  first call of {name}: {time.perf_counter() - t0:.1f} s", flush=True)
  times = _common.interleaved_times(fns, calls=args.calls, rounds=args.rounds,
                                    sync=lambda out: float(out))
  floors = {"tfp_flows realnvp": "matmul floor (2 params)",
            "TFP tfb.RealNVP": "matmul floor (2 params)",
            "tfp_flows nsf": f"matmul floor ({3 * BINS - 1} params)",
            "tfp_flows nsf (transform_kept)": f"matmul floor ({3 * BINS - 1} params)"}
  floors.update({name: f"matmul floor ({3 * BINS - 1} params)" for name in fns
                 if name.startswith("nsf: ")})
  zuko = {"tfp_flows realnvp": "zuko RealNVP", "tfp_flows nsf": "zuko NSF (passes=2)",
          "tfp_flows nsf (transform_kept)": "zuko NSF (passes=2)"}
  rows, table = [], []
  for name, t in times.items():
    row = {"flow": name, "ms_per_step": 1e3 * t, "samples_per_s": BATCH / t,
           "over_floor": t / times[floors[name]] if name in floors else None,
           "samples_per_s_over_zuko": (times[zuko[name]] / t
                                       if name in zuko and zuko[name] in times else None)}
    rows.append(row)
    table.append([name, row["ms_per_step"], row["samples_per_s"], row["over_floor"],
                  row["samples_per_s_over_zuko"]])
  text = _common.table(["flow", "ms/step", "samples/s", "time / own matmul floor",
                        "samples/s / zuko's"], table,
                       title=f"training step, D={D}, {LAYERS} couplings, MLP 2x256, batch "
                             f"{BATCH}, jit_compile=True ({args.rounds} interleaved rounds "
                             f"of {args.calls} steps, medians)")
  _common.write_results("realnvp_quick" if args.quick else
                        "realnvp_breakdown" if args.breakdown else "realnvp",
                        {"config": {"d": D, "couplings": LAYERS, "hidden": HIDDEN,
                                    "threads": args.threads or "default",
                                    "batch": BATCH, "bins": BINS, "calls": args.calls,
                                    "rounds": args.rounds},
                         "rows": rows, "table": text}, env)


if __name__ == "__main__":
  main()
