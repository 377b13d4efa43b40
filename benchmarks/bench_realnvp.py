"""RealNVP training speed (ours vs TFP vs zuko vs the matmul floor) and toy-density quality.

Speed: D=64, 8 affine couplings with reverse permutations between them, conditioner MLP
2x256 (ReLU), batch 1024, Adam, one maximum-likelihood step per call under
``tf.function(jit_compile=True)``. TFP's ``tfb.RealNVP`` gets the very same MLP class
(``tff.nets.MLP``) through ``shift_and_log_scale_fn``, so the comparison isolates the bijector
machinery. The floor runs only the conditioners' matmuls (forward and backward, same shapes).
zuko (PyTorch) is timed on the same shapes when it is installed.

Quality: KL(data || model) in nats, estimated on fresh data samples with the exact data
log-density, after a fixed budget (3000 Adam steps, batch 512) for NICE, RealNVP and MAF on
the 8gaussians and checkerboard toy densities.

    python benchmarks/bench_realnvp.py            # full run
    python benchmarks/bench_realnvp.py --quick    # smoke run
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


def _time_steps(step, n_steps, repeats):
  """Median seconds per step over ``repeats`` timed blocks (after a warm-up/compile call)."""
  step()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(n_steps):
      out = step()
    float(out)  # wait for the last step
    times.append((time.perf_counter() - t0) / n_steps)
  return float(np.median(times))


def _train_step(dist, variables, x, lr=1e-4):
  opt = tf.keras.optimizers.Adam(lr)

  @tf.function(jit_compile=True)
  def step():
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(dist.log_prob(x))
    opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  return step


def tfp_realnvp(d, num_layers, hidden):
  """TFP's RealNVP with the same MLP conditioners and reverse permutations."""
  layers = []
  for i in range(num_layers):
    if i:
      layers.append(tfb.Permute(np.arange(d)[::-1].astype(np.int32)))
    net = tff.nets.MLP(d // 2, 2 * (d - d // 2), hidden, seed=i)

    def fn(x, output_units, net=net):
      del output_units
      return tuple(tf.split(net(x), 2, axis=-1))

    nvp = tfb.RealNVP(num_masked=d // 2, shift_and_log_scale_fn=fn)
    nvp._tff_net = net  # keep the network reachable by tf.Module traversal
    layers.append(nvp)
  return tfb.Chain(layers[::-1])


def matmul_floor_step(d, num_layers, hidden, batch):
  """Only the conditioners' matmuls (and ReLUs), forward and backward, same shapes."""
  nets = [tff.nets.MLP(d // 2, 2 * (d - d // 2), hidden, seed=i) for i in range(num_layers)]
  for n in nets:  # non-zero output layers so the backward pass is not trivially zero
    n.out.kernel.assign(tf.random.normal(n.out.kernel.shape, stddev=0.01))
  variables = [v for n in nets for v in n.trainable_variables]
  x = tf.random.normal([batch, d // 2])

  @tf.function(jit_compile=True)
  def step():
    with tf.GradientTape() as tape:
      h, total = x, 0.
      for n in nets:
        out = n(h)
        total += tf.reduce_sum(out)
        h = out[:, : d // 2]
    grads = tape.gradient(total, variables)
    return total + tf.add_n([tf.reduce_sum(g) for g in grads]) * 0.
  return step


def zuko_step(d, num_layers, hidden, batch):
  try:
    import torch
    import zuko
  except ImportError:
    return None
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)
  flow = zuko.flows.RealNVP(features=d, transforms=num_layers, hidden_features=tuple(hidden))
  opt = torch.optim.Adam(flow.parameters(), lr=1e-4)
  x = torch.randn(batch, d)

  def step():
    loss = -flow().log_prob(x).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.detach()
  return step, torch.__version__, zuko.__version__


def speed(args):
  d, layers, hidden, batch = 64, 8, [256, 256], 1024
  x = tf.random.normal([batch, d])
  rows = {}
  ours = tff.flows.distribution(tff.flows.realnvp([d], num_layers=layers, hidden_units=hidden), [d])
  rows["tfp_flows RealNVP"] = _time_steps(
      _train_step(ours, ours.trainable_variables, x), args.steps, args.repeats)
  theirs = tff.flows.distribution(tfp_realnvp(d, layers, hidden), [d])
  assert len(theirs.trainable_variables) == len(ours.trainable_variables)
  rows["TFP tfb.RealNVP"] = _time_steps(
      _train_step(theirs, theirs.trainable_variables, x), args.steps, args.repeats)
  rows["matmul floor"] = _time_steps(matmul_floor_step(d, layers, hidden, batch), args.steps,
                                     args.repeats)
  z = zuko_step(d, layers, hidden, batch)
  versions = {"tensorflow": tf.__version__, "tfp": tfp.__version__}
  if z is not None:
    step, torch_v, zuko_v = z
    rows["zuko RealNVP (PyTorch)"] = _time_steps(step, args.steps, args.repeats)
    versions.update(torch=torch_v, zuko=zuko_v)
  ours_t = rows["tfp_flows RealNVP"]
  table = [{"flow": k, "ms_per_step": 1e3 * v, "samples_per_s": batch / v,
            "time_vs_ours": v / ours_t} for k, v in rows.items()]
  return {"config": dict(d=d, couplings=layers, hidden=hidden, batch=batch, jit_compile=True),
          "versions": versions, "rows": table,
          "ours_vs_floor": ours_t / rows["matmul floor"]}


def quality(args):
  out = []
  for data_name in ("8gaussians", "checkerboard"):
    data = tff.datasets.toy(data_name)
    test = data.sample(20000, seed=123)
    test_lp = data.log_prob(test)
    for flow_name in ("nice", "realnvp", "maf"):
      builder = getattr(tff.flows, flow_name)
      kwargs = dict(num_layers=8 if flow_name != "maf" else 5, hidden_units=[128, 128], seed=0)
      flow = builder([2], **kwargs)
      dist = tff.flows.distribution(flow, [2])
      variables = dist.trainable_variables
      sched = tf.keras.optimizers.schedules.CosineDecay(2e-3, args.quality_steps)
      opt = tf.keras.optimizers.Adam(sched)

      @tf.function(jit_compile=True)
      def step(x):
        with tf.GradientTape() as tape:
          loss = -tf.reduce_mean(dist.log_prob(x))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

      rng = np.random.default_rng(0)
      t0 = time.perf_counter()
      for i in range(args.quality_steps):
        step(tf.constant(data.sample(512, seed=rng.integers(2**31))))
      train_s = time.perf_counter() - t0
      model_lp = dist.log_prob(tf.constant(test)).numpy().astype(np.float64)
      diff = test_lp - model_lp
      out.append({"data": data_name, "flow": flow_name, "steps": args.quality_steps,
                  "kl_nats": float(diff.mean()),
                  "kl_stderr": float(diff.std() / np.sqrt(len(diff))),
                  "params": int(sum(np.prod(v.shape) for v in variables)),
                  "train_seconds": train_s})
      print(f"  {data_name:13s} {flow_name:8s} KL={out[-1]['kl_nats']:.4f} "
            f"({train_s:.0f}s)", flush=True)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="tiny budgets (smoke run)")
  parser.add_argument("--skip-speed", action="store_true")
  parser.add_argument("--skip-quality", action="store_true")
  args = parser.parse_args()
  args.steps, args.repeats = (3, 2) if args.quick else (20, 5)
  args.quality_steps = 50 if args.quick else 3000
  result = {"date": datetime.date.today().isoformat(), "machine": platform.platform(),
            "cpus": os.cpu_count(), "quick": args.quick}
  if not args.skip_speed:
    result["speed"] = speed(args)
    print("\nRealNVP training step, D=64, 8 couplings, MLP 2x256, batch 1024, jit_compile=True")
    print(f"{'flow':26s} {'ms/step':>9s} {'samples/s':>11s} {'time vs ours':>13s}")
    for r in result["speed"]["rows"]:
      print(f"{r['flow']:26s} {r['ms_per_step']:9.1f} {r['samples_per_s']:11.0f} "
            f"{r['time_vs_ours']:13.2f}")
    print(f"ours / matmul floor = {result['speed']['ours_vs_floor']:.2f}")
  if not args.skip_quality:
    print("\nKL(data || model) after the fixed budget:")
    result["quality"] = quality(args)
    print(f"\n{'data':13s} {'flow':8s} {'KL (nats)':>10s} {'+-':>7s} {'params':>8s}")
    for r in result["quality"]:
      print(f"{r['data']:13s} {r['flow']:8s} {r['kl_nats']:10.4f} {r['kl_stderr']:7.4f} "
            f"{r['params']:8d}")
  os.makedirs(RESULTS, exist_ok=True)
  path = os.path.join(RESULTS, "realnvp_quick.json" if args.quick else "realnvp.json")
  with open(path, "w") as f:
    json.dump(result, f, indent=1)
  print(f"\nwrote {path}")


if __name__ == "__main__":
  main()
