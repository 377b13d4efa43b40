"""Shared numerics: equation solvers with implicit gradients, and stable special functions.

This is the only module of tfp_flows that solves equations. Every iterative inverse
(planar-tanh, radial, masked convolutions, Gaussianization) goes through here so that
tolerances, iteration caps, convergence reports and gradients are handled once.

Root finding
------------
``monotone_root(objective_fn, target, low, high)`` solves ``objective_fn(x) = target``
element-wise for an increasing ``objective_fn`` inside a bracket ``[low, high]`` with
Chandrupatla's method (a safeguarded inverse-quadratic / bisection hybrid; TFP's
vectorised implementation). The solve itself runs under ``tf.stop_gradient``; gradients are
attached afterwards by one differentiable Newton step (``attach_implicit_gradient``)::

    x = x* - (f(x*; theta) - t) / stop_gradient(f'(x*; theta))

At the solution ``f(x*) = t`` so the value is ``x*`` (slightly polished), and by the implicit
function theorem the first derivatives are exact:
``dx/dt = 1 / f'(x*)`` and ``dx/dtheta = -(df/dtheta) / f'(x*)``.

Tolerances
----------
``default_tolerance(dtype)`` is the position tolerance used when none is given:
``1e-6`` for float32 and ``1e-12`` for float64, relative to ``1 + |x|``.
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

__all__ = [
    "RootResult",
    "default_tolerance",
    "monotone_root",
    "attach_implicit_gradient",
    "elementwise_derivative",
    "assert_converged",
    "log_sigmoid",
    "log1mexp",
]

RootResult = collections.namedtuple(
    "RootResult", ["root", "num_iterations", "converged", "residual"])
RootResult.__doc__ = """Result of an iterative solve.

Fields:
  root: the solution, with implicit gradients attached.
  num_iterations: int32 tensor, iterations used (per element where the solver reports it).
  converged: bool tensor shaped like the batch of problems.
  residual: |f(root) - target|, a tensor shaped like ``root``.
"""

_DEFAULT_TOL = {tf.float16: 1e-3, tf.bfloat16: 1e-2, tf.float32: 1e-6, tf.float64: 1e-12}
DEFAULT_MAX_ITERATIONS = 100


def default_tolerance(dtype):
  """Default relative position tolerance for iterative inverses of this dtype."""
  dtype = tf.as_dtype(dtype)
  if dtype not in _DEFAULT_TOL:
    raise TypeError(f"Iterative solvers need a floating dtype, got {dtype.name}.")
  return _DEFAULT_TOL[dtype]


def elementwise_derivative(fn, x):
  """d fn(x) / dx for an element-wise function ``fn`` (one backward pass)."""
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = fn(x)
  return y, tape.gradient(y, x)


def attach_implicit_gradient(objective_fn, root, target):
  """Returns ``root`` carrying implicit-function-theorem gradients.

  ``objective_fn`` must be element-wise in its argument (each output depends only on the
  matching input element); it may close over trainable variables, whose gradients then flow
  correctly through the solution. ``target`` may also carry gradients.
  """
  root = tf.stop_gradient(root)
  value, slope = elementwise_derivative(objective_fn, root)
  return root - (value - target) / tf.stop_gradient(slope)


def assert_converged(converged, what, validate_args):
  """With ``validate_args`` raise (eagerly or as an op) if any element did not converge.

  Returns a list of control dependencies (empty when ``validate_args`` is False). Under XLA
  (``jit_compile=True``) assertions are compiled away by TensorFlow, so use eager or plain
  ``tf.function`` to validate.
  """
  if not validate_args:
    return []
  return [tf.debugging.assert_equal(
      tf.reduce_all(converged), True,
      message=f"{what} did not converge within the iteration cap; increase "
              "max_iterations or the tolerance, or check the input is in range.")]


def monotone_root(objective_fn, target, low, high, *, position_tolerance=None,
                  max_iterations=DEFAULT_MAX_ITERATIONS, validate_args=False,
                  name="monotone_root"):
  """Solves ``objective_fn(x) == target`` element-wise for increasing ``objective_fn``.

  Args:
    objective_fn: element-wise, increasing callable. May close over variables.
    target: tensor of targets.
    low, high: tensors broadcastable to ``target`` with
      ``objective_fn(low) <= target <= objective_fn(high)`` (a valid bracket).
    position_tolerance: relative tolerance on ``x`` (absolute tolerance is
      ``position_tolerance * (1 + |low| + |high|) / 2``); ``default_tolerance(dtype)`` if None.
    max_iterations: iteration cap of the bracketed search.
    validate_args: raise if any element did not converge (the bracket must also be valid).
    name: name scope.

  Returns:
    ``RootResult`` whose ``root`` has implicit gradients w.r.t. ``target`` and any variables
    ``objective_fn`` uses.
  """
  with tf.name_scope(name):
    target = tf.convert_to_tensor(target)
    dtype = target.dtype
    low = tf.broadcast_to(tf.convert_to_tensor(low, dtype), tf.shape(target))
    high = tf.broadcast_to(tf.convert_to_tensor(high, dtype), tf.shape(target))
    tol = position_tolerance if position_tolerance is not None else default_tolerance(dtype)
    abs_tol = tf.stop_gradient(tol * (1. + 0.5 * (tf.abs(low) + tf.abs(high))))
    sg_target = tf.stop_gradient(target)

    def shifted(x):
      return tf.stop_gradient(objective_fn(x)) - sg_target

    result = tfp.math.find_root_chandrupatla(
        shifted, low=tf.stop_gradient(low), high=tf.stop_gradient(high),
        position_tolerance=abs_tol, value_tolerance=tf.zeros([], dtype),
        max_iterations=max_iterations)
    root = result.estimated_root
    residual = tf.abs(result.objective_at_estimated_root)
    # Converged: the search stopped before the cap, or landed on the root exactly.
    num_iterations = tf.broadcast_to(result.num_iterations, tf.shape(root))
    converged = (num_iterations < max_iterations) | tf.equal(residual, 0.)
    deps = assert_converged(converged, name, validate_args)
    if validate_args:
      deps.append(tf.debugging.assert_less_equal(
          shifted(low), tf.zeros([], dtype),
          message=f"{name}: invalid bracket, f(low) > target."))
      deps.append(tf.debugging.assert_greater_equal(
          shifted(high), tf.zeros([], dtype),
          message=f"{name}: invalid bracket, f(high) < target."))
    with tf.control_dependencies(deps):
      root = attach_implicit_gradient(objective_fn, root, target)
    return RootResult(root, num_iterations, converged, residual)


def log_sigmoid(x):
  """log(1 / (1 + exp(-x))), finite for every finite x (= -softplus(-x))."""
  return -tf.math.softplus(-x)


def log1mexp(x):
  """log(1 - exp(x)) for x <= 0, accurate near 0 and for very negative x (Maechler 2012)."""
  x = tf.convert_to_tensor(x)
  log_half = tf.constant(-np.log(2.), x.dtype)
  tiny = tf.constant(np.finfo(x.dtype.as_numpy_dtype).tiny, x.dtype)
  # Both branches are evaluated by tf.where: keep each one's argument in its safe range.
  near_zero = tf.math.log(-tf.math.expm1(tf.minimum(x, -tiny)))
  far = tf.math.log1p(-tf.exp(tf.minimum(x, log_half)))
  return tf.where(x > log_half, near_zero, far)
