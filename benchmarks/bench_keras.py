"""Training throughput of ``tff.keras.FlowModel.fit`` against a bare XLA loop, and TFP's flows.

Each flow is trained twice from the same initial values on the same ``tf.data`` pipeline
(same shuffling seed, batch size, Adam settings):

* ``bare loop``: ``for x in dataset: step(x)`` with ``step`` a ``tf.function(jit_compile=True)``
  doing one maximum-likelihood Adam step (the loop users write by hand; for TFP's own
  RealNVP and MAF this is "the TFP way" of training them);
* ``FlowModel.fit``: ``model.compile(Adam, jit_compile=True); model.fit(dataset, verbose=0)``,
  with the training guard (NaN batches, divergence) that ``fit`` always adds.

Flows (D=16 correlated Gaussian-mixture data): our RealNVP (``tff.flows.realnvp``), TFP's
``tfb.RealNVP`` with the same MLP conditioners (``tff.nets.MLP``) and reverse permutations,
and TFP's ``MaskedAutoregressiveFlow`` (``tff.flows.maf``: tf_keras MADE networks).

Throughput = samples per second over whole epochs, from the fastest timed epoch (best-of-N,
as ``timeit`` does: load from other processes only ever adds time; the first epoch, which
compiles, is not timed). The two trainers' epochs alternate, so that both see the same
machine load. ``fit/bare`` is the ratio of throughputs: 1.00 means no wrapper overhead, the
target is >= 0.95. The same figures from process CPU time (``time.process_time``, all
threads; the median epoch: what this process computed, whatever the other processes do) are
less sensitive to a shared machine. The JSON keeps every epoch's times. ``held-out NLL`` (nats) checks that
both trainers learn the same thing from the same start.

    python benchmarks/bench_keras.py            # full run (a few minutes on 2 CPU cores)
    python benchmarks/bench_keras.py --quick    # smoke run
"""

import argparse
import datetime
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

import tfp_flows as tff  # noqa: E402
from bench_realnvp import tfp_realnvp  # noqa: E402  (TFP's RealNVP with our MLPs; same folder)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def make_data(n, d, seed=0):
  """A standardised 3-component Gaussian mixture in D dims with random correlations."""
  rng = np.random.default_rng(seed)
  means = rng.normal(scale=3., size=(3, d))
  mixes = [np.linalg.qr(rng.normal(size=(d, d)))[0] * rng.uniform(.3, 1.5, size=d)
           for _ in range(3)]
  comp = rng.integers(3, size=n)
  z = rng.normal(size=(n, d))
  x = np.einsum("nij,nj->ni", np.stack(mixes)[comp], z) + means[comp]
  return ((x - x.mean(0)) / x.std(0)).astype(np.float32)  # standardised, as usual


FLOWS = {
    "ours RealNVP": lambda d, a: tff.flows.realnvp([d], num_layers=a.layers,
                                                   hidden_units=a.hidden, seed=0),
    "TFP RealNVP": lambda d, a: tfp_realnvp(d, a.layers, a.hidden),
    "TFP MAF": lambda d, a: tff.flows.maf([d], num_layers=max(2, a.layers // 2),
                                          hidden_units=a.hidden, seed=0),
}


def dataset(x, batch):
  return (tf.data.Dataset.from_tensor_slices(x).shuffle(len(x), seed=1)
          .batch(batch, drop_remainder=True).prefetch(2))


class _EpochTimer(keras.callbacks.Callback):

  def __init__(self):
    super().__init__()
    self.times = []

  def on_epoch_begin(self, epoch, logs=None):
    self._t0 = (time.perf_counter(), time.process_time())

  def on_epoch_end(self, epoch, logs=None):
    self.times.append((time.perf_counter() - self._t0[0], time.process_time() - self._t0[1]))


def fit_trainer(dist, data, args):
  """One call per epoch: ``fit(epochs=e + 1, initial_epoch=e)`` (the compiled step is kept)."""
  model = tff.keras.FlowModel(dist)
  model.compile(keras.optimizers.Adam(args.lr), jit_compile=True)
  timer = _EpochTimer()

  def epoch(e):
    model.fit(data, epochs=e + 1, initial_epoch=e, verbose=0, callbacks=[timer])
    return timer.times[-1]

  return epoch


def bare_trainer(dist, data, args):
  opt = keras.optimizers.Adam(args.lr)
  variables = dist.trainable_variables

  @tf.function(jit_compile=True)
  def step(x):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(dist.log_prob(x))
    opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  def epoch(e):
    del e
    t, c = time.perf_counter(), time.process_time()
    for x in data:
      loss = step(x)
    float(loss)  # wait for the last step
    return time.perf_counter() - t, time.process_time() - c

  return epoch


def held_out_nll(dist, x):
  return float(-np.mean(dist.log_prob(x).numpy()))


def run(args):
  x = make_data(args.n + 4096, args.d, seed=0)[:args.n]
  x_test = make_data(args.n + 4096, args.d, seed=0)[args.n:]  # same mixture, other draws
  data = dataset(x, args.batch)
  steps = args.n // args.batch
  rows = []
  for name, build in FLOWS.items():
    # Same initial values for both trainers; their epochs alternate, so that both see the
    # same machine load (epoch 0 compiles and is not timed).
    dists = {t: tff.flows.distribution(build(args.d, args), [args.d])
             for t in ("bare loop", "FlowModel.fit")}
    trainers = {"bare loop": bare_trainer(dists["bare loop"], data, args),
                "FlowModel.fit": fit_trainer(dists["FlowModel.fit"], data, args)}
    times = {t: [] for t in trainers}
    for e in range(args.epochs + 1):
      for t, epoch in trainers.items():
        seconds = epoch(e)
        if e:
          times[t].append(seconds)
    for t in trainers:
      wall, cpu = np.array(times[t]).T
      rows.append({"flow": name, "trainer": t,
                   "samples_per_s": steps * args.batch / float(np.min(wall)),
                   "samples_per_cpu_s": steps * args.batch / float(np.median(cpu)),
                   "epoch_wall_s": wall.tolist(), "epoch_cpu_s": cpu.tolist(),
                   "held_out_nll": held_out_nll(dists[t], x_test)})
      print(f"  {name:13s} {t:14s} {rows[-1]['samples_per_s']:10.0f} samples/s "
            f"NLL {rows[-1]['held_out_nll']:.3f}", flush=True)
  bare = {r["flow"]: r["samples_per_s"] for r in rows if r["trainer"] == "bare loop"}
  bare_cpu = {r["flow"]: r["samples_per_cpu_s"] for r in rows if r["trainer"] == "bare loop"}
  for r in rows:
    r["fit_over_bare"] = r["samples_per_s"] / bare[r["flow"]]
    r["fit_over_bare_cpu"] = r["samples_per_cpu_s"] / bare_cpu[r["flow"]]
    r["vs_tfp_realnvp_bare"] = r["samples_per_s"] / bare["TFP RealNVP"]
  return rows


def table(rows):
  head = ("| flow | trainer | samples/s | fit/bare | samples/CPU-s | fit/bare (CPU) "
          "| vs TFP RealNVP bare | held-out NLL |\n|---|---|---:|---:|---:|---:|---:|---:|")
  lines = [head]
  for r in rows:
    lines.append(f"| {r['flow']} | {r['trainer']} | {r['samples_per_s']:,.0f} | "
                 f"{r['fit_over_bare']:.3f} | {r['samples_per_cpu_s']:,.0f} | "
                 f"{r['fit_over_bare_cpu']:.3f} | {r['vs_tfp_realnvp_bare']:.2f} | "
                 f"{r['held_out_nll']:.3f} |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small smoke run")
  parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
  args = parser.parse_args()
  args.d, args.lr = 16, 1e-3
  if args.quick:
    args.n, args.batch, args.epochs, args.layers, args.hidden = 4096, 256, 4, 2, [32]
  else:
    args.n, args.batch, args.epochs, args.layers, args.hidden = 32768, 512, 5, 6, [128, 128]
  print(f"FlowModel.fit vs bare tf.function(jit_compile=True) loop: D={args.d}, "
        f"N={args.n}, batch {args.batch}, {args.layers} layers {args.hidden}, "
        f"{args.epochs} timed epochs, devices {[d.name for d in tf.config.list_logical_devices()]}")
  rows = run(args)
  print(table(rows))
  out = args.out or os.path.join(RESULTS, "keras_quick.json" if args.quick else "keras.json")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "platform": platform.platform(), "tensorflow": tf.__version__,
          "tfp": tfp.__version__, "keras": keras.__version__,
          "devices": [d.name for d in tf.config.list_logical_devices()],
          "cpu_count": os.cpu_count(), "load_avg": list(os.getloadavg()),
          "config": {k: v for k, v in vars(args).items() if k not in ("out",)}}
  with open(out, "w") as f:
    json.dump({"meta": meta, "rows": rows}, f, indent=2)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
