"""Training steps: maximum likelihood, batched log-densities and reverse KL, written once.

Density distillation, the examples and the benchmarks train through these functions, so the
loss, the variable constraints and the compilation are the same everywhere.

Maximum likelihood (density estimation), over a batch ``x_1..x_N`` with optional contexts::

    loss = -(1/N) sum_i log p(x_i | c_i)

Reverse KL (variational inference, distillation), for an unnormalised target ``log p~``::

    loss = E_{z ~ q}[log q(z) - log p~(z)]   (Monte Carlo, reparameterised samples of q)

which is ``KL(q || p) - log Z`` and so is minimised by ``q = p``. ``log q(z)`` comes with the
sample (``experimental_sample_and_log_prob``: for a flow, the forward log-det at the base
point), so an IAF surrogate is never inverted.

Any other differentiable objective (an ELBO with encoder and decoder, a joint model's
likelihood) gets the same compiled step from ``make_train_step``.

Variables with a ``constraint`` (TFP's MADE keeps its autoregressive masks there) are projected
after every optimizer step. The optimizer is any object with ``apply_gradients`` (a Keras 3 or
tf_keras optimizer; a learning-rate schedule goes into the optimizer); this module does not
import Keras.

#### Examples

    flow = tff.flows.realnvp([2], num_layers=4, hidden_units=[64, 64])
    dist = tff.flows.distribution(flow, [2])
    losses = tff.train.fit(dist, x, optimizer=keras.optimizers.Adam(1e-3), steps=2000,
                           batch_size=512)
    test_log_prob = tff.train.batched_log_prob(dist, x_test)

    # Variational inference: q fitted to exp(-U) by reverse KL.
    q = tff.flows.distribution(tff.flows.planar([2], num_layers=8), [2])
    step = tff.train.make_vi_step(q, tff.datasets.potential("U1").log_prob,
                                  keras.optimizers.Adam(1e-2), num_samples=256)
    losses = [float(step(tf.constant([i, 0]))) for i in range(1000)]

#### References

[1] Papamakarios, Nalisnick, Rezende, Mohamed, Lakshminarayanan. Normalizing Flows for
    Probabilistic Modeling and Inference. JMLR 2021 (section 2.3: forward and reverse KL).
"""

import weakref

import numpy as np
import tensorflow as tf

from tfp_flows import core

__all__ = ["negative_log_likelihood", "reverse_kl", "make_train_step", "make_ml_step",
           "make_vi_step", "batched_log_prob", "initialize", "fit", "apply_constraints"]


def _log_prob(distribution, x, context):
  if context is None:
    return distribution.log_prob(x)
  kwargs = core.conditional_kwargs(distribution.bijector, context)
  return distribution.log_prob(x, bijector_kwargs=kwargs)


def negative_log_likelihood(distribution, x, context=None):
  """``-mean(log p(x | context))`` in nats."""
  return -tf.reduce_mean(_log_prob(distribution, x, context))


def apply_constraints(variables):
  """Projects every variable that has a ``constraint`` (e.g. TFP MADE's kernel masks)."""
  for v in variables:
    constraint = getattr(v, "constraint", None)
    if constraint is not None:
      v.assign(constraint(tf.convert_to_tensor(v)))


def make_train_step(loss_fn, optimizer, variables, *, jit_compile=True, clip_norm=None):
  """A compiled step ``step(*args) -> loss`` that takes one optimizer step on ``loss_fn(*args)``.

  Args:
    loss_fn: ``(*args) -> scalar loss`` (tensors in, differentiable in ``variables``).
    optimizer: an optimizer with ``apply_gradients`` (Keras 3 or tf_keras).
    variables: the variables to train (a list; e.g. a Keras model's ``trainable_weights`` plus
      a flow's ``trainable_variables``).
    jit_compile: compile the step with XLA.
    clip_norm: clip the gradients to this global norm (None: no clipping).
  """
  variables = list(variables)
  if not variables:
    raise ValueError("make_train_step: no variables to train.")

  @tf.function(jit_compile=jit_compile, autograph=False)
  def step(*args):
    with tf.GradientTape() as tape:
      loss = loss_fn(*args)
    grads = tape.gradient(loss, variables)
    if clip_norm is not None:
      grads, _ = tf.clip_by_global_norm(grads, clip_norm)
    optimizer.apply_gradients(zip(grads, variables))
    apply_constraints(variables)
    return loss

  return step


def _variables(distribution, variables):
  return list(variables if variables is not None else distribution.trainable_variables)


def make_ml_step(distribution, optimizer, *, variables=None, jit_compile=True, clip_norm=None):
  """A compiled maximum-likelihood step ``step(x, context=None) -> loss``.

  Args:
    distribution: the flow's distribution (its trainable variables are found by ``tf.Module``
      traversal unless ``variables`` is given).
    optimizer: an optimizer with ``apply_gradients`` (Keras 3 or tf_keras).
    variables: the variables to train (default: ``distribution.trainable_variables``).
    jit_compile: compile the step with XLA.
    clip_norm: clip the gradients to this global norm (None: no clipping).
  """
  step = make_train_step(lambda x, context: negative_log_likelihood(distribution, x, context),
                         optimizer, _variables(distribution, variables),
                         jit_compile=jit_compile, clip_norm=clip_norm)
  return lambda x, context=None: step(x, context)


def reverse_kl(distribution, target_log_prob_fn, num_samples, seed):
  """Monte-Carlo ``E_q[log q(z) - log p~(z)]`` on ``num_samples`` reparameterised samples."""
  z, log_q = distribution.experimental_sample_and_log_prob(num_samples, seed=seed)
  return tf.reduce_mean(log_q - target_log_prob_fn(z))


def make_vi_step(distribution, target_log_prob_fn, optimizer, num_samples, *, variables=None,
                 jit_compile=True, clip_norm=None):
  """A compiled reverse-KL step ``step(seed) -> loss`` for ``q = distribution``.

  ``seed`` is a stateless seed (an int32 tensor of shape ``[2]``); ``target_log_prob_fn(z)``
  returns the unnormalised target log-density of samples ``z`` (shape ``[num_samples]``).
  The loss is ``KL(q || p) - log Z`` (``log Z`` of the target's normaliser), estimated on
  ``num_samples`` samples with ``log q`` from the sampling pass (no inverse).
  """
  step = make_train_step(
      lambda seed: reverse_kl(distribution, target_log_prob_fn, num_samples, seed), optimizer,
      _variables(distribution, variables), jit_compile=jit_compile, clip_norm=clip_norm)
  return step


# One compiled log_prob per (distribution, jit_compile), so that repeated evaluations (e.g. a
# validation set every few steps) trace once; entries go with their distribution.
_LOG_PROB_FNS = weakref.WeakKeyDictionary()


def _compiled_log_prob(distribution, jit_compile):
  fns = _LOG_PROB_FNS.setdefault(distribution, {})
  if jit_compile not in fns:
    ref = weakref.ref(distribution)  # the cache must not keep its key alive
    fns[jit_compile] = tf.function(lambda x, c: _log_prob(ref(), x, c), autograph=False,
                                   reduce_retracing=True, jit_compile=jit_compile)
  return fns[jit_compile]


def batched_log_prob(distribution, x, batch_size=4096, context=None, jit_compile=False):
  """``log p(x [| context])`` of a large array, evaluated in compiled batches; a float64 array.

  The compiled function is kept with the distribution, so repeated calls do not retrace
  (a last, smaller batch traces once more).
  """
  x = np.asarray(x)
  if len(x) == 0:
    return np.zeros([0], np.float64)
  dtype = distribution.dtype
  log_prob = _compiled_log_prob(distribution, bool(jit_compile))
  out = []
  for i in range(0, len(x), int(batch_size)):
    cb = None if context is None else tf.constant(np.asarray(context)[i:i + batch_size], dtype)
    out.append(np.asarray(log_prob(tf.constant(x[i:i + batch_size], dtype), cb)))
  return np.concatenate(out).astype(np.float64)


def initialize(distribution, x, context=None):
  """Runs the pending data-dependent initialisations (ActNorm, ...) on the batch ``x``, eagerly.

  Outside any compiled step, so that a bad first batch is reported before training: each layer
  checks the batch it sees (``tff.core.data_init``: an empty, non-finite or too-small batch is
  a ``ValueError`` and leaves the layer waiting for a usable one). Returns the layers that were
  pending (empty if none was).
  """
  pending = core.pending_data_init(distribution.bijector)
  if pending:
    dtype = distribution.dtype
    _log_prob(distribution, tf.constant(np.asarray(x), dtype),
              None if context is None else tf.constant(np.asarray(context), dtype))
  return pending


def fit(distribution, x, *, optimizer, steps, batch_size, context=None, seed=0,
        jit_compile=True, clip_norm=None, callback=None):
  """Maximum likelihood by minibatch steps on in-memory data; returns the per-step losses.

  Batches are drawn without replacement within each pass over ``x`` (reshuffled every pass,
  seeded); pending data-dependent initialisations run on the first batch (``initialize``).
  ``callback(step, loss)`` is called after every step (``loss`` a tensor: reading it waits for
  the step); returning ``True`` stops training.
  """
  x = np.asarray(x)
  dtype = distribution.dtype
  n = len(x)
  if n == 0:
    raise ValueError("fit: no training data.")
  batch_size = min(int(batch_size), n)
  c = None if context is None else np.asarray(context)
  if c is not None and len(c) != n:
    raise ValueError(f"fit: {n} data rows but {len(c)} context rows.")
  train_step = make_ml_step(distribution, optimizer, jit_compile=jit_compile,
                            clip_norm=clip_norm)
  rng = np.random.default_rng(seed)
  order, pos, losses = rng.permutation(n), 0, []
  for i in range(int(steps)):
    if pos + batch_size > n:
      order, pos = rng.permutation(n), 0
    idx = order[pos:pos + batch_size]
    pos += batch_size
    if i == 0:
      initialize(distribution, x[idx], None if c is None else c[idx])
    cb = None if c is None else tf.constant(c[idx], dtype)
    loss = train_step(tf.constant(x[idx], dtype), cb)
    losses.append(loss)
    if callback is not None and callback(i, loss):
      break
  return [float(v) for v in losses]
