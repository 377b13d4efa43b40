"""Keras 3 training for any TFP distribution: ``FlowModel``.

A Keras 3 ``Model`` only sees ``keras.Variable``s created through its layers. The variables of
a flow live elsewhere: in TFP bijectors and our networks (``tf.Module``s), in the tf_keras
layers of TFP's ``AutoregressiveNetwork``, and behind Keras 3 layers used as conditioners
(which the couplings hold as ``tf.Variable``s). ``FlowModel`` finds all of them by
``tf.Module`` traversal of the distribution (``distribution.variables``) and tracks each one
through a ``keras.Variable`` whose value *is* that ``tf.Variable`` (no copy). So the optimizer
updates the flow's own variables, and ``trainable_weights``, ``count_params``, ``summary``,
``get_weights``/``set_weights``, ``save_weights``/``load_weights`` (``.weights.h5``),
``ModelCheckpoint`` and ``EarlyStopping(restore_best_weights=True)`` all see every variable,
non-trainable ones included (data-dependent-init flags and statistics are saved and restored,
so a reloaded model does not initialise again). Variable constraints are carried over (TFP's
MADE networks keep their autoregressive masks through ``kernel_constraint``; Keras applies
the constraint after each optimizer step).

The loss is the mean negative log-likelihood in nats::

    loss = -(1/N) sum_i log p(x_i [| c_i])

and, when the data were dequantised (``bin_width`` given), bits per dimension of the
*discrete* data::

    bits_per_dim = (loss - D log(bin_width)) / (D ln 2)

where ``D`` is the number of dimensions of an event and ``bin_width`` is the width of one
quantisation bin in the units the model sees. Integer data ``n`` in ``{0, ..., K-1}``
dequantised as ``x = (n + u) / K`` with ``u ~ U[0, 1)^D`` have ``bin_width = 1/K`` (e.g.
``1/17`` for sklearn's 8x8 digits with values 0..16, ``1/256`` for 8-bit images); data kept
in counts (``x = n + u``) have ``bin_width = 1``. The formula is the change of variables from
``x`` to ``y = x / bin_width`` (whose bins have width 1, so ``-log p_y`` bounds the discrete
negative log-likelihood): ``log p_y = log p_x + D log(bin_width)``. Preprocessing bijectors
inside the flow (e.g. a logit transform) are already part of ``log p_x``.

Conditional flows: a context ``c`` (a label one-hot, a vector) reaches the conditioners
through ``bijector_kwargs`` (``tff.flows.conditional_kwargs``); ``fit`` takes ``(x, c)``
pairs, ``log_prob(x, context=c)``, ``sample(n, context=c)``.

Robustness. Every training step records, in variables and without a host round trip, the
rows with NaN/inf and whether the loss was finite; ``fit`` reads them every ``check_every``
steps (50 by default) and at each epoch end:

* rows of a batch with NaN/inf (in ``x`` or the context) are always left out of the update,
  so the model stays finite; with ``nonfinite="raise"`` (default) training then stops with a
  ``NonFiniteBatchError`` naming the epoch and the first such batch, with
  ``nonfinite="skip"`` such rows are skipped and counted (a warning at the end of each epoch,
  ``model.skipped_rows``).
* a non-finite loss (a diverging learning rate) stops training with a message naming the
  batch; the weights are restored to those of the last snapshot taken after a check found
  the loss finite (the start of ``fit``, each epoch end, and every ``snapshot_every`` steps
  when given), and ``model.diverged`` says where it happened.
* data whose event shape differs from the distribution's raise ``ValueError`` naming the
  expected and the actual shapes.

#### Examples

    flow = tff.flows.realnvp([2], num_layers=4, hidden_units=[64, 64])
    model = tff.keras.FlowModel(tff.flows.distribution(flow, [2]))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x_train, batch_size=256, epochs=10, validation_data=(x_val,))
    model.log_prob(x_test); model.sample(1000, seed=1, temperature=0.8)
    model.save_weights("flow.weights.h5"); model.export("flow_savedmodel")

    # Conditional: labels one-hot [N, 2]
    flow = tff.flows.realnvp([2], conditional_shape=[2])
    model = tff.keras.FlowModel(tff.flows.distribution(flow, [2]))
    model.compile("adam"); model.fit(x, labels_one_hot, epochs=10)
    model.sample(500, context=[1., 0.], seed=0)

#### References

[1] Papamakarios, Nalisnick, Rezende, Mohamed, Lakshminarayanan. Normalizing Flows for
    Probabilistic Modeling and Inference. JMLR 2021 (dequantisation and bits/dim, sec. 5).
[2] Theis, van den Oord, Bethge. A note on the evaluation of generative models. ICLR 2016.
"""

import math
import re
import warnings

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import core

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["FlowModel", "NonFiniteBatchError", "tracked_variables"]


class NonFiniteBatchError(ValueError):
  """A training batch contained NaN or inf values."""


def tracked_variables(distribution):
  """Every ``tf.Variable`` of ``distribution`` (trainable or not), by ``tf.Module`` traversal.

  Raises ``TypeError`` if ``distribution`` is not a ``tf.Module`` (every TFP distribution is).
  """
  if not isinstance(distribution, tf.Module):
    raise TypeError(f"FlowModel needs a TFP distribution (a tf.Module), got "
                    f"{type(distribution).__name__}.")
  return list(distribution.variables)


def _keras_name(variable, index):
  name = variable.name.split(":")[0]
  name = re.sub(r"[^A-Za-z0-9_.\-]", "_", name.replace("/", "."))
  return f"{index:03d}.{name}"


def _wrap(variable, index):
  """A ``keras.Variable`` whose value is ``variable`` itself (not a copy)."""
  kv = keras.Variable(variable, trainable=variable.trainable, name=_keras_name(variable, index))
  if kv.value is not variable:  # pragma: no cover - guards a Keras internals change.
    raise RuntimeError("keras.Variable did not adopt the tf.Variable; this Keras version is "
                       "not supported by tfp_flows.keras.")
  constraint = getattr(variable, "constraint", None)
  if constraint is not None:
    kv.constraint = lambda v, c=constraint: c(tf.convert_to_tensor(v))
  return kv


class FlowModel(keras.Model):
  """A ``keras.Model`` that trains a TFP distribution by maximum likelihood.

  Args:
    distribution: any TFP distribution whose variables ``tf.Module`` traversal finds
      (``tff.flows.distribution(flow, shape)``, a ``TransformedDistribution`` of TFP's MAF,
      a mixture of flows, ...). Its event shape must be fully known.
    bin_width: width of one quantisation bin of dequantised data, in the units the model
      sees (``1/K`` for ``K`` levels scaled to ``[0, 1)``); when given, logs report
      ``bits_per_dim`` (see the module docstring for the formula).
    num_dims: ``D`` in bits/dim; defaults to the number of entries of an event.
    context_shape: shape of the conditional input. Read from the flow (the public
      ``conditional_shape`` of its layers, ``tff.core``'s conditioning protocol); when given,
      it must agree with that.
    nonfinite: 'raise' (default) or 'skip' for training rows with NaN/inf (module docstring).
    check_every: read the NaN/divergence records every this many training steps (and at each
      epoch end); 1 stops at the very batch, at the cost of a host round trip per step.
    snapshot_every: also snapshot the weights every this many training steps (the weights
      that divergence restores; rounded up to a multiple of ``check_every``); None snapshots
      at the start and at each epoch end only.
    name: the model's name.
  """

  def __init__(self, distribution, bin_width=None, num_dims=None, context_shape=None,
               nonfinite="raise", check_every=50, snapshot_every=None, name="flow_model",
               **kwargs):
    super().__init__(name=name, **kwargs)
    variables = tracked_variables(distribution)
    event_shape = distribution.event_shape
    if not event_shape.is_fully_defined():
      raise ValueError(f"FlowModel needs a fully known event shape, got {event_shape}.")
    if nonfinite not in ("raise", "skip"):
      raise ValueError(f"nonfinite must be 'raise' or 'skip', got {nonfinite!r}.")
    if bin_width is not None and not float(bin_width) > 0.:
      raise ValueError(f"bin_width must be positive, got {bin_width!r}.")
    if int(check_every) < 1:
      raise ValueError(f"check_every must be a positive int, got {check_every}.")
    if snapshot_every is not None and int(snapshot_every) < 1:
      raise ValueError(f"snapshot_every must be a positive int or None, got {snapshot_every}.")
    self._flow_distribution = distribution
    self._event_shape_ = tuple(event_shape.as_list())
    self._flow_dtype = tf.as_dtype(distribution.dtype)
    self._num_dims = int(num_dims) if num_dims is not None else int(np.prod(self._event_shape_))
    self._bin_width = None if bin_width is None else float(bin_width)
    self._nonfinite = nonfinite
    self._check_every = int(check_every)
    self._snapshot_every = None if snapshot_every is None else int(snapshot_every)
    bijector = getattr(distribution, "bijector", None)
    self._bijector_ = bijector
    found = None if bijector is None else core.conditional_shape(bijector)
    self._conditional = found is not None
    if context_shape is not None:
      context_shape = tuple(int(d) for d in tf.TensorShape(context_shape).as_list())
      if found is None:
        raise ValueError(f"context_shape={list(context_shape)} given, but no layer of the flow "
                         "takes a context (none has a conditional_shape).")
      if context_shape != found:
        raise ValueError(f"context_shape={list(context_shape)} given, but the flow's layers take "
                         f"contexts of shape {list(found)}.")
    self._context_shape = found
    # The flow's own tf.Variables, tracked by Keras through wrappers (trainable first).
    self._flow_weights = [_wrap(v, i) for i, v in enumerate(variables)]
    # Training records read by the guard (see _record): NaN/inf rows since the last check,
    # and the first step since then with such rows / with a non-finite loss (-1: none).
    with tf.init_scope():
      self._guard_vars = [
          tf.Variable(v, trainable=False, name=n,
                      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
          for v, n in ((0., "nonfinite_rows"), (-1., "first_nonfinite_batch"),
                       (-1., "first_nonfinite_loss"))]
    self._bpd_tracker = (keras.metrics.Mean(name="bits_per_dim") if bin_width is not None
                         else None)
    self.diverged = None
    self.skipped_rows = 0
    self._fns = _FunctionCache()
    self.built = True

  # ---------------------------------------------------------------- properties

  @property
  def flow_distribution(self):
    """The trained distribution (the object passed in; its variables are the weights)."""
    return self._flow_distribution

  @property
  def event_shape(self):
    return self._event_shape_

  @property
  def context_shape(self):
    """Shape of the conditional input, or None for an unconditional flow."""
    return self._context_shape

  @property
  def bin_width(self):
    return self._bin_width

  @property
  def num_dims(self):
    return self._num_dims

  # ---------------------------------------------------------------- inputs

  def _check_x(self, x):
    if not tf.is_tensor(x):
      x = np.asarray(x)
    dtype = tf.as_dtype(x.dtype)
    if not (dtype.is_floating or dtype.is_integer):
      raise TypeError(f"{self.name}: data must be numeric, got dtype {dtype.name}.")
    x = tf.cast(x, self._flow_dtype)
    k = len(self._event_shape_)
    shape = x.shape
    if shape.rank is not None and (shape.rank < k + 1 or
                                   not shape[shape.rank - k:].is_compatible_with(
                                       self._event_shape_)):
      raise ValueError(
          f"{self.name}: expected data of shape [batch, {', '.join(map(str, self._event_shape_))}]"
          f" (event shape {list(self._event_shape_)}), got shape {shape.as_list()}.")
    return x

  def _check_context(self, context, batch):
    if not self._conditional:
      if context is not None:
        raise ValueError(f"{self.name}: got a context (a second input), but the flow is not "
                         "conditional. Pass only x, or build the flow with conditional_shape.")
      return None
    if context is None:
      raise ValueError(f"{self.name}: the flow is conditional and needs a context of shape "
                       f"{list(self._context_shape)}: fit(x, context), log_prob(x, context=c).")
    c = tf.convert_to_tensor(context)
    c = tf.cast(c, self._flow_dtype)
    k = len(self._context_shape)
    if c.shape.rank is not None and (c.shape.rank < k or not c.shape[c.shape.rank - k:]
                                     .is_compatible_with(self._context_shape)):
      raise ValueError(f"{self.name}: expected a context with trailing shape "
                       f"{list(self._context_shape)}, got shape {c.shape.as_list()}.")
    lead = tf.shape(batch)[:-len(self._event_shape_)] if tf.is_tensor(batch) else batch
    return tf.broadcast_to(c, tf.concat([lead, list(self._context_shape)], 0))

  def _split_inputs(self, data):
    """(x, context, sample_weight) from any of the forms fit/evaluate/predict pass."""
    x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
    if isinstance(x, dict):
      x, context = x.get("x"), x.get("context")
    elif isinstance(x, (tuple, list)):
      if len(x) != 2:
        raise ValueError(f"{self.name}: inputs must be x or (x, context), got {len(x)} parts.")
      x, context = x
    else:
      context = None
    if y is not None:
      if context is not None:
        raise ValueError(f"{self.name}: got both (x, context) and y; pass the context once.")
      context = y
    x = self._check_x(x)
    return x, self._check_context(context, x), sw

  # ---------------------------------------------------------------- math

  def _log_prob(self, x, context):
    dist = self._flow_distribution
    if context is None:
      return dist.log_prob(x)
    return dist.log_prob(x, bijector_kwargs=core.conditional_kwargs(self._bijector_, context))

  def _bits_per_dim(self, nll):
    d = float(self._num_dims)
    return (nll - d * math.log(self._bin_width)) / (d * math.log(2.))

  def _weighted_nll(self, x, context, sample_weight, mask_nonfinite):
    """Mean NLL over the finite rows (all rows if mask_nonfinite is False), row count."""
    n = tf.shape(x)[0]
    if mask_nonfinite:
      finite = tf.reduce_all(tf.math.is_finite(tf.reshape(x, [n, -1])), axis=1)
      if context is not None:
        finite &= tf.reduce_all(tf.math.is_finite(tf.reshape(context, [n, -1])), axis=1)
      keep = tf.reshape(finite, [-1] + [1] * len(self._event_shape_))
      x = tf.where(keep, x, tf.zeros_like(x))
      if context is not None:
        context = tf.where(tf.reshape(finite, [-1] + [1] * len(self._context_shape)), context,
                           tf.zeros_like(context))
      w = tf.cast(finite, self._flow_dtype)
    else:
      finite = None
      w = tf.ones([n], self._flow_dtype)
    if sample_weight is not None:
      w = w * tf.reshape(tf.cast(sample_weight, self._flow_dtype), [-1])
    lp = self._log_prob(x, context)
    total = tf.reduce_sum(w)
    nll = -tf.reduce_sum(tf.where(w > 0, lp * w, tf.zeros_like(lp))) / tf.maximum(total, 1e-12)
    return nll, total, finite

  def _update_metrics(self, nll, weight):
    self._loss_tracker.update_state(nll, sample_weight=weight)
    if self._bpd_tracker is not None:
      self._bpd_tracker.update_state(self._bits_per_dim(nll), sample_weight=weight)
    return {m.name: m.result() for m in self.metrics}

  # ---------------------------------------------------------------- Keras hooks

  @property
  def metrics(self):
    out = [self._loss_tracker] if getattr(self, "_loss_tracker", None) is not None else []
    return out + ([self._bpd_tracker] if self._bpd_tracker is not None else [])

  def summary(self, print_fn=None, **kwargs):
    """Keras's summary (totals over every flow variable), then parameters per flow layer."""
    super().summary(print_fn=print_fn, **kwargs)
    print_fn = print_fn or print
    bijector = self._bijector_
    parts = (list(bijector.bijectors) if isinstance(bijector, tfb.Composition)
             else [bijector] if bijector is not None else [])
    rows = [(f"{b.name} ({type(b).__name__})", sum(int(np.prod(v.shape)) for v in b.variables))
            for b in parts]
    if rows:
      width = max(len(r[0]) for r in rows) + 2
      print_fn(" Flow layers (sampling order is bottom to top):")
      for label, count in rows:
        print_fn(f"   {label:<{width}}{count:>12,}")

  def compile(self, optimizer="adam", loss=None, **kwargs):
    """``keras.Model.compile`` without a loss: the loss is the mean NLL (nats)."""
    if loss is not None:
      raise ValueError("FlowModel's loss is the negative log-likelihood; compile() takes no "
                       "loss argument.")
    for key in ("metrics", "weighted_metrics"):
      if kwargs.get(key):
        raise ValueError(f"FlowModel reports its own metrics (loss, bits_per_dim); got {key}.")
    super().compile(optimizer=optimizer, **kwargs)

  def call(self, inputs, training=False):
    """Log-probabilities of ``inputs`` (``x`` or ``(x, context)``)."""
    x, context, _ = self._split_inputs(inputs)
    return self._log_prob(x, context)

  def train_step(self, data):
    x, context, sw = self._split_inputs(data)
    variables = self.trainable_variables
    with tf.GradientTape() as tape:
      nll, weight, finite = self._weighted_nll(x, context, sw, mask_nonfinite=True)
    grads = tape.gradient(nll, [v.value for v in variables])
    self._record(tf.reduce_sum(tf.cast(~finite, tf.float32)),
                 tf.cast(~tf.math.is_finite(nll), tf.float32))
    self.optimizer.apply_gradients(zip(grads, variables))
    return self._update_metrics(nll, weight)

  def _record(self, bad_rows, bad_loss):
    """Updates the guard's records in-graph (no host round trip)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
      bad_rows = ctx.all_reduce(tf.distribute.ReduceOp.SUM, bad_rows)
      bad_loss = ctx.all_reduce(tf.distribute.ReduceOp.SUM, bad_loss)
    step = tf.cast(self.optimizer.iterations, tf.float32)
    rows, first_batch, first_loss = self._guard_vars
    rows.assign_add(bad_rows)
    first_batch.assign(tf.where((first_batch < 0.) & (bad_rows > 0.), step, first_batch))
    first_loss.assign(tf.where((first_loss < 0.) & (bad_loss > 0.), step, first_loss))

  def test_step(self, data):
    x, context, sw = self._split_inputs(data)
    nll, weight, _ = self._weighted_nll(x, context, sw, mask_nonfinite=False)
    return self._update_metrics(nll, weight)

  def predict_step(self, data):
    x, context, _ = self._split_inputs(data)
    return self._log_prob(x, context)

  def fit(self, *args, **kwargs):
    """``keras.Model.fit``; adds the training guard (NaN batches, divergence) first."""
    args = list(args)
    positional = len(args) > 5  # fit(x, y, batch_size, epochs, verbose, callbacks, ...)
    callbacks = args[5] if positional else kwargs.pop("callbacks", None)
    callbacks = [_TrainingGuard()] + list(callbacks or [])
    if positional:
      args[5] = callbacks
    else:
      kwargs["callbacks"] = callbacks
    self.diverged = None
    return super().fit(*args, **kwargs)

  # ---------------------------------------------------------------- user API

  def _function(self, key, fn):
    cache = self._fns.functions
    if key not in cache:
      cache[key] = tf.function(fn, reduce_retracing=True, autograph=False)
    return cache[key]

  def log_prob(self, x, context=None):
    """Log-density of ``x`` (shape ``[..., *event_shape]``), compiled with ``tf.function``."""
    x = self._check_x(x)
    context = self._check_context(context, x)
    return self._function("log_prob", self._log_prob)(x, context)

  def _tempered(self, temperature):
    dist = self._flow_distribution
    if not (hasattr(dist, "bijector") and hasattr(dist, "distribution")):
      raise ValueError(f"{self.name}: temperature sampling needs a TransformedDistribution "
                       f"(got {type(dist).__name__}).")
    base = dist.distribution
    loc = base.mean()
    t = tf.cast(temperature, self._flow_dtype)
    temper = tfb.Chain([tfb.Shift(loc), tfb.Scale(t), tfb.Shift(-loc)])
    return tfd.TransformedDistribution(tfd.TransformedDistribution(base, temper), dist.bijector)

  def _sample(self, n, seed, temperature, context, tempered):
    dist = self._tempered(temperature) if tempered else self._flow_distribution
    kwargs = {}
    if context is not None:
      c = tf.broadcast_to(context, tf.concat([[n], list(self._context_shape)], 0))
      kwargs["bijector_kwargs"] = core.conditional_kwargs(self._bijector_, c)
    return dist.sample(n, seed=seed, **kwargs)

  def sample(self, n, seed=None, temperature=1., context=None):
    """``n`` samples; ``temperature`` scales the base distribution about its mean.

    Args:
      n: number of samples.
      seed: an int32 (reproducible, stateless), a stateless seed tensor of shape [2], or None.
      temperature: the base draws are ``loc + temperature * (z - loc)`` (a tempered copy of
        the base; for a standard normal base its std is multiplied by ``temperature``).
      context: conditional input, shape ``context_shape`` (shared by all samples) or
        ``[n, *context_shape]``.
    """
    n = int(n)
    if n < 0:
      raise ValueError(f"number of samples must be >= 0, got {n}.")
    if not float(temperature) > 0.:
      raise ValueError(f"temperature must be positive, got {temperature}.")
    if isinstance(seed, (int, np.integer)):
      seed = tf.constant([int(seed), 0], tf.int32)
    elif seed is not None:
      seed = tfp.random.sanitize_seed(seed)
    if self._conditional or context is not None:
      context = self._check_context(context, [n])
    tempered = float(temperature) != 1.
    fn = self._function(("sample", tempered), self._sample)
    return fn(tf.constant(n, tf.int32), seed, tf.constant(temperature, self._flow_dtype),
              context, tempered)

  def export(self, filepath, format="tf_saved_model", verbose=True, input_signature=None,
             **kwargs):
    """Writes a SavedModel serving ``log_prob`` and ``sample`` with no Python of ours.

    Signatures (``tf.saved_model.load(path).signatures[...]``):

    * ``log_prob`` (also ``serving_default``): ``x`` ``[N, *event_shape]`` (plus ``context``
      ``[N, *context_shape]`` for conditional flows) -> ``{"log_prob": [N]}``.
    * ``sample``: ``n`` (int32 scalar), ``seed`` (int32 scalar; stateless),
      ``temperature`` (float scalar) (plus ``context`` ``context_shape``) ->
      ``{"samples": [n, *event_shape]}``; the same draws as ``model.sample(n, seed, ...)``.

    Other ``format``s go to ``keras.Model.export``.
    """
    if format != "tf_saved_model":
      return super().export(filepath, format=format, verbose=verbose,
                            input_signature=input_signature, **kwargs)
    if input_signature is not None:
      raise ValueError("FlowModel.export builds its own signatures; drop input_signature.")
    module = _ServingModule(self)
    tf.saved_model.save(module, str(filepath), signatures=module.signatures())
    if verbose:
      print(f"Saved a SavedModel with signatures 'log_prob' and 'sample' at {filepath}.")
    return filepath

  def save(self, filepath, *args, **kwargs):
    """Whole-model ``.keras`` files need a config of the flow; use weights or a SavedModel."""
    raise NotImplementedError(
        "FlowModel cannot be saved as a .keras file (the flow is Python code, not a Keras "
        "config). Use model.save_weights('name.weights.h5') with the same builder call to "
        "restore, ModelCheckpoint(..., save_weights_only=True), or model.export(path) for a "
        "SavedModel.")


class _FunctionCache:
  """Compiled helpers of a model, in a plain object that checkpoints and SavedModels skip."""

  def __init__(self):
    self.functions = {}


class _ServingModule(tf.Module):
  """A plain tf.Module with the variables and two serving functions of a FlowModel."""

  def __init__(self, model):
    super().__init__(name="flow_serving")
    self.flow_variables = list(model.flow_distribution.variables)
    ev, dtype = list(model.event_shape), model._flow_dtype
    cond = model.context_shape is not None
    x_spec = [tf.TensorSpec([None] + ev, dtype, name="x")]
    n_spec = [tf.TensorSpec([], tf.int32, name="n"), tf.TensorSpec([], tf.int32, name="seed"),
              tf.TensorSpec([], dtype, name="temperature")]
    if cond:
      x_spec.append(tf.TensorSpec([None] + list(model.context_shape), dtype, name="context"))
      n_spec.append(tf.TensorSpec(list(model.context_shape), dtype, name="context"))

    def log_prob(x, context=None):
      return {"log_prob": model._log_prob(x, context)}

    def sample(n, seed, temperature, context=None):
      s = tf.stack([seed, tf.zeros([], tf.int32)])
      return {"samples": model._sample(n, s, temperature, context, tempered=True)}

    self.log_prob = tf.function(log_prob, input_signature=x_spec, autograph=False)
    self.sample = tf.function(sample, input_signature=n_spec, autograph=False)

  def signatures(self):
    lp = self.log_prob.get_concrete_function()
    return {"serving_default": lp, "log_prob": lp,
            "sample": self.sample.get_concrete_function()}


class _TrainingGuard(keras.callbacks.Callback):
  """Reads the model's training records; stops on NaN/inf batches and on divergence."""

  def __init__(self):
    super().__init__()
    self._snapshot = None
    self._epoch = 0
    self._epoch_start = 0
    self._steps = 0
    self._skipped_epoch = 0

  def _take_snapshot(self):
    self._snapshot = [np.array(w) for w in self.model.get_weights()]

  def on_train_begin(self, logs=None):
    self._reset()
    self._take_snapshot()

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch
    self._epoch_start = int(self.model.optimizer.iterations.numpy())
    self._skipped_epoch = 0

  def _reset(self):
    for v, value in zip(self.model._guard_vars, (0., -1., -1.)):
      v.assign(value)

  def _check(self):
    """Acts on the records since the last check; True if training may go on."""
    model = self.model
    rows, first_batch, first_loss = (float(v.numpy()) for v in model._guard_vars)
    self._reset()
    if first_loss >= 0:
      self._restore(int(first_loss) - self._epoch_start)
      return False
    if rows:
      if model._nonfinite == "raise":
        model.stop_training = True
        raise NonFiniteBatchError(
            f"{model.name}: training batch {int(first_batch) - self._epoch_start} of epoch "
            f"{self._epoch} has NaN or inf values (in the data or the context); {int(rows)} "
            "row(s) with NaN/inf were found since the previous check. They were left out of "
            "the updates, so the weights are finite. Clean the data, or pass "
            "FlowModel(..., nonfinite='skip') to skip such rows.")
      self._skipped_epoch += int(rows)
      model.skipped_rows += int(rows)
    return True

  def on_train_batch_end(self, batch, logs=None):
    model = self.model
    self._steps += 1
    if self._steps % model._check_every:
      return
    if self._check() and model._snapshot_every and (
        self._steps % model._snapshot_every < model._check_every):
      self._take_snapshot()

  def _restore(self, batch):
    model = self.model
    model.stop_training = True
    model.set_weights(self._snapshot)
    model.diverged = {"epoch": self._epoch, "batch": int(batch)}
    message = (f"{model.name}: the training loss became NaN/inf at batch {batch} of epoch "
               f"{self._epoch} (the learning rate may be too high); training stopped and the "
               "weights of the last finite snapshot were restored.")
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    print(message)

  def on_epoch_end(self, epoch, logs=None):
    if self.model.diverged is None and self._check():
      self._take_snapshot()
    if self._skipped_epoch:
      warnings.warn(f"{self.model.name}: skipped {self._skipped_epoch} training row(s) with "
                    f"NaN or inf values in epoch {epoch}.", RuntimeWarning, stacklevel=2)
