"""The ground floor: what every tfp_flows module shares, and the only imports of TF/TFP internals.

Everything else in the package imports from here (never the reverse). Contents:

* ``float_dtype``: the constructor's ``dtype`` argument, checked to be floating.
* ``check_input``: the event shape of an input (always, statically, and dynamically with
  ``validate_args``) and its finiteness (with ``validate_args``); errors name the bijector,
  the expected and the actual shape.
* ``DtypeChecked``: a mixin (list it before ``tfb.Bijector``) that rejects inputs whose dtype
  differs from the bijector's, numpy arrays included (TFP itself silently casts numpy input).
* ``initialize_once``: data-dependent initialisation guarded by a boolean variable, so the
  "initialised" state lives in (and is saved with) the model's variables.
* the conditioning protocol (``conditional_shape``, ``conditional_kwargs``; see below).
* the TF/TFP internals the package relies on, version-bounded (``SUPPORTED_VERSIONS``).
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

# TF/TFP internals: imported here and nowhere else. The versions they were checked against are
# ``SUPPORTED_VERSIONS`` (also the bounds in pyproject.toml; tests/test_core.py pins them).
from tensorflow.python.eager import record as _record
from tensorflow.python.ops import control_flow_util as _control_flow_util
from tensorflow_probability.python.bijectors import invert as _invert_lib
from tensorflow_probability.python.internal import cache_util as _cache_util
from tensorflow_probability.python.internal import parameter_properties as _parameter_properties

tfb = tfp.bijectors

__all__ = ["float_dtype", "as_event_shape", "check_input", "check_dtype", "DtypeChecked",
           "initialize_once", "init_flag", "ParameterProperties", "BijectorCacheWithGreedyAttrs",
           "INVERT_TYPES", "stop_recording", "SUPPORTED_VERSIONS", "conditional_kwargs",
           "conditional_shape", "pending_data_init"]

SUPPORTED_VERSIONS = {"tensorflow": ("2.16", "2.22"), "tensorflow-probability": ("0.24", "0.26")}
"""Half-open ``[low, high)`` version ranges of the TF/TFP releases whose internals we use."""

ParameterProperties = _parameter_properties.ParameterProperties
"""TFP's per-parameter batch-shape metadata (``_parameter_properties`` of a bijector)."""

BijectorCacheWithGreedyAttrs = _cache_util.BijectorCacheWithGreedyAttrs
"""TFP's bijector cache that stores extra attributes (log-dets) with each (x, y) pair."""

INVERT_TYPES = (tfb.Invert, _invert_lib._Invert)  # pylint: disable=protected-access
"""``tfb.Invert(b)`` builds a private base class when ``b`` is not a composite tensor."""

stop_recording = _record.stop_recording
"""Context manager pausing every gradient tape (used by the fixed-point solver's loop)."""


def in_xla_context():
  """True while tracing a function compiled by XLA (``jit_compile=True``).

  XLA drops ``tf.debugging`` assertions and cannot compile ``tf.print``: code that reports
  problems at run time checks this and leaves the report to the caller's result fields.
  """
  if tf.executing_eagerly():
    return False
  return bool(_control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def float_dtype(dtype):
  """Returns ``tf.as_dtype(dtype)``, raising ``TypeError`` unless it is floating."""
  dtype = tf.as_dtype(dtype)
  if not dtype.is_floating:
    raise TypeError(f"dtype must be a floating dtype (float32 or float64), got {dtype.name}.")
  return dtype


def as_event_shape(event_shape, name="event_shape"):
  """A tuple of positive Python ints from an int, list, tuple or TensorShape."""
  if isinstance(event_shape, (int, np.integer)):
    event_shape = (int(event_shape),)
  try:
    shape = tuple(int(d) for d in tf.TensorShape(event_shape).as_list())
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be a fully known shape, got {event_shape!r}.") from e
  if not shape or any(d <= 0 for d in shape):
    raise ValueError(f"{name} must be a non-empty shape of positive sizes, got {event_shape!r}.")
  return shape


def check_input(x, event_shape, *, name, validate_args, what="x"):
  """Validates ``x`` against ``event_shape`` and returns it (with assertions attached).

  The static shape is always checked and a mismatch raises ``ValueError`` right away. With
  ``validate_args=True`` the dynamic shape and finiteness (no NaN/inf) are asserted too.
  """
  event_shape = tuple(event_shape)
  k = len(event_shape)
  if not x.dtype.is_floating:
    raise TypeError(f"{name}: {what} must be floating, got dtype {x.dtype.name}.")
  static = x.shape
  if static.rank is not None:
    if static.rank < k:
      raise ValueError(
          f"{name}: {what} must have at least {k} dims for event shape {list(event_shape)}, "
          f"got shape {static.as_list()}.")
    if not static[static.rank - k:].is_compatible_with(event_shape):
      raise ValueError(
          f"{name}: expected event shape {list(event_shape)} in the last {k} dims of {what}, "
          f"got shape {static.as_list()}.")
  if not validate_args:
    return x
  deps = [tf.debugging.assert_equal(
      tf.shape(x)[tf.rank(x) - k:], tf.constant(event_shape, tf.int32),
      message=f"{name}: expected event shape {list(event_shape)} for {what}.")]
  deps.append(tf.debugging.Assert(
      tf.reduce_all(tf.math.is_finite(x)),
      [f"{name}: {what} contains NaN or inf values."]))
  with tf.control_dependencies(deps):
    return tf.identity(x)


def check_dtype(bijector, x, what):
  """Raises ``TypeError`` if ``x`` has a dtype (tensor or numpy) other than the bijector's."""
  dtype = getattr(x, "dtype", None)
  if dtype is None or bijector.dtype is None:
    return
  dtype = tf.as_dtype(dtype)
  if not dtype.is_floating:
    raise TypeError(f"{bijector.name}: {what} must be floating ({bijector.dtype.name}), got "
                    f"dtype {dtype.name}.")
  if dtype != bijector.dtype:
    raise TypeError(f"{bijector.name}: {what} has dtype {dtype.name} but the bijector is "
                    f"{bijector.dtype.name}; cast the input or build the bijector with "
                    f"dtype={dtype.name}.")


class DtypeChecked:
  """Mixin for ``tfb.Bijector`` subclasses: strict input dtypes on the public methods."""

  def forward(self, x, *args, **kwargs):
    check_dtype(self, x, "x")
    return super().forward(x, *args, **kwargs)

  def inverse(self, y, *args, **kwargs):
    check_dtype(self, y, "y")
    return super().inverse(y, *args, **kwargs)

  def forward_log_det_jacobian(self, x, *args, **kwargs):
    check_dtype(self, x, "x")
    return super().forward_log_det_jacobian(x, *args, **kwargs)

  def inverse_log_det_jacobian(self, y, *args, **kwargs):
    check_dtype(self, y, "y")
    return super().inverse_log_det_jacobian(y, *args, **kwargs)


def init_flag(done=False, name="initialized"):
  """A non-trainable boolean variable recording that data-dependent init has run.

  ``done=True`` for layers built without data-dependent init (nothing left to run).
  """
  return tf.Variable(bool(done), trainable=False, name=name)


def initialize_once(flag, init_fn):
  """Runs ``init_fn()`` (which assigns variables) iff ``flag`` is False, then sets it.

  Works eagerly, in ``tf.function`` and under XLA. Returns an op/tensor to use as a control
  dependency before reading the initialised variables.
  """
  def run_init():
    deps = [d for d in tf.nest.flatten(init_fn()) if d is not None]
    with tf.control_dependencies(deps):
      return flag.assign(True, read_value=True)

  return tf.cond(flag, lambda: tf.identity(flag), run_init)


# ------------------------------------------------------------------ the conditioning protocol
#
# A bijector that takes a context (a class label, an encoder output, ...) says so publicly:
# its ``conditional_shape`` attribute is the event shape of that context (a tuple of ints), and
# its methods accept ``conditional_input=c`` with ``c`` of shape ``batch + conditional_shape``.
# Bijectors without the attribute, or with ``conditional_shape = None``, take no context.
# Containers route the context to their parts: ``tfb.Composition`` (``tfb.Chain``) by part name
# (TFP's nested ``bijector_kwargs``), ``tfb.Invert`` by passing its keyword arguments to its
# inner bijector. A bijector that holds other bijectors and passes the context on to them
# (``FactorOut``) exposes their ``conditional_shape`` itself and routes with
# ``conditional_kwargs`` internally. Nothing else is read: no private attributes.


def _own_conditional_shape(bijector):
  shape = getattr(bijector, "conditional_shape", None)
  return None if shape is None else tuple(int(d) for d in tf.TensorShape(shape).as_list())


def conditional_kwargs(bijector, conditional_input):
  """The ``bijector_kwargs`` that route ``conditional_input`` to every conditional part.

  ``{}`` for an unconditional bijector; for a ``tfb.Chain`` a dict nested by part name, as
  ``TransformedDistribution.log_prob(x, bijector_kwargs=...)`` and ``.sample`` expect.
  """
  if isinstance(bijector, tfb.Composition):
    out = {}
    for part in bijector.bijectors:
      sub = conditional_kwargs(part, conditional_input)
      if sub:
        out[part.name] = sub
    return out
  if isinstance(bijector, INVERT_TYPES):
    return conditional_kwargs(bijector.bijector, conditional_input)
  if _own_conditional_shape(bijector) is not None:
    return {"conditional_input": conditional_input}
  return {}


def conditional_shape(bijector):
  """The context shape that ``bijector`` (or any of its parts) takes, or None.

  Raises ``ValueError`` if two parts take contexts of different shapes (pass the context to
  such a flow with hand-made ``bijector_kwargs``).
  """
  if isinstance(bijector, tfb.Composition):
    shapes = {s for s in (conditional_shape(p) for p in bijector.bijectors) if s is not None}
    if len(shapes) > 1:
      raise ValueError(f"{bijector.name}: parts take contexts of different shapes "
                       f"{sorted(list(s) for s in shapes)}; one context cannot feed them all.")
    return shapes.pop() if shapes else None
  if isinstance(bijector, INVERT_TYPES):
    return conditional_shape(bijector.bijector)
  return _own_conditional_shape(bijector)


def pending_data_init(module):
  """The sub-modules of ``module`` whose data-dependent initialisation has not run yet.

  A layer with data-dependent initialisation exposes a public ``initialized`` attribute, a
  boolean ``tf.Variable`` that is False until its first data batch (``ActNorm``,
  ``MarginalGaussianization``, ``HouseholderRotation(init="pca")``). Callers such as
  ``FlowModel`` run that first batch eagerly, so a bad batch is reported before training.
  """
  modules = [module] + list(getattr(module, "submodules", ()))
  out = []
  for m in modules:
    flag = getattr(m, "initialized", None)
    if isinstance(flag, tf.Variable) and flag.dtype == tf.bool and not bool(flag.numpy()):
      out.append(m)
  return out
