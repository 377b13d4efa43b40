"""MAF -> IAF probability-density distillation on 64-D digits: a fast sampler from a slow one.

1. Teacher: a MAF (``tff.flows.maf``, TFP's ``MaskedAutoregressiveFlow``) trained by maximum
   likelihood on scikit-learn's 8x8 digits (64-D, dequantised ``(n + u) / 17`` and
   standardised per pixel), with ``tff.keras.FlowModel`` and early stopping on a validation
   split. Its density is one parallel pass; sampling inverts it one dimension at a time:
   64 sequential passes per layer.
2. Student: an IAF (``tff.flows.iaf``, ``tfb.Invert(MaskedAutoregressiveFlow)``) of the same
   size, then a trainable per-dimension scale (starting at 0.5), trained by
   ``tff.distill.density_distillation`` to minimise KL(student || teacher) on its own
   samples. Sampling is one pass per layer.

Reported: the teacher's test NLL, the final KL(student || teacher) estimate, the student's test
NLL on real data (this needs the IAF's sequential inverse, used here for evaluation only), and
the wall time of drawing ``num_timing_samples`` samples from each (compiled ``tf.function``,
median of repeats after a warm-up) with their ratio.

    python examples/distill.py --out runs/distill            # about a minute, 2 cores
    python examples/distill.py --quick --out /tmp/distill    # smoke run

Writes ``metrics.json`` to ``--out``.
"""

import json
import os
import time

from absl import app
from absl import flags

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows as tff

tfb = tfp.bijectors

flags.DEFINE_integer("teacher_epochs", 60, "maximum epochs of the teacher (early stopping)")
flags.DEFINE_integer("steps", 3000, "distillation steps")
flags.DEFINE_integer("batch_size", 256, "student samples per distillation step")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (teacher and student)")
flags.DEFINE_integer("num_timing_samples", 5000, "samples per timed sampling call")
flags.DEFINE_integer("seed", 0, "seed of the data, the flows and the samples")
flags.DEFINE_string("out", "runs/distill", "output directory (metrics.json)")
flags.DEFINE_bool("quick", False, "smoke run: 3 teacher epochs, 50 distillation steps")
FLAGS = flags.FLAGS


def load_digits(seed=0):
  """(x_train, x_test) float32 [N, 64]: dequantised digits, standardised per pixel."""
  x_train, x_test = tff.datasets.digits(seed=seed)
  rng = np.random.default_rng(seed)
  dequant = lambda n: ((n.reshape(len(n), -1) + rng.uniform(size=(len(n), 64))) / 17.)
  x_train, x_test = dequant(x_train), dequant(x_test)
  mean, std = x_train.mean(0), x_train.std(0)
  return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def _flow(kind, num_layers, hidden_units, seed, init_scale=1.):
  builder = tff.flows.maf if kind == "maf" else tff.flows.iaf
  flow = builder([64], num_layers=num_layers, hidden_units=hidden_units, seed=seed)
  # TFP's MADE starts from Glorot weights: scale them down so that the flow starts near the
  # identity (a tame standard-normal-like density) instead of a random, wild one.
  for v in flow.trainable_variables:
    v.assign(0.1 * v)
  if init_scale != 1.:
    # A trainable per-dimension scale on the data side, starting at init_scale.
    scale = tfp.util.TransformedVariable(tf.fill([64], init_scale), tfb.Softplus(),
                                         name="student_scale")
    flow = tfb.Chain([tfb.Scale(scale), flow])
  return tff.flows.distribution(flow, [64])


def _sampling_seconds(dist, n, repeats=5):
  fn = tf.function(lambda seed: dist.sample(n, seed=seed), autograph=False)
  fn(tf.constant([0, 0]))  # trace and warm up
  times = []
  for i in range(repeats):
    start = time.perf_counter()
    fn(tf.constant([1, i])).numpy()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def run(teacher_epochs=60, distill_steps=3000, num_layers=5, hidden_units=(128, 128),
        batch_size=256, learning_rate=1e-3, num_timing_samples=5000, seed=0, verbose=True):
  """Trains the teacher, distils the student; returns a results dict."""
  x_train, x_test = load_digits(seed)
  teacher = _flow("maf", num_layers, hidden_units, seed)
  model = tff.keras.FlowModel(teacher)
  model.compile(optimizer=keras.optimizers.Adam(learning_rate, clipnorm=10.))
  # 1438 images and an unbounded MAF overfit fast (held-out NLL blows up after ~15 epochs):
  # early stopping on a validation split keeps the best teacher.
  stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=5,
                                       restore_best_weights=True)
  start = time.perf_counter()
  history = model.fit(x_train, batch_size=128, epochs=teacher_epochs, verbose=0,
                      validation_split=0.15, callbacks=[stop])
  teacher_seconds = time.perf_counter() - start
  teacher_epochs_run = len(history.history["loss"])
  teacher_nlls = -np.asarray(model.log_prob(x_test), np.float64)
  teacher_nll = float(np.mean(teacher_nlls))
  if verbose:
    print(f"teacher MAF: test NLL {teacher_nll:.2f} nats ({teacher_seconds:.1f}s)", flush=True)

  # The student starts narrower than the data (scale 0.5): the teacher's log-density of
  # dequantised pixels falls off a cliff outside their support (-inf in float32), and
  # reverse-KL training only needs the student to start where the teacher is finite.
  student = _flow("iaf", num_layers, hidden_units, seed + 1, init_scale=0.5)
  result = tff.distill.density_distillation(
      teacher, student, num_steps=distill_steps, batch_size=batch_size,
      learning_rate=learning_rate,
      seed=seed, log_every=500 if verbose else 0)
  # The student as a model of the data (sequential IAF inverse: evaluation only).
  student_nlls = -np.asarray(tf.function(student.log_prob, autograph=False)(
      tf.constant(x_test)), np.float64)
  student_nll = float(np.mean(student_nlls))
  t_teacher = _sampling_seconds(teacher, num_timing_samples)
  t_student = _sampling_seconds(student, num_timing_samples)
  out = {"dim": 64, "num_layers": num_layers, "hidden_units": list(hidden_units),
         "teacher_epochs": teacher_epochs_run, "distill_steps": distill_steps,
         "teacher_test_nll": teacher_nll, "student_test_nll": student_nll,
         # The mean is at the mercy of a few held-out images an overfitted MAF puts ~0 mass on.
         "teacher_test_nll_median": float(np.median(teacher_nlls)),
         "student_test_nll_median": float(np.median(student_nlls)),
         "teacher_test_nll_over_1000": int(np.sum(teacher_nlls > 1000.)),
         "kl_student_teacher": result.kl, "kl_stderr": result.kl_stderr,
         "kl_first_100_steps": float(np.mean(result.history[:100])),
         "distill_seconds": result.seconds, "teacher_train_seconds": teacher_seconds,
         "num_timing_samples": num_timing_samples,
         "teacher_sample_seconds": t_teacher, "student_sample_seconds": t_student,
         "sampling_speedup": t_teacher / t_student}
  if verbose:
    print(f"KL(student || teacher) = {result.kl:.3f} ± {result.kl_stderr:.3f} nats; student "
          f"test NLL {student_nll:.2f} nats; sampling {num_timing_samples}: teacher "
          f"{t_teacher * 1e3:.1f} ms, student {t_student * 1e3:.1f} ms "
          f"({out['sampling_speedup']:.1f}x faster)", flush=True)
  return out


def main(argv):
  del argv
  epochs, steps, timing = FLAGS.teacher_epochs, FLAGS.steps, FLAGS.num_timing_samples
  if FLAGS.quick:
    epochs, steps, timing = 3, 50, 500
  out = run(epochs, steps, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
            num_timing_samples=timing, seed=FLAGS.seed)
  # Strict JSON: a non-finite mean NLL (a test image the model gives ~0 mass) becomes null.
  out = {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in out.items()}
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(os.path.join(FLAGS.out, "metrics.json"), "w") as f:
    json.dump(out, f, indent=2, allow_nan=False)
  print(f"wrote {FLAGS.out}/metrics.json")


if __name__ == "__main__":
  app.run(main)
