"""Training throughput of ``tff.keras.FlowModel.fit`` against a bare XLA loop, and TFP's flows.

Each flow is trained twice from the same initial values on the same ``tf.data`` pipeline
(same shuffling seed, batch size, Adam settings):

* ``bare loop``: ``for x in dataset: step(x)`` with ``step = tff.train.make_ml_step(dist, Adam)``,
  one maximum-likelihood Adam step under ``tf.function(jit_compile=True)`` (the loop users write
  by hand; for TFP's own RealNVP and MAF this is "the TFP way" of training them);
* ``FlowModel.fit``: ``model.compile(Adam, jit_compile=True); model.fit(dataset, verbose=0)``,
  with the training guard (NaN batches, divergence) that ``fit`` always adds.

Flows (D=16 correlated Gaussian-mixture data): our RealNVP (``tff.flows.realnvp``), TFP's
``tfb.RealNVP`` with the same MLP conditioners (``tff.nets.MLP``) and reverse permutations
(``_common.tfp_realnvp``), and TFP's ``MaskedAutoregressiveFlow`` (``tff.flows.maf``: tf_keras
MADE networks).

Throughput = samples per second over whole epochs, from the fastest timed epoch (best-of-N,
as ``timeit`` does: load from other processes only ever adds time; the first epoch, which
compiles, is not timed). The two trainers' epochs alternate, so that both see the same
machine load. ``fit/bare`` is the ratio of throughputs: 1.00 means no wrapper overhead, the
target is >= 0.95. The same figures from process CPU time (``time.process_time``, all
threads; the median epoch: what this process computed, whatever the other processes do) are
less sensitive to a shared machine. The JSON keeps every epoch's times. ``held-out NLL``
(nats) checks that both trainers learn the same thing from the same start.

    python benchmarks/bench_keras.py            # full run (a few minutes on 2 quiet cores)
    python benchmarks/bench_keras.py --quick    # smoke run

Writes ``benchmarks/results/keras.json`` (``keras_quick.json`` with ``--quick``).
"""

import time
import types

from absl import app
from absl import flags

import _common

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfp_flows as tff  # noqa: E402

flags.DEFINE_bool("quick", False, "small smoke run")
FLAGS = flags.FLAGS


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
    "TFP RealNVP": lambda d, a: _common.tfp_realnvp(d, a.layers, a.hidden),
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
  step = tff.train.make_ml_step(dist, keras.optimizers.Adam(args.lr))

  def epoch(e):
    del e
    t, c = time.perf_counter(), time.process_time()
    for x in data:
      loss = step(x)
    float(loss)  # wait for the last step
    return time.perf_counter() - t, time.process_time() - c

  return epoch


def held_out_nll(dist, x):
  return float(-np.mean(tff.train.batched_log_prob(dist, x)))


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


def main(argv):
  del argv
  args = types.SimpleNamespace(d=16, lr=1e-3)
  if FLAGS.quick:
    args.n, args.batch, args.epochs, args.layers, args.hidden = 4096, 256, 4, 2, [32]
  else:
    args.n, args.batch, args.epochs, args.layers, args.hidden = 32768, 512, 5, 6, [128, 128]
  env = _common.environment()
  print(_common.header_line(env))
  print(f"FlowModel.fit vs bare tf.function(jit_compile=True) loop: D={args.d}, "
        f"N={args.n}, batch {args.batch}, {args.layers} layers {args.hidden}, "
        f"{args.epochs} timed epochs")
  rows = run(args)
  _common.table(
      ["flow", "trainer", "samples/s", "fit/bare", "samples/CPU-s", "fit/bare (CPU)",
       "vs TFP RealNVP bare", "held-out NLL"],
      [[r["flow"], r["trainer"], f"{r['samples_per_s']:,.0f}", f"{r['fit_over_bare']:.3f}",
        f"{r['samples_per_cpu_s']:,.0f}", f"{r['fit_over_bare_cpu']:.3f}",
        f"{r['vs_tfp_realnvp_bare']:.2f}", f"{r['held_out_nll']:.3f}"] for r in rows],
      title="FlowModel.fit against the bare compiled step")
  _common.write_results("keras_quick" if FLAGS.quick else "keras",
                        {"config": vars(args), "rows": rows}, env)


if __name__ == "__main__":
  app.run(main)
