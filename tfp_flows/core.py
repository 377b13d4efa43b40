"""The ground floor: what every tfp_flows module shares, and the only imports of TF/TFP internals.

Everything else in the package imports from here (never the reverse). Contents:

* ``float_dtype``: the constructor's ``dtype`` argument, checked to be floating.
* ``check_input``: the event shape of an input (statically always; at run time whenever the
  static event shape is unknown, and always with ``validate_args``) and its finiteness (with
  ``validate_args``); errors name the bijector, the expected and the actual shape.
* ``DtypeChecked``: a mixin (list it before ``tfb.Bijector``) that rejects inputs whose dtype
  differs from the bijector's, numpy arrays included (TFP itself silently casts numpy input).
* ``as_parameter``: a constructor argument used as given (a tensor keeps its gradient path, a
  ``tf.Variable`` / ``DeferredTensor`` / ``TransformedVariable`` its reference), or a new
  variable when nothing was passed; ``static_batch_shape`` for the batch part of its shape.
* ``data_init``: data-dependent initialisation guarded by a boolean variable, so the
  "initialised" state lives in (and is saved with) the model's variables; one rule for every
  data-initialised layer (an empty, non-finite or too-small batch is an error and leaves the
  flag unset, a small one warns). ``initialize_once`` is the bare guarded-run primitive.
* ``flatten_batch``: batch dims folded into one leading axis, and back.
* seeds (``rng``, ``child_seeds``) and the default iteration caps and tolerances of the
  iterative solvers (``default_tolerance``, ``DEFAULT_MAX_ITERATIONS``, ...).
* the conditioning protocol (``conditional_shape``, ``conditional_kwargs``; see below).
* the TF/TFP internals the package relies on, version-bounded (``SUPPORTED_VERSIONS``).
"""

import os
import sys
import warnings

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

# TF/TFP internals: imported here and nowhere else. The versions they were checked against are
# ``SUPPORTED_VERSIONS`` (also the bounds in pyproject.toml; tests/test_core.py pins them).
from tensorflow.python.eager import record as _record
from tensorflow.python.ops import control_flow_util as _control_flow_util
from tensorflow_probability.python.bijectors import chain as _chain_lib
from tensorflow_probability.python.bijectors import invert as _invert_lib
from tensorflow_probability.python.internal import cache_util as _cache_util
from tensorflow_probability.python.internal import parameter_properties as _parameter_properties

tfb = tfp.bijectors

__all__ = ["float_dtype", "as_event_shape", "check_input", "check_dtype", "DtypeChecked",
           "is_ref", "as_parameter", "static_value", "broadcast_batch_shape", "flatten_batch",
           "batch_size", "rng", "child_seeds", "DEFAULT_MAX_ITERATIONS",
           "DEFAULT_FIXED_POINT_ITERATIONS", "default_tolerance", "attainable_tolerance",
           "initialize_once", "init_flag", "as_init_flag", "init_state", "data_init", "DataInitWarning",
           "ParameterProperties", "BijectorCacheWithGreedyAttrs", "INVERT_TYPES", "CHAIN_TYPES",
           "stop_recording", "SUPPORTED_VERSIONS", "conditional_kwargs", "conditional_shape",
           "pending_data_init"]

SUPPORTED_VERSIONS = {"tensorflow": ("2.16", "2.22"), "tensorflow-probability": ("0.24", "0.26")}
"""Half-open ``[low, high)`` version ranges of the TF/TFP releases whose internals we use."""

ParameterProperties = _parameter_properties.ParameterProperties
"""TFP's per-parameter batch-shape metadata (``_parameter_properties`` of a bijector)."""

BijectorCacheWithGreedyAttrs = _cache_util.BijectorCacheWithGreedyAttrs
"""TFP's bijector cache that stores extra attributes (log-dets) with each (x, y) pair."""

INVERT_TYPES = (tfb.Invert, _invert_lib._Invert)  # pylint: disable=protected-access
"""``tfb.Invert(b)`` builds a private base class when ``b`` is not a composite tensor."""

CHAIN_TYPES = (tfb.Chain, _chain_lib._Chain)  # pylint: disable=protected-access
"""``tfb.Chain(parts)`` builds a private base class when a part is not a composite tensor."""

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

  The static shape is always checked and a mismatch raises ``ValueError`` right away. Where
  the static event shape is not fully known (``None`` dims in a ``tf.function`` signature or a
  SavedModel), the event shape is asserted at run time, whatever ``validate_args`` says: a
  wrong size is an ``InvalidArgumentError`` naming the bijector and both shapes, never a
  silent truncation or broadcast. With ``validate_args=True`` the event shape is also asserted
  at run time, and finiteness (no NaN/inf).
  """
  event_shape = tuple(event_shape)
  k = len(event_shape)
  if not x.dtype.is_floating:
    raise TypeError(f"{name}: {what} must be floating, got dtype {x.dtype.name}.")
  static = x.shape
  static_known = False
  if static.rank is not None:
    if static.rank < k:
      raise ValueError(
          f"{name}: {what} must have at least {k} dims for event shape {list(event_shape)}, "
          f"got shape {static.as_list()}.")
    static_event = static[static.rank - k:]
    if not static_event.is_compatible_with(event_shape):
      raise ValueError(
          f"{name}: expected event shape {list(event_shape)} in the last {k} dims of {what}, "
          f"got shape {static.as_list()}.")
    static_known = static_event.is_fully_defined()
  deps = []
  if not static_known or validate_args:
    shape = tf.shape(x)
    rank = tf.size(shape)
    deps.append(tf.debugging.assert_greater_equal(
        rank, k, message=f"{name}: {what} must have at least {k} dims for event shape "
                         f"{list(event_shape)}."))
    with tf.control_dependencies(deps):
      actual = shape[tf.maximum(rank - k, 0):]
    deps.append(tf.debugging.assert_equal(
        actual, tf.constant(event_shape, tf.int32),
        message=f"{name}: expected event shape {list(event_shape)} in the last {k} dims of "
                f"{what}; the actual event shape (x) vs the expected (y):"))
  if validate_args:
    deps.append(tf.debugging.Assert(
        tf.reduce_all(tf.math.is_finite(x)),
        [f"{name}: {what} contains NaN or inf values."]))
  if not deps:
    return x
  with tf.control_dependencies(deps):
    out = tf.identity(x)
  if static.rank is not None and static.rank >= k:
    out.set_shape(static[:static.rank - k].concatenate(event_shape))
  return out


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


# ------------------------------------------------------------------ parameters
#
# TFP's convention: a parameter is used as given. A tensor stays a tensor (gradients reach
# whatever produced it: an encoder, a hyper-network), a ``tf.Variable`` or a ``tf.Module``
# with ``dtype`` and ``shape`` (``tfp.util.DeferredTensor``, ``TransformedVariable``) is kept
# by reference and read at every call. A variable is created only when nothing is passed.


def is_ref(value):
  """True for a ``tf.Variable`` or a ``tf.Module`` with ``dtype`` and ``shape`` (DeferredTensor)."""
  return isinstance(value, tf.Variable) or (
      isinstance(value, tf.Module) and hasattr(value, "dtype") and hasattr(value, "shape"))


def as_parameter(value, *, dtype, event_shape=(), default=None, name, what, trainable=True):
  """A bijector parameter from a constructor argument, checked for dtype and event shape.

  Args:
    value: None, a tensor-like (numpy arrays and lists are converted to ``dtype``), a
      ``tf.Variable`` or a ``DeferredTensor``/``TransformedVariable`` (kept as given).
    dtype: the bijector's dtype; tensors and variables of another dtype are a ``TypeError``.
    event_shape: the trailing dims the parameter must have (its shape is ``batch +
      event_shape``); ``None`` entries accept any size.
    default: zero-argument callable returning the initial value of a new ``tf.Variable`` when
      ``value`` is None (None: return None).
    name, what: the bijector's and the parameter's names, for error messages.
    trainable: of the variable created by default.

  Returns:
    ``value`` (a tensor, or the reference object unchanged), or the new variable.
  """
  event_shape = tuple(event_shape)
  name = name.rstrip("/")
  if value is None:
    if default is None:
      return None
    return tf.Variable(tf.cast(default(), dtype), trainable=trainable, name=what)
  if is_ref(value):
    if tf.as_dtype(value.dtype) != dtype:
      raise TypeError(f"{name}: {what} has dtype {tf.as_dtype(value.dtype).name}, expected "
                      f"{dtype.name} (the bijector's dtype).")
  elif tf.is_tensor(value):
    if value.dtype != dtype:
      raise TypeError(f"{name}: {what} has dtype {value.dtype.name}, expected {dtype.name} "
                      f"(the bijector's dtype); cast it or pass dtype={value.dtype.name}.")
  else:
    try:
      value = tf.convert_to_tensor(value, dtype)
    except (TypeError, ValueError) as e:
      raise TypeError(f"{name}: {what} must be convertible to a {dtype.name} tensor, got "
                      f"{type(value).__name__}: {e}") from e
  shape = tf.TensorShape(value.shape)
  k = len(event_shape)
  if shape.rank is not None and (
      shape.rank < k or not shape[shape.rank - k:].is_compatible_with(event_shape)):
    raise ValueError(f"{name}: {what} must have shape batch_shape + {list(event_shape)}, got "
                     f"{shape.as_list()}.")
  return value


def static_value(value, what, name):
  """The numpy value of a parameter (``tf.init_scope`` lifts variables out of functions).

  Raises ``ValueError`` for a symbolic tensor (e.g. an argument inside ``tf.function``), whose
  value is not known when the bijector is built.
  """
  if is_ref(value):
    with tf.init_scope():
      return np.asarray(tf.convert_to_tensor(value))
  static = tf.get_static_value(tf.convert_to_tensor(value))
  if static is None:
    raise ValueError(f"{name}: the default of another parameter is derived from {what}, whose "
                     "value is not known here (a symbolic tensor); pass every parameter.")
  return np.asarray(static)


def broadcast_batch_shape(*params_and_event_ndims, name="bijector"):
  """Static broadcast batch shape of ``(parameter, event_ndims)`` pairs (None entries skipped).

  Raises ``ValueError`` naming ``name`` and the shapes if the batch shapes do not broadcast.
  """
  shape = tf.TensorShape([])
  for p, nd in params_and_event_ndims:
    if p is None:
      continue
    s = tf.TensorShape(p.shape)
    if s.rank is None:
      return tf.TensorShape(None)
    try:
      shape = tf.broadcast_static_shape(shape, s[:s.rank - nd])
    except ValueError as e:
      shapes = [None if p is None else tf.TensorShape(p.shape).as_list()
                for p, _ in params_and_event_ndims]
      raise ValueError(f"{name.rstrip('/')}: the parameters' batch shapes do not broadcast "
                       f"(parameter shapes {shapes}).") from e
  return shape


# ------------------------------------------------------------------ shapes, seeds, defaults


def flatten_batch(x, event_ndims):
  """Folds the batch dims of ``x`` into one leading axis: ``(flat, restore)``.

  ``flat`` has shape ``[N] + event_shape`` (static event dims kept where known); ``restore(t)``
  reshapes a tensor ``[N] + any_event_shape`` back to ``batch + any_event_shape`` (with the
  static batch shape of ``x`` where known). For layers whose ops need exactly one batch axis
  (convolutions, conditioners, sorting for data-dependent init).
  """
  x = tf.convert_to_tensor(x)
  event_ndims = int(event_ndims)
  shape = tf.shape(x)
  rank = tf.size(shape)
  lead = shape[:rank - event_ndims]
  if event_ndims:
    event = shape[rank - event_ndims:]
    flat = tf.reshape(x, tf.concat([[-1], event], 0))
  else:
    flat = tf.reshape(x, [-1])
  if x.shape.rank is not None:
    static_lead = x.shape[:x.shape.rank - event_ndims]
    flat.set_shape(tf.TensorShape([static_lead.num_elements()]).concatenate(
        x.shape[x.shape.rank - event_ndims:]))
  else:
    static_lead = tf.TensorShape(None)

  def restore(t):
    t = tf.convert_to_tensor(t)
    out = tf.reshape(t, tf.concat([lead, tf.shape(t)[1:]], 0))
    if t.shape.rank is not None:
      out.set_shape(static_lead.concatenate(t.shape[1:]))
    return out

  return flat, restore


def batch_size(x, event_ndims):
  """Number of events in ``x`` (the product of its batch dims), an int32 scalar tensor."""
  shape = tf.shape(x)
  return tf.reduce_prod(shape[:tf.size(shape) - int(event_ndims)])


def rng(seed):
  """``np.random.default_rng(seed)``: the one way tfp_flows draws initial values."""
  return np.random.default_rng(seed)


def child_seeds(seed, n):
  """``n`` independent int seeds in ``[0, 2**31)`` derived from ``seed`` (None: fresh entropy).

  The i-th seed is the i-th draw ``rng(seed).integers(2**31)``, so builders that give layer i
  the seed ``child_seeds(seed, n)[i]`` reproduce their earlier initial values.
  """
  generator = rng(seed)
  return [int(generator.integers(2**31)) for _ in range(int(n))]


DEFAULT_MAX_ITERATIONS = 100
"""Iteration cap of the scalar root finders (``numerics.monotone_root``, ``one_sided_newton``)."""

DEFAULT_FIXED_POINT_ITERATIONS = 500
"""Iteration cap of ``numerics.fixed_point`` (masked-convolution inverses)."""

_DEFAULT_TOL = {tf.float16: 1e-3, tf.bfloat16: 1e-2, tf.float32: 1e-6, tf.float64: 1e-12}


def default_tolerance(dtype):
  """Default relative position tolerance of iterative inverses: 1e-6 float32, 1e-12 float64."""
  dtype = tf.as_dtype(dtype)
  if dtype not in _DEFAULT_TOL:
    raise TypeError(f"Iterative solvers need a floating dtype, got {dtype.name}.")
  return _DEFAULT_TOL[dtype]


def attainable_tolerance(tolerance, dtype):
  """``tolerance`` raised to what ``dtype`` can resolve: at least 4 ulp (4 machine epsilons).

  A relative position tolerance below the precision of the working dtype can only be met by
  luck; solvers use this floor so that "converged" means as close as the dtype allows.
  """
  dtype = tf.as_dtype(dtype)
  tol = default_tolerance(dtype) if tolerance is None else float(tolerance)
  if not 0 < tol < np.inf:
    raise ValueError(f"tolerance must be positive and finite, got {tolerance!r}.")
  return max(tol, 4. * float(np.finfo(dtype.as_numpy_dtype).eps))


# ------------------------------------------------------------------ data-dependent init


def init_flag(done=False, name="initialized"):
  """A non-trainable boolean variable recording that data-dependent init has run.

  ``done=True`` for layers built without data-dependent init (nothing left to run).
  """
  return tf.Variable(bool(done), trainable=False, name=name)


def as_init_flag(flag, done, name):
  """The layer's "initialised" flag: ``flag`` if given (a boolean ``tf.Variable``, e.g. from
  ``parameters`` when copying a layer); else a new ``init_flag()`` for a layer that still has
  to initialise from data, and None for one that never will (``done``): no variable is
  created, so such a layer can be built from tensors inside ``tf.function``."""
  if flag is None:
    return None if done else init_flag(done=False)
  if not isinstance(flag, tf.Variable) or flag.dtype != tf.bool:
    raise TypeError(f"{name}: initialized must be a boolean tf.Variable, got {flag!r}.")
  return flag


def init_state(flag):
  """What a layer's ``initialized`` property returns: its flag, or ``True`` (a constant) when
  it has none (built without data-dependent init)."""
  return tf.constant(True) if flag is None else flag


def initialize_once(flag, init_fn):
  """Runs ``init_fn()`` (which assigns variables) iff ``flag`` is False, then sets it.

  Works eagerly, in ``tf.function`` and under XLA. Returns an op/tensor to use as a control
  dependency before reading the initialised variables. ``data_init`` adds the checks of a
  usable batch on top of this.
  """
  def run_init():
    deps = [d for d in tf.nest.flatten(init_fn()) if d is not None]
    with tf.control_dependencies(deps):
      return flag.assign(True, read_value=True)

  return tf.cond(flag, lambda: tf.identity(flag), run_init)


_LIBRARY_DIRS = tuple(os.path.dirname(m.__file__) + os.sep for m in (tf, tfp)) + (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,)


def warn(message, category):
  """``warnings.warn`` pointing at the first caller outside TF, TFP and tfp_flows."""
  frame, level = sys._getframe(1), 2  # pylint: disable=protected-access
  while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
      _LIBRARY_DIRS):
    frame, level = frame.f_back, level + 1
  warnings.warn(message, category, stacklevel=level)


class DataInitWarning(UserWarning):
  """Data-dependent initialisation ran on a batch smaller than recommended."""


def _flag_value_at_trace(flag):
  with tf.init_scope():
    if tf.executing_eagerly():
      return bool(flag.numpy())
  return None


def data_init(flag, x, compute_fn, *, name, event_ndims, min_events=2,
              recommended_events=None, what="events"):
  """Data-dependent initialisation from batch ``x``, once, by one rule for every layer.

  ``compute_fn(x)`` returns ``[(variable, value), ...]``; the values are assigned and ``flag``
  set only if the batch is usable: at least ``min_events`` events (the product of the batch
  dims of ``x``, whose last ``event_ndims`` dims are the event), every entry of ``x`` finite,
  and every computed value finite (a 1e30 entry whose square overflows is caught here).
  Otherwise nothing is assigned and the flag stays unset, so the next good batch
  initialises. Eagerly a bad batch raises ``ValueError`` (saying what is wrong, and the minimum
  for a small batch); in a graph the same messages are ``tf.debugging`` assertions, and the
  assignments are guarded (under XLA, which drops assertions, a bad batch is skipped). A batch
  below ``recommended_events`` initialises with a ``DataInitWarning``.

  If ``flag`` is already set when a function is traced, nothing is added to the graph (a
  function traced before restoring an uninitialised checkpoint needs a retrace).

  Returns:
    A list of control dependencies to run before reading the variables.
  """
  done = _flag_value_at_trace(flag)
  if done:
    return []
  min_events = int(min_events)
  prefix = f"{name}: data-dependent initialisation"
  small = (f"{prefix} needs at least {min_events} {what} in its first batch to estimate its "
           f"statistics; the layer stays uninitialised until a usable batch comes.")
  nonfinite = (f"{prefix}: the batch contains NaN or inf values; the layer stays "
               "uninitialised until a usable batch comes.")
  overflow = (f"{prefix}: statistics of the batch are not finite (values too large for "
              f"the dtype?); the layer stays uninitialised until a usable batch comes.")
  if tf.executing_eagerly():
    x = tf.convert_to_tensor(x)
    n = int(batch_size(x, event_ndims))
    if n < min_events:
      raise ValueError(f"{small[:-1]} Got {n}.")
    if not bool(tf.reduce_all(tf.math.is_finite(x))):
      raise ValueError(nonfinite)
    pairs = compute_fn(x)
    bad = [v.name for v, value in pairs if not bool(tf.reduce_all(tf.math.is_finite(value)))]
    if bad:
      raise ValueError(f"{overflow} Non-finite: {bad}.")
    if recommended_events is not None and n < int(recommended_events):
      warn(f"{prefix} from only {n} {what} (at least {int(recommended_events)} recommended): "
           "its statistics will be rough.", DataInitWarning)
    for v, value in pairs:
      v.assign(value)
    flag.assign(True)
    return []

  def run_init():
    xt = tf.convert_to_tensor(x)
    n = batch_size(xt, event_ndims)
    enough = n >= min_events
    finite = tf.reduce_all(tf.math.is_finite(xt))
    checks = [tf.debugging.Assert(enough, [small, "Got", n]),
              tf.debugging.Assert(finite, [nonfinite])]
    with tf.control_dependencies(checks):
      xt = tf.identity(xt)
    pairs = compute_fn(xt)
    stats_finite = tf.reduce_all(
        tf.stack([tf.reduce_all(tf.math.is_finite(value)) for _, value in pairs]))
    with tf.control_dependencies([tf.debugging.Assert(stats_finite, [overflow])]):
      ok = enough & finite & stats_finite
    assigns = [v.assign(tf.where(ok, tf.cast(value, v.dtype), v)) for v, value in pairs]
    with tf.control_dependencies(assigns):
      return flag.assign(ok, read_value=True)

  return [tf.cond(flag, lambda: tf.identity(flag), run_init)]


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
