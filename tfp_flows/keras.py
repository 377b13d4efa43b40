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

Robustness. Every input is checked before Keras builds or traces anything, so a bad call
raises a clear error and leaves the model as it was (a later correct call works):

* arrays (numpy, tensors, ``(x, context)`` pairs, ``{"x": ..., "context": ...}``) passed to
  ``fit``/``evaluate``/``predict``/``log_prob``/``__call__``: dtype, event shape (``ValueError``
  naming the expected and the actual shapes), context shape and rows, ``sample_weight``
  (finite, >= 0), and finiteness: NaN/inf rows in training data raise
  ``NonFiniteBatchError`` naming the rows (``nonfinite="raise"``) or are skipped
  (``"skip"``; data without a single finite row raise), in ``validation_data`` and
  ``evaluate`` data they raise (their log-density is undefined); ``predict``/``log_prob``
  return NaN for such rows.
* a ``tf.data.Dataset``: its ``element_spec`` (shapes and dtypes) before training; the
  batches themselves inside the step: a batch of another event shape fails with a
  ``ValueError`` naming both shapes (``tf.ensure_shape``, also under XLA), NaN/inf rows are
  handled by the training guard below, NaN/inf rows in evaluation data raise at the end of
  the evaluation. Python generators and ``keras.utils.PyDataset``s: their first batch is
  checked like an array.
* data-dependent initialisation (layers listed by ``tff.core.pending_data_init``, e.g.
  ``ActNorm``) runs eagerly on the first batch the model sees (``fit``: the first training
  batch; ``log_prob``/``evaluate``/``predict``: their first batch) before Keras traces, so
  an empty or non-finite first batch is an error and leaves every ``initialized`` flag unset;
  ``log_prob`` of an empty batch returns an empty result without initialising.
* the optimizer's variables are created eagerly before the first training trace, and the
  compiled train/test/predict functions are dropped after any failed call, so an error
  inside a step (a bad dataset batch) does not leave a broken traced function behind.

Every training step records, in variables and without a host round trip, the rows with
NaN/inf, the rows trained on and whether the loss was finite; ``fit`` reads them every
``check_every`` steps (50 by default) and at each epoch end:

* rows of a batch with NaN/inf (in ``x`` or the context) are always left out of the update,
  so the model stays finite; with ``nonfinite="raise"`` (default) training then stops with a
  ``NonFiniteBatchError`` naming the epoch and the first such batch, with
  ``nonfinite="skip"`` such rows are skipped and counted (a warning at the end of each epoch,
  ``model.skipped_rows``); an epoch without a single finite row raises.
* a non-finite loss (a diverging learning rate) stops training with a message naming the
  batch; the weights are restored to those of the last snapshot taken after a check found
  the loss finite (the start of ``fit``, each epoch end, and every ``snapshot_every`` steps
  when given), and ``model.diverged`` says where it happened.

Distribution. Build the flow and the model under ``strategy.scope()``
(``tf.distribute.MirroredStrategy``, ``MultiWorkerMirroredStrategy``): the loss of each
replica is its share of the *global* batch mean (the sum of its rows' NLL divided by the
number of rows of the global batch, all-reduced), so the summed gradients are those of the
single-process run at the same global batch; the guard's records are all-reduced, so every
worker stops at the same step.

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

import contextlib
import inspect
import math
import numbers
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

if keras.backend.backend() != "tensorflow":  # pragma: no cover - depends on the environment.
  raise ImportError(f"tfp_flows.keras needs Keras's TensorFlow backend, but KERAS_BACKEND is "
                    f"{keras.backend.backend()!r}; set KERAS_BACKEND=tensorflow.")

# Name of the in-graph event-shape check; its error is turned into a ValueError by _recover.
_SHAPE_CHECK = "tfp_flows_event_shape_check"


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


def _rows_text(rows, limit=5):
  shown = ", ".join(str(int(r)) for r in rows[:limit])
  return shown + (", ..." if len(rows) > limit else "")


def _is_integer(value):
  return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value):
  return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


class _Batch:
  """Checked host-side inputs: ``x`` ``[N, *event]``, ``context`` ``[N, *ctx]`` or None,
  ``weight`` ``[N]`` or None, and ``finite`` (``[N]`` bool: no NaN/inf in the row)."""

  def __init__(self, x, context, weight, finite):
    self.x, self.context, self.weight, self.finite = x, context, weight, finite

  def __len__(self):
    return int(self.x.shape[0])

  def rows(self, index):
    pick = lambda a: None if a is None else a[index]  # noqa: E731
    return _Batch(self.x[index], pick(self.context), pick(self.weight), self.finite[index])


@keras.saving.register_keras_serializable(package="tfp_flows")
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
    if not tf.TensorShape(distribution.batch_shape).rank == 0:
      raise ValueError(f"FlowModel needs a distribution with a scalar batch shape (one "
                       f"density), got batch shape {distribution.batch_shape}.")
    if nonfinite not in ("raise", "skip"):
      raise ValueError(f"nonfinite must be 'raise' or 'skip', got {nonfinite!r}.")
    if bin_width is not None and not (_is_real(bin_width) and 0. < float(bin_width) < math.inf):
      raise ValueError(f"bin_width must be a positive finite number, got {bin_width!r}.")
    if num_dims is not None and not (_is_integer(num_dims) and num_dims >= 1):
      raise ValueError(f"num_dims must be a positive int, got {num_dims!r}.")
    for arg, value in (("check_every", check_every), ("snapshot_every", snapshot_every)):
      if (value is not None or arg == "check_every") and not (_is_integer(value) and value >= 1):
        raise ValueError(f"{arg} must be a positive int{' or None' * (arg != 'check_every')}, "
                         f"got {value!r}.")
    self._flow_distribution = distribution
    # The constructor's own arguments, for get_config (the distribution's comes from tff.flows).
    self._init_args = dict(bin_width=bin_width, num_dims=num_dims, nonfinite=nonfinite,
                           check_every=check_every, snapshot_every=snapshot_every)
    self._event_shape_ = tuple(event_shape.as_list())
    self._flow_dtype = tf.as_dtype(distribution.dtype)
    if not self._flow_dtype.is_floating:
      raise TypeError(f"FlowModel needs a distribution over floats, got dtype "
                      f"{self._flow_dtype.name}.")
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
    # Records read by the guard (see _record): NaN/inf training rows and finite training rows
    # since the last check, the first step since then with such rows / with a non-finite loss
    # (-1: none), and NaN/inf rows seen by test_step since the start of an evaluation.
    with tf.init_scope():
      self._guard_vars = [
          tf.Variable(v, trainable=False, name=n,
                      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
          for v, n in ((0., "nonfinite_rows"), (-1., "first_nonfinite_batch"),
                       (-1., "first_nonfinite_loss"), (0., "finite_rows"),
                       (0., "nonfinite_eval_rows"))]
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

  def pending_data_init(self):
    """The layers whose data-dependent initialisation waits for a first batch."""
    return core.pending_data_init(self._flow_distribution)

  # ---------------------------------------------------------------- host-side checks

  def _expected(self):
    return f"[{', '.join(['batch'] + [str(d) for d in self._event_shape_])}]"

  def _as_array(self, value, what):
    """A numpy array or eager tensor of ``value`` with a numeric dtype (not cast yet)."""
    if not tf.is_tensor(value):
      try:
        value = np.asarray(value)
      except (TypeError, ValueError) as e:
        raise TypeError(f"{self.name}: {what} must be a numeric array, got "
                        f"{type(value).__name__}: {e}") from None
    try:
      dtype = tf.as_dtype(value.dtype)
    except TypeError:
      dtype = None
    if dtype is None or not (dtype.is_floating or dtype.is_integer) or dtype == tf.bool:
      raise TypeError(f"{self.name}: {what} must be numeric (float or int), got dtype "
                      f"{getattr(value.dtype, 'name', value.dtype)}.")
    return value

  def _check_event_shape(self, shape, what):
    shape = tf.TensorShape(shape)
    k = len(self._event_shape_)
    if shape.rank is None:
      return
    if shape.rank == k and shape.is_compatible_with(self._event_shape_):
      raise ValueError(f"{self.name}: {what} has shape {shape.as_list()}, a single event; "
                       f"expected a batch of events {self._expected()} (add a batch axis, "
                       "or .batch() a dataset).")
    if shape.rank != k + 1 or not shape[1:].is_compatible_with(self._event_shape_):
      raise ValueError(f"{self.name}: expected {what} of shape {self._expected()} (event shape "
                       f"{list(self._event_shape_)}), got shape {shape.as_list()}.")

  def _check_context_shape(self, shape, what):
    shape = tf.TensorShape(shape)
    k = len(self._context_shape)
    if shape.rank is not None and (shape.rank != k + 1 or not shape[1:].is_compatible_with(
        self._context_shape)):
      raise ValueError(f"{self.name}: expected a context of shape [batch, "
                       f"{', '.join(map(str, self._context_shape))}] for {what}, got shape "
                       f"{shape.as_list()}.")

  def _unpack(self, x, y=None, sample_weight=None):
    """(x, context, sample_weight) from the forms fit/evaluate/predict accept."""
    if isinstance(x, dict):
      unknown = set(x) - {"x", "context"}
      if unknown or "x" not in x:
        raise ValueError(f"{self.name}: a dict input needs the key 'x' (and 'context' for a "
                         f"conditional flow), got keys {sorted(map(str, x))}.")
      x, context = x["x"], x.get("context")
    elif isinstance(x, tuple) or (isinstance(x, list) and len(x) == 2 and all(
        len(getattr(part, "shape", ())) >= 1 for part in x) and len(getattr(x[0], "shape", ()))
                                  == len(self._event_shape_) + 1):
      # (x, context); a list counts only if it holds two arrays of which the first is a batch
      # (a list of rows is data).
      if len(x) != 2:
        raise ValueError(f"{self.name}: inputs must be x or (x, context), got {len(x)} parts.")
      x, context = x
    else:
      context = None
    if y is not None:
      if context is not None:
        raise ValueError(f"{self.name}: got both (x, context) and y; pass the context once.")
      context = y
    return x, context, sample_weight

  def _check_batch(self, x, context, sample_weight, what, allow_empty=False):
    """Checks arrays and returns a ``_Batch`` of numpy arrays (x in the flow's dtype)."""
    x = np.asarray(self._as_array(x, what))
    self._check_event_shape(x.shape, what)
    n = x.shape[0]
    if n == 0 and not allow_empty:
      raise ValueError(f"{self.name}: {what} has no rows (shape {list(x.shape)}).")
    with np.errstate(over="ignore"):
      cast = x.astype(self._flow_dtype.as_numpy_dtype, copy=False)
    finite = np.isfinite(cast.reshape(n, -1)).all(axis=1)
    overflow = finite.size and not finite.all() and np.issubdtype(x.dtype, np.floating) and (
        np.isfinite(x.reshape(n, -1)).all(axis=1) & ~finite).any()
    x = cast
    c = self._check_context_value(context, what)
    if c is not None:
      c = np.asarray(c)
      if c.ndim == len(self._context_shape) + 1 and c.shape[0] != n:
        raise ValueError(f"{self.name}: {what} has {n} rows but its context has {c.shape[0]} "
                         "rows; pass one context row per data row.")
      self._check_context_shape(c.shape, what)
      c = c.astype(self._flow_dtype.as_numpy_dtype, copy=False)
      finite &= np.isfinite(c.reshape(n, -1)).all(axis=1)
    w = None
    if sample_weight is not None:
      w = np.asarray(self._as_array(sample_weight, f"sample_weight of {what}"), np.float64)
      if w.shape not in ((n,), (n, 1)):
        raise ValueError(f"{self.name}: sample_weight must have shape [{n}] (one weight per "
                         f"row of {what}), got {list(w.shape)}.")
      w = w.reshape(n)
      if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{self.name}: sample_weight must be finite and >= 0.")
      if n and not np.any(w > 0):
        raise ValueError(f"{self.name}: every sample_weight is 0: there is nothing to fit.")
    batch = _Batch(x, c, w, finite)
    batch.overflow = bool(overflow)
    return batch

  def _check_context_value(self, context, what):
    if not self._conditional:
      if context is not None:
        raise ValueError(f"{self.name}: got a context (a second input, or y) for {what}, but the "
                         "flow is not conditional. Pass only x, or build the flow with "
                         "conditional_shape.")
      return None
    if context is None:
      raise ValueError(f"{self.name}: the flow is conditional and needs a context of shape "
                       f"{list(self._context_shape)}: fit(x, context), log_prob(x, context=c).")
    return self._as_array(context, f"the context of {what}")

  def _nonfinite_message(self, batch, what):
    bad = np.flatnonzero(~batch.finite)
    beyond = (f" (some only after the cast to {self._flow_dtype.name}: values beyond its "
              "range; rescale the data)") if getattr(batch, "overflow", False) else ""
    return (f"{self.name}: {what} has {len(bad)} row(s) with NaN or inf values (rows "
            f"{_rows_text(bad)}), in the data or the context{beyond}")

  def _check_spec(self, spec, what):
    """Checks a dataset's element_spec; returns whether batches carry a context."""
    x, y, _ = keras.utils.unpack_x_y_sample_weight(
        spec if isinstance(spec, tuple) else (spec,))
    x, context, _ = self._unpack(x, y) if not isinstance(x, tf.TensorSpec) else (x, y, None)
    if isinstance(x, tuple) and len(x) == 2:
      x, context = x
    if not isinstance(x, tf.TensorSpec):
      raise ValueError(f"{self.name}: {what} must yield x, (x,), (x, context) or "
                       f"(x, context, sample_weight) tensors; got element_spec {spec}.")
    for s, name in ((x, "x"), (context, "context")):
      if s is not None and not (s.dtype.is_floating or s.dtype.is_integer) or (
          s is not None and s.dtype == tf.bool):
        raise TypeError(f"{self.name}: {what} yields {name} of dtype {s.dtype.name}; expected "
                        "numbers.")
    self._check_event_shape(x.shape, f"{what} batches")
    if self._conditional and context is None:
      raise ValueError(f"{self.name}: the flow is conditional, but {what} yields no context; "
                       "yield (x, context) pairs.")
    if not self._conditional and context is not None:
      raise ValueError(f"{self.name}: {what} yields a second tensor (a context), but the flow "
                       "is not conditional.")
    if context is not None:
      self._check_context_shape(context.shape, f"{what} batches")

  def _inspect(self, x, y, sample_weight, what, *, finite="raise", dataset_ok=True):
    """Checks what fit/evaluate/predict got; returns (x to pass on, first ``_Batch`` or None,
    full ``_Batch`` for arrays or None)."""
    if isinstance(x, tf.distribute.DistributedDataset):
      return x, None, None
    if isinstance(x, tf.data.Dataset):
      if y is not None or sample_weight is not None:
        raise ValueError(f"{self.name}: with a tf.data.Dataset, put the context and "
                         "sample_weight in the dataset's elements, not in y/sample_weight.")
      self._check_spec(x.element_spec, what)
      return x, None, None
    if isinstance(x, keras.utils.PyDataset):
      if y is not None or sample_weight is not None:
        raise ValueError(f"{self.name}: with a PyDataset, its batches carry the context.")
      first = self._check_batch(*self._unpack(*keras.utils.unpack_x_y_sample_weight(
          _as_tuple(x[0]))), f"the first batch of {what}")
      return x, first, None
    if inspect.isgenerator(x) or (hasattr(x, "__next__") and hasattr(x, "__iter__")):
      if y is not None or sample_weight is not None:
        raise ValueError(f"{self.name}: with a generator, its batches carry the context.")
      try:
        element = next(x)
      except StopIteration:
        raise ValueError(f"{self.name}: the generator for {what} yields nothing.") from None
      first = self._check_batch(*self._unpack(*keras.utils.unpack_x_y_sample_weight(
          _as_tuple(element))), f"the first batch of {what}")
      return _prepend(element, x), first, None
    if x is None:
      raise ValueError(f"{self.name}: {what} needs data (x is None).")
    batch = self._check_batch(*self._unpack(x, y, sample_weight), what)
    if not batch.finite.all():
      if finite == "raise":
        raise NonFiniteBatchError(self._nonfinite_message(batch, what) + "; clean the data"
                                  + (", or pass FlowModel(..., nonfinite='skip') to skip such "
                                     "rows." if what == "x" else "."))
      if finite == "skip" and not batch.finite.any():
        raise NonFiniteBatchError(f"{self.name}: every row of {what} has NaN or inf values; "
                                  "there is nothing to train on.")
    return x, None, batch

  # ---------------------------------------------------------------- data-dependent init

  def _initialize(self, batch, what):
    """Runs pending data-dependent initialisation eagerly on the finite rows of ``batch``."""
    pending = self.pending_data_init()
    if not pending or batch is None:
      return
    names = ", ".join(sorted({m.name for m in pending}))
    if not batch.finite.all():
      if self._nonfinite != "skip" or what != "fit":
        raise NonFiniteBatchError(self._nonfinite_message(batch, f"the first batch of {what}")
                                  + f"; it would initialise {names} (data-dependent init).")
      batch = batch.rows(batch.finite)
    if len(batch) == 0:
      raise ValueError(f"{self.name}: the first batch of {what} has no finite rows; the "
                       f"data-dependent initialisation of {names} needs data.")
    context = None if batch.context is None else tf.constant(batch.context)
    with self.distribute_strategy.scope():
      lp = self._log_prob(tf.constant(batch.x), context)
    if not np.all(np.isfinite(lp.numpy())):
      warnings.warn(f"{self.name}: after the data-dependent initialisation of {names} on the "
                    f"first batch of {what}, {int(np.sum(~np.isfinite(lp.numpy())))} of "
                    f"{len(batch)} log-densities are not finite.", RuntimeWarning, stacklevel=3)

  def _first_rows(self, batch, batch_size, shuffle, validation_split=0.):
    """The rows of an array input that Keras would put in the first training batch."""
    n = len(batch)
    if validation_split:
      n = int(n * (1. - float(validation_split)))
    size = min(n, int(batch_size or 32))
    rows = np.random.permutation(n)[:size] if shuffle else np.arange(size)
    return batch.rows(np.sort(rows))

  def _prepare(self, first):
    """Data-dependent init on ``first``, then the optimizer's variables, before tracing."""
    self._initialize(first, "fit")
    optimizer = getattr(self, "optimizer", None)
    if optimizer is not None and not optimizer.built:
      with self.distribute_strategy.scope():
        optimizer.build(self.trainable_variables)

  @contextlib.contextmanager
  def _recover(self):
    """Drops the traced functions after a failure; turns in-graph shape errors into
    ``ValueError``s."""
    try:
      yield
    except BaseException as e:
      self.train_function = self.test_function = self.predict_function = None
      self._fns.functions.clear()
      if isinstance(e, tf.errors.InvalidArgumentError) and _SHAPE_CHECK in str(e):
        found = re.search(r"Shape of tensor \S* ?(\[[^\]]*\]) is not compatible", str(e))
        got = f", got a batch of shape {found.group(1)}" if found else ""
        raise ValueError(f"{self.name}: expected batches of shape {self._expected()} (event "
                         f"shape {list(self._event_shape_)}){got}.") from None
      raise

  # ---------------------------------------------------------------- in-graph inputs

  def _check_x(self, x):
    """``x`` as a tensor of the flow's dtype with its event shape checked (also in graphs)."""
    if not tf.is_tensor(x):
      x = self._as_array(x, "x")
    dtype = tf.as_dtype(x.dtype)
    if not (dtype.is_floating or dtype.is_integer) or dtype == tf.bool:
      raise TypeError(f"{self.name}: data must be numeric, got dtype {dtype.name}.")
    x = tf.cast(x, self._flow_dtype)
    shape = x.shape
    k = len(self._event_shape_)
    if shape.rank is not None and (shape.rank < k + 1 or not shape[shape.rank - k:]
                                   .is_compatible_with(self._event_shape_)):
      raise ValueError(f"{self.name}: expected data of shape {self._expected()} (event shape "
                       f"{list(self._event_shape_)}), got shape {shape.as_list()}.")
    if shape.rank is None or not shape[shape.rank - k:].is_fully_defined():
      # A retraced step may see relaxed shapes ([None, None]); check at run time (and at XLA
      # compile time).
      rank = 2 if shape.rank is None else shape.rank
      x = tf.ensure_shape(x, [None] * (rank - k) + list(self._event_shape_), name=_SHAPE_CHECK)
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
    if not tf.is_tensor(context):
      context = self._as_array(context, "the context")
    c = tf.cast(context, self._flow_dtype)
    k = len(self._context_shape)
    if c.shape.rank is not None and (c.shape.rank < k or not c.shape[c.shape.rank - k:]
                                     .is_compatible_with(self._context_shape)):
      raise ValueError(f"{self.name}: expected a context with trailing shape "
                       f"{list(self._context_shape)}, got shape {c.shape.as_list()}.")
    lead = tf.shape(batch)[:-len(self._event_shape_)] if tf.is_tensor(batch) else batch
    if tf.is_tensor(batch) and c.shape.rank is not None and c.shape.rank > k:
      c_lead = c.shape[:c.shape.rank - k]
      x_lead = batch.shape[:batch.shape.rank - len(self._event_shape_)]
      try:
        tf.broadcast_static_shape(c_lead, x_lead)
      except ValueError:
        raise ValueError(f"{self.name}: the context's batch shape {c_lead.as_list()} does not "
                         f"match the data's {x_lead.as_list()} (one context row per data row, "
                         f"or a single context of shape {list(self._context_shape)}).") from None
    return tf.broadcast_to(c, tf.concat([lead, list(self._context_shape)], 0))

  def _split_inputs(self, data):
    """(x, context, sample_weight) tensors from a batch of fit/evaluate/predict."""
    x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
    x, context, sw = self._unpack(x, y, sw)
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
    """Per-batch NLL sum and weight over the finite rows, and the finite-row mask."""
    n = tf.shape(x)[0]
    finite = tf.reduce_all(tf.math.is_finite(tf.reshape(x, [n, -1])), axis=1)
    if context is not None:
      finite &= tf.reduce_all(tf.math.is_finite(tf.reshape(context, [n, -1])), axis=1)
    if mask_nonfinite:
      keep = tf.reshape(finite, [-1] + [1] * len(self._event_shape_))
      x = tf.where(keep, x, tf.zeros_like(x))
      if context is not None:
        context = tf.where(tf.reshape(finite, [-1] + [1] * len(self._context_shape)), context,
                           tf.zeros_like(context))
      w = tf.cast(finite, self._flow_dtype)
    else:
      w = tf.ones([n], self._flow_dtype)
    if sample_weight is not None:
      w = w * tf.reshape(tf.cast(sample_weight, self._flow_dtype), [-1])
    lp = self._log_prob(x, context)
    nll_sum = -tf.reduce_sum(tf.where(w > 0, lp * w, tf.zeros_like(lp)))
    return nll_sum, tf.reduce_sum(w), finite

  def _update_metrics(self, nll, weight):
    self._loss_tracker.update_state(nll, sample_weight=weight)
    if self._bpd_tracker is not None:
      self._bpd_tracker.update_state(self._bits_per_dim(nll), sample_weight=weight)
    logs = {m.name: m.result() for m in self.metrics}
    if _multi_worker(self.distribute_strategy):
      # Keras 3 reduces a multi-worker step's logs with strategy.reduce(MEAN, v, axis=0),
      # which fails on scalars (tensorflow/tensorflow#72388): give it [1]-shaped values. The
      # epoch's logs are read from the (synchronised) metrics themselves.
      logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
    return logs

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
    for key in ("metrics", "weighted_metrics", "loss_weights"):
      if kwargs.get(key):
        raise ValueError(f"FlowModel reports its own metrics (loss, bits_per_dim); got {key}.")
    if kwargs.get("jit_compile") is True and self.distribute_strategy.num_replicas_in_sync > 1:
      raise ValueError(f"{self.name}: jit_compile=True does not work under a distribution "
                       "strategy with more than one replica (Keras compiles the step of every "
                       "replica into one XLA program, which cannot reach the variables of the "
                       "other devices); compile with jit_compile=False or 'auto'.")
    if not self.trainable_weights:
      raise ValueError(f"{self.name}: the distribution has no trainable variables; there is "
                       "nothing to fit.")
    super().compile(optimizer=optimizer, **kwargs)

  def compile_from_config(self, config):
    """Compiles a loaded model as it was saved (optimizer and options; no loss or metrics)."""
    config = keras.saving.deserialize_keras_object(config)
    for key in ("loss", "metrics", "weighted_metrics", "loss_weights"):
      config.pop(key, None)
    self.compile(**config)
    self.optimizer.build(self.trainable_variables)

  def call(self, inputs, training=False):
    """Log-probabilities of ``inputs`` (``x`` or ``(x, context)``)."""
    if tf.executing_eagerly() and self.pending_data_init():
      x, context, _ = self._unpack(inputs)
      self._initialize(self._check_batch(x, context, None, "the call"), "the call")
    x, context, _ = self._split_inputs(inputs)
    return self._log_prob(x, context)

  def train_step(self, data):
    x, context, sw = self._split_inputs(data)
    variables = self.trainable_variables
    with tf.GradientTape() as tape:
      nll_sum, weight, finite = self._weighted_nll(x, context, sw, mask_nonfinite=True)
      # This replica's share of the global-batch mean: replicas' gradients are summed.
      total = _all_reduce_sum(weight)
      loss = nll_sum / tf.maximum(total, tf.constant(1e-12, weight.dtype))
    grads = tape.gradient(loss, [v.value for v in variables])
    nll = nll_sum / tf.maximum(weight, tf.constant(1e-12, weight.dtype))
    self._record(tf.reduce_sum(tf.cast(~finite, tf.float32)),
                 tf.reduce_sum(tf.cast(finite, tf.float32)),
                 tf.cast(~tf.math.is_finite(loss), tf.float32))
    self.optimizer.apply_gradients(zip(grads, variables))
    return self._update_metrics(nll, weight)

  def _record(self, bad_rows, good_rows, bad_loss):
    """Updates the guard's records in-graph (no host round trip)."""
    bad_rows, good_rows, bad_loss = (_all_reduce_sum(v) for v in (bad_rows, good_rows, bad_loss))
    step = tf.cast(self.optimizer.iterations, tf.float32)
    rows, first_batch, first_loss, finite_rows, _ = self._guard_vars
    rows.assign_add(bad_rows)
    finite_rows.assign_add(good_rows)
    first_batch.assign(tf.where((first_batch < 0.) & (bad_rows > 0.), step, first_batch))
    first_loss.assign(tf.where((first_loss < 0.) & (bad_loss > 0.), step, first_loss))

  def test_step(self, data):
    x, context, sw = self._split_inputs(data)
    nll_sum, weight, finite = self._weighted_nll(x, context, sw, mask_nonfinite=False)
    self._guard_vars[4].assign_add(_all_reduce_sum(tf.reduce_sum(tf.cast(~finite, tf.float32))))
    nll = nll_sum / tf.maximum(weight, tf.constant(1e-12, weight.dtype))
    return self._update_metrics(nll, weight)

  def predict_step(self, data):
    x, context, _ = self._split_inputs(data)
    return self._log_prob(x, context)

  def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
          validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
          sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
          validation_batch_size=None, validation_freq=1):
    """``keras.Model.fit`` with the inputs checked first and the training guard added.

    ``x`` is the data (``y``, if given, is the context of a conditional flow). Everything is
    checked before Keras builds anything (module docstring); a failed call leaves the model
    as it was.
    """
    if getattr(self, "optimizer", None) is None:
      raise RuntimeError(f"{self.name}: call compile() before fit().")
    if class_weight is not None:
      raise ValueError(f"{self.name}: class_weight does not apply to density estimation; use "
                       "sample_weight to weight rows.")
    for arg, value in (("batch_size", batch_size), ("steps_per_epoch", steps_per_epoch)):
      if value is not None and not (_is_integer(value) and value >= 1):
        raise ValueError(f"{self.name}: {arg} must be a positive int or None, got {value!r}.")
    if not (_is_integer(epochs) and epochs >= 1) or not (_is_integer(initial_epoch) and
                                                         0 <= initial_epoch < epochs):
      raise ValueError(f"{self.name}: need ints 0 <= initial_epoch < epochs, got "
                       f"initial_epoch={initial_epoch!r}, epochs={epochs!r}.")
    if not (_is_real(validation_split) and 0. <= validation_split < 1.):
      raise ValueError(f"{self.name}: validation_split must be in [0, 1), got "
                       f"{validation_split!r}.")
    x, first, batch = self._inspect(x, y, sample_weight, "x", finite=self._nonfinite)
    if batch is not None:
      if validation_split and int(len(batch) * (1. - validation_split)) < 1:
        raise ValueError(f"{self.name}: validation_split={validation_split} leaves no "
                         f"training rows of {len(batch)}.")
      first = self._first_rows(batch, batch_size, shuffle, validation_split)
      # Keras gets the checked arrays (lists, dicts and (x, context) pairs normalised).
      x, y, sample_weight = batch.x, batch.context, batch.weight
    elif first is None and self.pending_data_init() and isinstance(x, tf.data.Dataset):
      first = self._check_batch(*self._unpack(*keras.utils.unpack_x_y_sample_weight(
          _as_tuple(next(iter(x))))), "the first batch of x")
    if validation_data is not None:
      if not isinstance(validation_data, (tf.data.Dataset, tf.distribute.DistributedDataset)):
        validation_data = _as_tuple(validation_data)
        if not 1 <= len(validation_data) <= 3:
          raise ValueError(f"{self.name}: validation_data must be (x,), (x, context) or "
                           f"(x, context, sample_weight), got {len(validation_data)} parts.")
        self._inspect(*(list(validation_data) + [None] * (3 - len(validation_data))),
                      "validation_data")
      else:
        self._inspect(validation_data, None, None, "validation_data")
    self._prepare(first)
    self.diverged = None
    callbacks = [_TrainingGuard()] + list(callbacks or [])
    with self._recover():
      return super().fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
                         callbacks=callbacks, validation_split=validation_split,
                         validation_data=validation_data, shuffle=shuffle,
                         sample_weight=sample_weight, initial_epoch=initial_epoch,
                         steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                         validation_batch_size=validation_batch_size,
                         validation_freq=validation_freq)

  def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None,
               steps=None, callbacks=None, return_dict=False, **kwargs):
    """``keras.Model.evaluate``: mean NLL (and bits/dim) of the data; inputs checked first.

    Rows with NaN/inf have no log-density: arrays with such rows raise ``ValueError`` before
    anything runs; a dataset's are counted and raise at the end.
    """
    if not kwargs.get("_use_cached_eval_dataset"):  # fit's validation is checked by fit.
      x, first, batch = self._inspect(x, y, sample_weight, "evaluate data")
      if batch is not None:
        first = self._first_rows(batch, batch_size, shuffle=False)
        x, y, sample_weight = batch.x, batch.context, batch.weight
      self._initialize(first, "evaluate")
    self._guard_vars[4].assign(0.)
    with self._recover():
      logs = super().evaluate(x, y, batch_size=batch_size, verbose=verbose,
                              sample_weight=sample_weight, steps=steps, callbacks=callbacks,
                              return_dict=return_dict, **kwargs)
    bad = int(self._guard_vars[4].numpy())
    if bad:
      what = "validation_data" if kwargs.get("_use_cached_eval_dataset") else "evaluate data"
      raise ValueError(f"{self.name}: {bad} row(s) of {what} have NaN or inf values; their "
                       "log-density is undefined, so the loss would be NaN. Clean the data.")
    return logs

  def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
    """Log-densities of the rows of ``x`` (NaN for rows with NaN/inf); inputs checked first."""
    x, first, batch = self._inspect(x, None, None, "predict data", finite="allow")
    if batch is not None:
      first = self._first_rows(batch, batch_size, shuffle=False)
      x = batch.x if batch.context is None else (batch.x, batch.context)
    self._initialize(first, "predict")
    with self._recover():
      return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps,
                             callbacks=callbacks)

  # ---------------------------------------------------------------- user API

  def _function(self, key, fn):
    cache = self._fns.functions
    if key not in cache:
      cache[key] = tf.function(fn, reduce_retracing=True, autograph=False)
    return cache[key]

  def log_prob(self, x, context=None):
    """Log-density of ``x`` (shape ``[..., *event_shape]``), compiled with ``tf.function``.

    ``context`` (conditional flows): one context per row (``[..., *context_shape]``) or a
    single one (``context_shape``) for every row. Rows with NaN/inf give NaN. If the flow's
    data-dependent initialisation is pending, ``x`` initialises it first (eagerly; an empty
    ``x`` returns an empty result and initialises nothing).
    """
    x = self._check_x(x)
    context = self._check_context(context, x)
    if self.pending_data_init() and tf.executing_eagerly():
      lead = x.shape[:x.shape.rank - len(self._event_shape_)]
      if lead.num_elements() == 0:
        return tf.zeros(lead, self._flow_dtype)
      n = int(lead.num_elements())
      flat_c = None if context is None else tf.reshape(context, [n] + list(self._context_shape))
      self._initialize(self._check_batch(tf.reshape(x, [n] + list(self._event_shape_)), flat_c,
                                         None, "log_prob data"), "log_prob")
    with self._recover():
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
      n: number of samples, an int >= 0.
      seed: an int (reproducible, stateless; int32 range), a stateless seed of two ints, or
        None.
      temperature: a finite number > 0; the base draws are ``loc + temperature * (z - loc)``
        (a tempered copy of the base; for a standard normal base its std is multiplied by
        ``temperature``).
      context: conditional input, shape ``context_shape`` (shared by all samples) or
        ``[n, *context_shape]``.
    """
    if tf.is_tensor(n) and n.dtype.is_integer and n.shape.rank == 0 and tf.executing_eagerly():
      n = int(n)
    if not _is_integer(n) or n < 0:
      raise ValueError(f"{self.name}: the number of samples must be an int >= 0, got {n!r}.")
    n = int(n)
    if not _is_real(temperature) or not 0. < float(temperature) < math.inf:
      raise ValueError(f"{self.name}: temperature must be a finite number > 0, got "
                       f"{temperature!r}.")
    seed = _as_seed(seed, self.name)
    if not self._conditional and context is not None:
      raise ValueError(f"{self.name}: got a context, but the flow is not conditional.")
    if self._conditional:
      if context is None:
        raise ValueError(f"{self.name}: the flow is conditional and needs a context of shape "
                         f"{list(self._context_shape)} to sample.")
      c = context if tf.is_tensor(context) else np.asarray(
          self._as_array(context, "the context"))
      shape = tuple(c.shape)
      if len(shape) > len(self._context_shape) and (
          len(shape) != len(self._context_shape) + 1 or shape[0] != n):
        raise ValueError(f"{self.name}: the context must have shape "
                         f"{list(self._context_shape)} (shared) or [{n}, "
                         f"{', '.join(map(str, self._context_shape))}] (one per sample), got "
                         f"{list(shape)}.")
      if not np.all(np.isfinite(np.asarray(c, np.float64))):
        raise ValueError(f"{self.name}: the context has NaN or inf values.")
      context = self._check_context(context, [n])
    pending = self.pending_data_init()
    if pending:
      warnings.warn(f"{self.name}: sampling before the data-dependent initialisation of "
                    f"{', '.join(sorted({m.name for m in pending}))} has run (it runs on the "
                    "first data batch): these layers are still at their initial values.",
                    RuntimeWarning, stacklevel=2)
    tempered = float(temperature) != 1.
    fn = self._function(("sample", tempered), self._sample)
    with self._recover():
      samples = fn(tf.constant(n, tf.int32), seed, tf.constant(temperature, self._flow_dtype),
                   context, tempered)
    rows = tf.reshape(samples, [n, -1])
    bad = int(tf.reduce_sum(tf.cast(~tf.reduce_all(tf.math.is_finite(rows), axis=-1), tf.int32)))
    if bad:  # the sampling direction overflowed: never hand out NaN/inf silently
      core.warn(f"{self.name}: {bad} of {n} samples are NaN or inf (the sampling direction "
                "overflowed the float range for those base draws: an undertrained or "
                "ill-conditioned flow; a lower temperature or more training usually helps).",
                RuntimeWarning)
    return samples

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
    pending = self.pending_data_init()
    if pending:
      raise ValueError(f"{self.name}: the data-dependent initialisation of "
                       f"{', '.join(sorted({m.name for m in pending}))} has not run; a "
                       "SavedModel would freeze it in graph form. Fit the model (or call "
                       "log_prob on data) before exporting.")
    module = _ServingModule(self)
    tf.saved_model.save(module, str(filepath), signatures=module.signatures())
    if verbose:
      print(f"Saved a SavedModel with signatures 'log_prob' and 'sample' at {filepath}.")
    return filepath

  def get_config(self):
    """The config of a ``.keras`` file: the builder call of the flow and these arguments.

    Raises ``ValueError`` for a distribution that no ``tff.flows`` builder made (see
    ``tff.flows.get_config``): such models keep ``save_weights`` and ``export``.
    """
    from tfp_flows.flows import _config  # pylint: disable=g-import-not-at-top
    try:
      flow = _config.get_config(self._flow_distribution)
    except ValueError as e:
      raise ValueError(
          f"{self.name} cannot be saved as a .keras file: the distribution {e} A .keras file "
          "stores the tff.flows builder call, so build the model from "
          "tff.flows.distribution(tff.flows.<builder>(...), event_shape); otherwise save the "
          "weights (model.save_weights('flow.weights.h5'), restored into the same "
          "construction code) or export a SavedModel (model.export(path))."
      ) from None
    return {"name": self.name, "trainable": self.trainable, "flow": flow,
            **{k: v for k, v in self._init_args.items()}}

  @classmethod
  def from_config(cls, config, custom_objects=None):
    """Rebuilds the model from ``get_config`` (fresh weights; ``load_model`` loads them)."""
    from tfp_flows.flows import _config  # pylint: disable=g-import-not-at-top
    config = dict(config)
    distribution = _config.from_config(config.pop("flow"))
    trainable = config.pop("trainable", True)
    model = cls(distribution, **config)
    model.trainable = trainable
    return model

  def save(self, filepath, overwrite=True, zipped=None, **kwargs):
    """Saves a ``.keras`` file (builder-made flows; see ``get_config``).

    ``keras.saving.load_model(path)`` rebuilds the flow by its builder call and restores
    every variable (data-dependent-init state and, when compiled, the optimizer and its
    state) in any process that has imported ``tfp_flows.keras`` (which registers
    ``FlowModel`` with Keras). Checked before anything is written.
    """
    self.get_config()
    return super().save(filepath, overwrite=overwrite, zipped=zipped, **kwargs)


def _prepend(first, rest):
  """A generator (what Keras accepts) yielding ``first``, then the rest of ``rest``."""
  yield first
  yield from rest


def _as_tuple(data):
  return tuple(data) if isinstance(data, (tuple, list)) else (data,)


def _as_seed(seed, name):
  """A stateless seed tensor (int32 ``[2]``) or None, from what ``sample`` accepts."""
  if seed is None:
    return None
  if _is_integer(seed):
    if not -2**31 <= int(seed) < 2**31:
      raise ValueError(f"{name}: an int seed must fit in int32, got {seed}.")
    return tf.constant([int(seed), 0], tf.int32)
  if isinstance(seed, (bool, np.bool_, float, str)):
    raise ValueError(f"{name}: seed must be an int, two ints or None, got {seed!r}.")
  try:
    return tfp.random.sanitize_seed(seed)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name}: seed must be an int, two ints or None, got {seed!r}.") from e


def _multi_worker(strategy):
  """Whether ``strategy`` spans several workers (a multi-worker MultiWorkerMirroredStrategy)."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return False
  spec = strategy.cluster_resolver.cluster_spec().as_dict()
  return len(spec.get("chief", [])) + len(spec.get("worker", [])) > 1


def _all_reduce_sum(value):
  """Sum over the replicas in sync (identity outside a multi-replica step)."""
  ctx = tf.distribute.get_replica_context()
  if ctx is not None and ctx.num_replicas_in_sync > 1:
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)
  return value


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
    self._finite_epoch = 0

  def _take_snapshot(self):
    """The weights and the optimizer's state (its moments would be NaN after divergence)."""
    model = self.model
    self._snapshot = ([np.array(w) for w in model.get_weights()],
                      [np.array(v.numpy()) for v in model.optimizer.variables])

  def on_train_begin(self, logs=None):
    self._reset()
    self._take_snapshot()

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch
    self._epoch_start = int(self.model.optimizer.iterations.numpy())
    self._skipped_epoch = 0
    self._finite_epoch = 0

  def _reset(self):
    for v, value in zip(self.model._guard_vars[:4], (0., -1., -1., 0.)):
      v.assign(value)

  def _check(self):
    """Acts on the records since the last check; True if training may go on."""
    model = self.model
    rows, first_batch, first_loss, finite = (float(v.numpy()) for v in model._guard_vars[:4])
    self._reset()
    self._finite_epoch += int(finite)
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
    weights, optimizer_state = self._snapshot
    model.set_weights(weights)
    for v, value in zip(model.optimizer.variables, optimizer_state):
      v.assign(value)
    model.diverged = {"epoch": self._epoch, "batch": int(batch)}
    warnings.warn(f"{model.name}: the training loss became NaN/inf at batch {batch} of epoch "
                  f"{self._epoch} (the learning rate may be too high); training stopped and "
                  "the weights and optimizer state of the last finite snapshot were restored.",
                  RuntimeWarning, stacklevel=2)

  def on_epoch_end(self, epoch, logs=None):
    model = self.model
    if model.diverged is None and self._check():
      if self._finite_epoch == 0 and int(model.optimizer.iterations.numpy()) > self._epoch_start:
        model.stop_training = True
        raise NonFiniteBatchError(
            f"{model.name}: epoch {epoch} had no training row without NaN or inf values "
            f"({self._skipped_epoch} row(s) skipped); nothing was trained.")
      self._take_snapshot()
    if self._skipped_epoch:
      warnings.warn(f"{model.name}: skipped {self._skipped_epoch} training row(s) with "
                    f"NaN or inf values in epoch {epoch}.", RuntimeWarning, stacklevel=2)
