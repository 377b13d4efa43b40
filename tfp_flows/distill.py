"""Probability-density distillation: train a fast-sampling student to match a teacher density.

Given a teacher density ``p`` that is cheap to *evaluate* (a MAF: one parallel pass per
``log_prob``, but D sequential passes per layer to *sample*) and a student ``q`` that is cheap
to *sample* (an IAF, ``tfb.Invert(MAF)``: one pass per sample), minimise the reverse KL::

    KL(q || p) = E_{x ~ q}[ log q(x) - log p(x) ]

with reparameterised student samples ``x = f(z)``, ``z ~ base``. The student's log-density of
its own samples needs no inverse (which is sequential for an IAF)::

    log q(f(z)) = log base(z) - log|det df/dz|(z)

and the teacher's ``log p(x)`` is one parallel pass. Gradients flow into the student only;
the teacher's variables are left untouched. This is the training signal of parallel WaveNet
(van den Oord et al. 2018), without its extra perceptual/contrastive terms.

The Monte-Carlo estimate of KL(q || p) is unbiased and non-negative in expectation; it is
exactly zero when q = p.

#### Examples

    teacher = tff.flows.distribution(tff.flows.maf([64], num_layers=5), [64])   # trained on data
    student = tff.flows.distribution(tff.flows.iaf([64], num_layers=5), [64])
    result = tff.distill.density_distillation(teacher, student, num_steps=2000, batch_size=256)
    result.kl, result.kl_stderr            # final KL(student || teacher) estimate, nats
    student.sample(10_000, seed=1)         # one parallel pass per IAF layer

#### References

[1] van den Oord et al. Parallel WaveNet: Fast High-Fidelity Speech Synthesis. ICML 2018.
[2] Kingma et al. Improved Variational Inference with Inverse Autoregressive Flow. NIPS 2016.
[3] Papamakarios, Pavlakou, Murray. Masked Autoregressive Flow for Density Estimation. 2017.
"""

import dataclasses
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import train

tfd = tfp.distributions
tfb = tfp.bijectors

__all__ = ["density_distillation", "sample_and_log_prob", "kl_estimate", "DistillationResult"]


@dataclasses.dataclass
class DistillationResult:
  """What ``density_distillation`` returns.

  Attributes:
    history: per-step Monte-Carlo KL(student || teacher) estimates (float64 numpy, nats), each
      on one training batch.
    kl: final KL(student || teacher) estimate on ``eval_samples`` fresh student samples.
    kl_stderr: its Monte-Carlo standard error.
    seconds: wall time of the optimisation loop.
  """
  history: np.ndarray
  kl: float
  kl_stderr: float
  seconds: float


def sample_and_log_prob(distribution, n, seed):
  """``n`` reparameterised samples of ``distribution`` and its log-density at them.

  TFP's ``experimental_sample_and_log_prob``: a ``TransformedDistribution`` with an injective
  bijector computes the log-density from the base sample ``z`` (``log base(z) - fldj(z)``),
  never through ``bijector.inverse``, so an IAF student gets its own log-probs in one pass
  (nested transformed distributions recurse).

  Args:
    distribution: a ``tfd.Distribution`` with ``FULLY_REPARAMETERIZED`` samples.
    n: number of samples (int or scalar int tensor).
    seed: a stateless seed (int or shape-[2] int tensor).

  Returns:
    ``(x, log_prob)`` with ``x`` of shape ``[n] + event_shape`` and ``log_prob`` of ``[n]``
    (plus any batch shape of ``distribution``).
  """
  return distribution.experimental_sample_and_log_prob(n, seed=seed)


def _check_pair(teacher, student):
  for name, d in (("teacher", teacher), ("student", student)):
    if not isinstance(d, tfd.Distribution):
      raise TypeError(f"{name} must be a tfd.Distribution, got {type(d).__name__}.")
  if student.reparameterization_type != tfd.FULLY_REPARAMETERIZED:
    raise ValueError("the student's samples must be fully reparameterised (gradients flow "
                     "through x = f(z)); got "
                     f"{student.reparameterization_type}.")
  ts, ss = teacher.event_shape, student.event_shape
  if not (ts.is_fully_defined() and ss.is_fully_defined()) or ts != ss:
    raise ValueError(f"teacher and student must have the same, fully known event shape; got "
                     f"teacher {ts} and student {ss}.")
  if teacher.dtype != student.dtype:
    raise TypeError(f"teacher and student dtypes differ: {teacher.dtype} vs {student.dtype}.")
  if not student.trainable_variables:
    raise ValueError("the student has no trainable variables.")


def _seed_pair(seed):
  if seed is None:
    seed = np.random.default_rng().integers(2**31)
  return tf.constant([int(seed), 0x5EED], tf.int32)


def kl_estimate(student, teacher, num_samples=10_000, batch_size=2_000, seed=0):
  """Monte-Carlo KL(student || teacher) in nats: ``(estimate, standard_error)``.

  Uses ``num_samples`` fresh student samples (in batches of ``batch_size``) and the
  student's own log-density at them (``sample_and_log_prob``).
  """
  _check_pair(teacher, student)
  if int(num_samples) < 2 or int(batch_size) < 1:
    raise ValueError(f"need num_samples >= 2 and batch_size >= 1, got {num_samples}, "
                     f"{batch_size}.")
  base = _seed_pair(seed)

  @tf.function
  def chunk(n, s):
    x, lq = sample_and_log_prob(student, n, s)
    return lq - teacher.log_prob(x)

  diffs, done, i = [], 0, 0
  while done < int(num_samples):
    n = min(int(batch_size), int(num_samples) - done)
    diffs.append(chunk(tf.constant(n), base + tf.constant([0, 1 + i], tf.int32)).numpy())
    done, i = done + n, i + 1
  d = np.concatenate(diffs).astype(np.float64)
  return float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size))


def density_distillation(teacher, student, num_steps=1000, batch_size=256, optimizer=None,
                         learning_rate=1e-3, seed=0, eval_samples=10_000, jit_compile=False,
                         log_every=0):
  """Trains ``student`` to minimise KL(student || teacher); the teacher is not changed.

  Args:
    teacher: a ``tfd.Distribution`` whose ``log_prob`` is cheap (e.g. a MAF flow).
    student: a ``tfd.Distribution`` with reparameterised samples and trainable variables;
      a ``TransformedDistribution`` (e.g. an IAF flow) gets its log-density from the base
      sample, without the inverse.
    num_steps: optimisation steps.
    batch_size: student samples per step.
    optimizer: anything with ``apply_gradients(zip(grads, variables))`` (a tf_keras or
      Keras 3 optimiser); default ``tf_keras.optimizers.Adam(learning_rate)``.
    learning_rate: used only by the default optimiser.
    seed: int seed of the student samples (stateless; the same seed gives the same run).
    eval_samples: fresh samples of the final KL estimate (0 to skip it: ``kl`` is then NaN).
    jit_compile: compile the training step with XLA.
    log_every: print the running KL every that many steps (0: silent).

  Returns:
    a ``DistillationResult`` (``history``, ``kl``, ``kl_stderr``, ``seconds``).
  """
  _check_pair(teacher, student)
  num_steps, batch_size = int(num_steps), int(batch_size)
  if num_steps < 1 or batch_size < 1:
    raise ValueError(f"need num_steps >= 1 and batch_size >= 1, got {num_steps}, {batch_size}.")
  if optimizer is None:
    import tf_keras  # a TFP dependency; works on plain tf.Variables.
    optimizer = tf_keras.optimizers.Adam(learning_rate)
  variables = list(student.trainable_variables)
  teacher_ids = {id(v) for v in teacher.trainable_variables}
  if any(id(v) in teacher_ids for v in variables):
    raise ValueError("teacher and student share variables; distillation would move both.")
  # One reverse-KL step (tff.train): KL(student || teacher) on the student's own samples, the
  # teacher's log_prob as the target; gradients reach the student's variables only.
  step = train.make_vi_step(student, teacher.log_prob, optimizer, batch_size,
                            variables=variables, jit_compile=jit_compile)
  base = _seed_pair(seed)
  initial = [v.numpy() for v in variables]
  history = np.empty(num_steps)
  start = time.perf_counter()
  for i in range(num_steps):
    history[i] = step(base + tf.constant([0, 1_000_003 + i], tf.int32)).numpy()
    if not np.isfinite(history[i]):
      # That step's update is not finite either: give the student back its initial values.
      for v, value in zip(variables, initial):
        v.assign(value)
      hint = ("the teacher's log_prob is not finite at some of the initial student samples: "
              "start the student inside the teacher's support (e.g. a narrower base or an "
              "initial affine layer) or use a smoother teacher" if i == 0 else
              "lower the learning rate")
      raise FloatingPointError(f"distillation diverged: non-finite KL at step {i}; {hint}. "
                               "The student's variables were reset to their initial values.")
    if log_every and (i + 1) % int(log_every) == 0:
      print(f"step {i + 1}/{num_steps}: KL(student || teacher) ~ "
            f"{history[max(0, i + 1 - log_every):i + 1].mean():.4f}")
  seconds = time.perf_counter() - start
  kl, stderr = float("nan"), float("nan")
  if eval_samples:
    kl, stderr = kl_estimate(student, teacher, eval_samples, min(int(eval_samples), 2_000),
                             seed=int(seed) + 1)
  return DistillationResult(history=history, kl=kl, kl_stderr=stderr, seconds=seconds)
