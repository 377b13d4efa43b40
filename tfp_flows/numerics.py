"""Shared numerics: equation solvers with implicit gradients, and stable special functions.

This is the only module of tfp_flows that solves equations. Every iterative inverse
(planar-tanh, radial, masked convolutions, Gaussianization) goes through here so that
tolerances, iteration caps, convergence reports and gradients are handled once.

Root finding
------------
``monotone_root(objective_fn, target, low, high)`` solves ``objective_fn(x) = target``
element-wise for an increasing ``objective_fn`` inside a bracket ``[low, high]`` by
safeguarded Newton (Newton steps that leave the shrinking bracket become bisection steps),
vectorised in one ``tf.while_loop`` that XLA compiles. (TFP's Chandrupatla solver, tried
first, returned NaN for a few planar-tanh inputs under ``jit_compile=True``; regression cases
are in tests/test_planar.py.) The solve itself runs under ``tf.stop_gradient``; gradients are
attached afterwards by one differentiable Newton step (``attach_implicit_gradient``)::

    x = x* - (f(x*; theta) - t) / stop_gradient(f'(x*; theta))

At the solution ``f(x*) = t`` so the value is ``x*`` (slightly polished), and by the implicit
function theorem the first derivatives are exact:
``dx/dt = 1 / f'(x*)`` and ``dx/dtheta = -(df/dtheta) / f'(x*)``.

``one_sided_newton(value_and_slope_fn, target, start, end)`` is the cheaper solver for
objectives whose convexity is known on the bracket (planar-tanh): plain Newton from the end of
the bracket where Fourier's condition makes its iterates monotone, so no bisection fallback
and no bracket state are needed; the same implicit step gives its gradients.

``x_minus_tanh`` evaluates ``x - tanh(x)`` without cancellation near 0.

Special functions
-----------------
Log-space CDFs and quantiles for the Gaussianization flows: ``log_ndtr``, ``ndtri_of_log``,
``ndtri_from_log_tails``, ``logistic_mixture_log_cdf``, ``log1mexp``. Each was measured against
its TensorFlow/TFP counterpart (``benchmarks/bench_special.py``: accuracy against mpmath over the
whole range, gradients, XLA compile and run time); those kept here carry the figure in their
docstring. ``erfcx``, ``log_sigmoid`` and ``log_normal_pdf`` are TFP's / TensorFlow's.

Tolerances and convergence reports
----------------------------------
``default_tolerance(dtype)`` (``tfp_flows.core``) is the position tolerance used when none is
given: ``1e-6`` for float32 and ``1e-12`` for float64, relative to ``1 + |x|``. A tolerance
below what the dtype resolves is raised to 4 machine epsilons (``core.attainable_tolerance``),
and an element whose residual ``|f(x) - target|`` is at the rounding floor of the target
(``4 eps |target|``) or exactly 0 counts as converged: "converged" means as close as the
working dtype allows, never a demand it cannot meet.

Non-convergence is never silent (``check_convergence``): with ``validate_args=True`` it raises
``InvalidArgumentError``; otherwise it emits a ``ConvergenceWarning`` (eager) or prints the
same message to stderr (``tf.function``), naming the solve (the layer), the iteration cap,
the number of failed elements and the largest residual. Under XLA, which can neither assert
nor print, callers read the result's ``converged`` and ``residual`` fields.
"""

import collections
import sys

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import core

__all__ = [
    "RootResult",
    "default_tolerance",
    "monotone_root",
    "one_sided_newton",
    "attach_implicit_gradient",
    "elementwise_derivative",
    "assert_converged",
    "check_convergence",
    "ConvergenceWarning",
    "DEFAULT_MAX_ITERATIONS",
    "log_sigmoid",
    "log1mexp",
    "x_minus_tanh",
    "erfcx",
    "log_ndtr",
    "log_normal_pdf",
    "logistic_mixture_log_cdf",
    "ndtri_of_log",
    "ndtri_from_log_tails",
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

DEFAULT_MAX_ITERATIONS = core.DEFAULT_MAX_ITERATIONS
default_tolerance = core.default_tolerance


class ConvergenceWarning(RuntimeWarning):
  """An iterative solve stopped at its iteration cap before meeting its tolerance."""


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
  return _implicit_step(lambda x: elementwise_derivative(objective_fn, x), root, target)[0]


def _implicit_step(value_and_slope_fn, root, target):
  """(root with implicit gradients, |f(root) - target|) from one evaluation of f and f'."""
  root = tf.stop_gradient(root)
  value, slope = value_and_slope_fn(root)
  residual = tf.abs(tf.stop_gradient(value - target))
  return root - (value - target) / tf.stop_gradient(slope), residual


def assert_converged(converged, what, validate_args):
  """With ``validate_args`` raise (eagerly or as an op) if any element did not converge.

  Returns a list of control dependencies (empty when ``validate_args`` is False). Under XLA
  (``jit_compile=True``) assertions are compiled away by TensorFlow, so use eager or plain
  ``tf.function`` to validate. ``check_convergence`` also reports without ``validate_args``.
  """
  if not validate_args:
    return []
  return [tf.debugging.assert_equal(
      tf.reduce_all(converged), True,
      message=f"{what} did not converge within the iteration cap; increase "
              "max_iterations or the tolerance, or check the input is in range.")]


def check_convergence(converged, num_iterations, residual, name, validate_args, where=None):
  """Reports a solve that stopped at its cap: an error with ``validate_args``, else a warning.

  ``where``: optional bool mask of the elements to report on (the solvers pass "the target
  is finite": a NaN or inf input gives a NaN output, as everywhere in TFP, not a report).

  The message names ``name`` (the layer's solve), the iterations used, how many elements
  failed and their largest residual ``|f(x) - target|``. Eagerly the warning is a
  ``ConvergenceWarning``; in ``tf.function`` it is printed to stderr when it happens; under
  XLA nothing can be reported at run time (read ``converged``/``residual`` of the result).

  Returns:
    A list of control dependencies for the solution.
  """
  message = (f"{name} did not converge within the iteration cap; increase max_iterations or "
             "the tolerance, or check the input is in range.")
  if core.in_xla_context():
    return []
  converged = tf.convert_to_tensor(converged)
  failed = tf.logical_not(tf.broadcast_to(converged, tf.shape(residual)))
  if where is not None:
    failed = failed & tf.broadcast_to(where, tf.shape(residual))
  num_failed = tf.reduce_sum(tf.cast(failed, tf.int32))
  worst = tf.reduce_max(tf.where(failed, residual, tf.zeros_like(residual)))
  iterations = tf.reduce_max(num_iterations)
  if tf.executing_eagerly():
    if int(num_failed):
      text = (f"{name}: {int(num_failed)} of {int(tf.size(failed))} elements did not converge "
              f"in {int(iterations)} iterations (largest residual {float(worst):.3g}); "
              "increase max_iterations or the tolerance, or check the input is in range.")
      if validate_args:
        raise tf.errors.InvalidArgumentError(None, None, text)
      core.warn(text, ConvergenceWarning)
    return []
  all_converged = tf.equal(num_failed, 0)
  if validate_args:
    return [tf.debugging.Assert(all_converged, [
        message, "failed elements:", num_failed, "iterations:", iterations,
        "largest residual:", worst])]

  def report():
    print_op = tf.print("WARNING:", message, "failed elements:", num_failed, "iterations:",
                        iterations, "largest residual:", worst, output_stream=sys.stderr)
    with tf.control_dependencies([print_op]):
      return tf.identity(all_converged)

  return [tf.cond(all_converged, lambda: tf.identity(all_converged), report)]


# log(sigmoid(x)), finite for every finite x: TensorFlow's own (benchmarks/bench_special.py:
# values and gradients identical to the -softplus(-x) it replaced, <= 1.5 eps, same speed).
log_sigmoid = tf.math.log_sigmoid


# x - tanh(x) = x^3/3 - 2x^5/15 + 17x^7/315 - ... (Taylor coefficients, from exact fractions).
_X_MINUS_TANH_SERIES = (1 / 3, -2 / 15, 17 / 315, -62 / 2835, 1382 / 155925,
                        -21844 / 6081075, 929569 / 638512875, -6404582 / 10854718875,
                        443861162 / 1856156927625, -18888466084 / 194896477400625,
                        113927491862 / 2900518163668125)
_X_MINUS_TANH_SWITCH = 0.25


def x_minus_tanh(x):
  """``x - tanh(x)`` to full relative precision, also for small |x|.

  The difference cancels catastrophically near 0 (it is ``x^3/3 + O(x^5)``); below
  ``|x| = 0.25`` the Taylor series (11 terms, truncation < 1e-17 relative) is used, above it
  the direct difference (about 3/x^2 <= 48 ulp of cancellation).
  """
  x = tf.convert_to_tensor(x)
  small = tf.abs(x) < _X_MINUS_TANH_SWITCH
  xs = tf.where(small, x, tf.zeros_like(x))
  x2 = tf.square(xs)
  poly = tf.zeros_like(x)
  for coef in reversed(_X_MINUS_TANH_SERIES):
    poly = poly * x2 + coef
  return tf.where(small, poly * x2 * xs, x - tf.tanh(x))


def log1mexp(x):
  """log(1 - exp(x)) for x <= 0, accurate near 0 and for very negative x (Maechler 2012).

  Kept instead of ``tfp.math.log1mexp`` (which computes ``log(1 - exp(-|x|))``, the same values
  to <= 1.3 eps): TFP's gradient is NaN wherever ``exp(x)`` rounds to 1 (``|x| < 6e-8`` in
  float32, ``< 1.1e-16`` in float64; 1983 of 3000 float32 test points down to ``-1e-30``),
  because its unused ``tf.where`` branch is ``log1p(-1) = -inf`` there. Both branches here get
  arguments in their safe range, so the gradient is finite and within 2 eps everywhere
  (``benchmarks/bench_special.py``).
  """
  x = tf.convert_to_tensor(x)
  log_half = tf.constant(-np.log(2.), x.dtype)
  tiny = tf.constant(np.finfo(x.dtype.as_numpy_dtype).tiny, x.dtype)
  # Both branches are evaluated by tf.where: keep each one's argument in its safe range.
  near_zero = tf.math.log(-tf.math.expm1(tf.minimum(x, -tiny)))
  far = tf.math.log1p(-tf.exp(tf.minimum(x, log_half)))
  return tf.where(x > log_half, near_zero, far)


# --- Log-space CDFs and the inverse normal CDF (Gaussianization flows) ---------------------
#
# A logistic mixture F(x) = sum_k w_k sigmoid((x - mu_k) / s_k) is evaluated through
# log F, log(1 - F) and log f as log-sum-exps of log-sigmoids, so none of them saturates: far in
# a tail log F ~ -|x| / s stays finite where F itself rounds to 0 or 1. The inverse normal CDF
# is then taken from whichever of log F, log(1 - F) is smaller (Phi^-1(p) = -Phi^-1(1 - p)), so
# both tails keep full relative precision.

_NDTRI_ASYMPTOTIC_BELOW = -30.  # log p below which the tail expansion seeds Newton
_NDTRI_NEWTON_STEPS = 2

# The scaled complementary error function exp(t^2) erfc(t): TFP's (Chebyshev expansion of
# Shepherd & Laframboise 1981). benchmarks/bench_special.py against mpmath: values within
# 2.3 eps (float32) / 3.5 eps (float64) for t in [0, 1e30], where the hand-written
# exp(t^2) erfc(t) + asymptotic series it replaced lost up to 17 / 249 eps below its switch
# points (t = 9 / 26). Its gradient 2 t erfcx(t) - 2 / sqrt(pi) cancels for large t (relative
# error ~ t^2 eps: useless above t ~ 1e3 in float32, 1e4 in float64); log_ndtr and
# ndtri_of_log below stay within 5.1 eps (values) with it.
erfcx = tfp.math.erfcx


def log_ndtr(x):
  """log Phi(x), the log standard normal CDF, to relative precision for every finite x.

  Left of 0 it is ``log(erfcx(-x / sqrt 2) / 2) - x^2 / 2`` (no underflow, so
  ``log_ndtr(-1e4)`` is exact); right of 0 ``log1p(-erfc(x / sqrt 2) / 2)``. Both branches
  get clamped arguments, so gradients are finite everywhere (``phi(x) / Phi(x)``).

  Kept because TFP's counterparts lose the right tail, where ``log Phi(x) ~ -Phi(-x)`` is tiny
  (``benchmarks/bench_special.py``, x in [-1e5, 1e5], error in eps relative to
  ``max(|f|, |x f'|)``): ours <= 3.9 eps (float32) / 5.1 eps (float64); ``tfd.Normal(0, 1).log_cdf``
  (TFP's ``log_ndtr``, not public in ``tfp.math``) 8.9e3 eps (float32) and 1.1e12 eps
  (float64, near x = 7.8), and its gradient 3.6e5 eps at its series switch x = -20 (float64);
  ``tfp.math.logerfc(-x / sqrt 2) - log 2`` 2.7e5 / 6.4e13 eps.
  """
  x = tf.convert_to_tensor(x)
  zero = tf.zeros([], x.dtype)
  inv_sqrt2 = tf.constant(1. / np.sqrt(2.), x.dtype)
  neg = tf.minimum(x, zero)
  lower = (tf.math.log(erfcx(-neg * inv_sqrt2)) - tf.constant(np.log(2.), x.dtype)
           - 0.5 * tf.square(neg))
  upper = tf.math.log1p(-0.5 * tf.math.erfc(tf.maximum(x, zero) * inv_sqrt2))
  return tf.where(x < zero, lower, upper)


def logistic_mixture_log_cdf(x, loc, scale, log_weights):
  """log F, log(1 - F) and log f of a per-dimension mixture of logistics, in log space.

  Args:
    x: tensor ``[..., D]``.
    loc, scale, log_weights: tensors ``[D, K]`` (anchors, positive bandwidths, normalised
      log-weights with ``logsumexp(log_weights, -1) == 0``).

  Returns:
    ``(log_cdf, log_sf, log_pdf)``, each shaped like ``x``; finite for every finite ``x``
    (far in a tail they grow linearly in ``|x|``), with finite gradients.

  Kept instead of ``tfd.MixtureSameFamily(Categorical, Logistic)`` (``log_cdf``, ``log_prob``
  and, as it has no log survival function, ``log_cdf`` of the mirrored mixture at ``-x``):
  ``benchmarks/bench_special.py`` finds the same values (<= 2.4 eps) but a 2.5-3.5x larger
  gradient error of ``log f`` for TFP's (539 vs 212 eps in float32, 2150 vs 610 in float64),
  and TFP's three mixtures take 1.19x / 1.17x as long as the three outputs from one ``z`` here
  for value and gradient (float32 / float64, 2^20 points x 8 components, loaded machine).
  """
  z = (x[..., None] - loc) / scale
  lower = log_sigmoid(z)
  upper = log_sigmoid(-z)
  log_cdf = tf.reduce_logsumexp(log_weights + lower, axis=-1)
  log_sf = tf.reduce_logsumexp(log_weights + upper, axis=-1)
  log_pdf = tf.reduce_logsumexp(log_weights + lower + upper - tf.math.log(scale), axis=-1)
  return log_cdf, log_sf, log_pdf


def _ndtri_lower_value(log_p):
  """Phi^-1(exp(log_p)) for log_p <= log(1/2), without gradients (see ``ndtri_of_log``)."""
  dtype = log_p.dtype
  log_p = tf.minimum(log_p, tf.constant(-np.log(2.), dtype))
  asymptotic = log_p < _NDTRI_ASYMPTOTIC_BELOW
  # Moderate tail: ndtri of the probability itself (exp(log_p) >= 1e-13 is representable).
  direct = tf.math.ndtri(tf.exp(tf.maximum(log_p, _NDTRI_ASYMPTOTIC_BELOW)))
  # Far tail: log Phi(x) ~ -x^2/2 - log(-x) - log(2 pi)/2, so x^2 = u solves u = t - log u
  # with t = -2 log p - log(2 pi) (plus the next terms of the series, below).
  t = -2. * tf.minimum(log_p, _NDTRI_ASYMPTOTIC_BELOW) - np.log(2. * np.pi)
  u = t - tf.math.log(t)
  for _ in range(3):  # with two series terms: seeds Newton to ~1e-5 relative
    u = t - tf.math.log(u) + 2. * tf.math.log1p(-1. / u + 3. / tf.square(u))
  x = tf.where(asymptotic, -tf.sqrt(u), direct)
  # Newton on g(x) = log Phi(x) - log p. g is increasing and concave, so from either side the
  # iterates end at or below the root and then increase monotonically to it. For x <= 0 one
  # erfcx gives both log Phi(x) = log(erfcx(-x / sqrt 2) / 2) - x^2 / 2 and the step's
  # Phi(x) / phi(x) = erfcx(-x / sqrt 2) sqrt(pi / 2), without cancellation.
  for _ in range(_NDTRI_NEWTON_STEPS):
    log_cdf, ratio = _log_ndtr_and_mills(x)
    x = tf.minimum(x - (log_cdf - log_p) * ratio, tf.zeros([], dtype))
  return x


def _log_ndtr_and_mills(x):
  """``(log Phi(x), Phi(x) / phi(x))`` for ``x <= 0`` from one ``erfcx``."""
  dtype = x.dtype
  e = erfcx(-x * tf.constant(1. / np.sqrt(2.), dtype))
  log_cdf = tf.math.log(e) - tf.constant(np.log(2.), dtype) - 0.5 * tf.square(x)
  return log_cdf, e * tf.constant(np.sqrt(0.5 * np.pi), dtype)


def ndtri_of_log(log_p, name="ndtri_of_log"):
  """The standard normal quantile ``Phi^-1(exp(log_p))`` for ``log_p <= log(1/2)``.

  Accurate (relative precision of the dtype) from ``log_p = log(1/2)`` down to the most negative
  finite ``log_p`` whose quantile is representable (about ``-1e37`` in float32): moderate tails
  seed with ``tf.math.ndtri``, far tails (``log_p < -30``) with the asymptotic expansion of
  ``log Phi``; then 2 Newton steps on ``log Phi(x) = log_p``. Gradient (implicit function
  theorem): ``d x / d log_p = Phi(x) / phi(x)``, finite everywhere and computed in closed
  form. Inputs above ``log(1/2)`` are clamped to it.

  No TensorFlow/TFP function takes ``log p``: ``tf.math.ndtri(exp(log_p))`` is as accurate
  (<= 1.8 eps) and 5x cheaper while ``exp(log_p)`` is a normal number, but non-finite below
  ``log_p = -87`` (float32) / ``-708`` (float64); this one stays within 2.9 eps (float32) /
  4.5 eps (float64) down to ``log_p = -1e30`` (``benchmarks/bench_special.py``).
  """
  with tf.name_scope(name):
    log_p = tf.convert_to_tensor(log_p)
    return _ndtri_of_log(tf.minimum(log_p, tf.constant(-np.log(2.), log_p.dtype)))


@tf.custom_gradient
def _ndtri_of_log(log_p):
  x = _ndtri_lower_value(log_p)

  def grad(dx):
    return dx * _log_ndtr_and_mills(x)[1]

  return x, grad


def ndtri_from_log_tails(log_cdf, log_sf, name="ndtri_from_log_tails"):
  """``Phi^-1(p)`` from ``log p`` and ``log(1 - p)``, each tail from its own log-probability.

  For ``p < 1/2`` the quantile is ``ndtri_of_log(log p)``; otherwise it is
  ``-ndtri_of_log(log(1 - p))``. Only the smaller log-probability is used, so a point whose
  ``p`` rounds to 1 still gets its exact (large, positive) quantile.
  """
  with tf.name_scope(name):
    lower_tail = log_cdf <= log_sf
    z = ndtri_of_log(tf.minimum(log_cdf, log_sf))
    return tf.where(lower_tail, z, -z)


def log_normal_pdf(x):
  """log of the standard normal density: ``tfd.Normal(0, 1).log_prob(x)`` in x's dtype."""
  x = tf.convert_to_tensor(x)
  return tfp.distributions.Normal(tf.zeros([], x.dtype), tf.ones([], x.dtype)).log_prob(x)


# --- Fixed-point iteration with implicit (adjoint) gradients (masked convolutions) ----------
#
# ``fixed_point(update_fn, initial, args)`` iterates ``x <- update_fn(x, *args)`` until the step
# is below tolerance. The iteration runs without gradients; the solution then carries the
# gradients of the implicit function theorem for the fixed-point equation ``x = g(x, args)``:
#
#     dx = (I - dg/dx)^-1 (dg/dargs dargs + dg/dtheta dtheta),
#
# so a backward pass with upstream gradient ``v`` solves the adjoint equation
# ``u = v + (dg/dx)^T u`` by the same fixed-point iteration (one vector-Jacobian product of
# ``g`` per step) and returns ``u^T dg/dargs`` and ``u^T dg/dtheta`` for the variables ``theta``
# that ``update_fn`` reads. The adjoint iteration converges whenever the forward iteration
# converges linearly (both contract with the spectral radius of ``dg/dx`` at the solution).
#
# Stopping rule (per element, "converged" means as close as the working dtype allows):
#
# * the step meets the tolerance: ``|x_{k+1} - x_k| <= tol (1 + |x_{k+1}|)`` with ``tol`` never
#   below 4 machine epsilons; or
# * the iteration has reached its rounding floor: the step is within
#   ``sqrt(eps) (1 + |x|)``, its smallest value has not halved for ``PLATEAU_ITERATIONS``
#   updates, and it went up at least twice meanwhile (a converging iteration, even a slow
#   linear one, shrinks its step at every update; rounding noise goes up and down). A
#   contraction whose map is evaluated in floating point stops improving at a step of about
#   ``eps * (size of the terms of g) * (conditioning)``; with large terms (a masked convolution
#   with large weights, whose map adds and cancels big convolutions) that floor lies far above
#   ``eps |x|``, and a pure tolerance test would run to the iteration cap and report failure
#   for an answer as good as the dtype gives; or
# * ``exact_after`` updates were applied, for iterations known to be exact after that many
#   (nilpotent iteration matrices: the Jacobi iteration of a triangular system).
#
# Elements that stopped otherwise (the cap, a non-finite iterate: the loop stops at once) are
# reported: an ``InvalidArgumentError`` with ``validate_args``, else a ``FixedPointWarning``
# (eagerly; a message on stderr inside ``tf.function``), naming the solve, the iterations and
# the largest step. XLA (``jit_compile=True``) can neither assert nor print: read ``converged``.

__all__ += ["FixedPointResult", "fixed_point", "DEFAULT_FIXED_POINT_ITERATIONS",
            "FixedPointWarning", "PLATEAU_ITERATIONS"]

FixedPointResult = collections.namedtuple(
    "FixedPointResult", ["solution", "num_iterations", "converged", "residual"])
FixedPointResult.__doc__ = """Result of ``fixed_point``.

Fields:
  solution: the fixed point, with implicit (adjoint) gradients attached.
  num_iterations: int32 scalar, updates applied (the loop runs until every element is done).
  converged: bool tensor shaped like ``solution``: the element met the tolerance, reached its
    rounding floor, or the iteration is exact after the updates applied (see ``fixed_point``).
  residual: ``|update_fn(x) - x|`` of the last step, shaped like ``solution``.
"""

DEFAULT_FIXED_POINT_ITERATIONS = 500
PLATEAU_ITERATIONS = 8
"""Updates without halving the smallest step (two of them rising) that mark a rounding floor."""


class FixedPointWarning(ConvergenceWarning):
  """A fixed-point solve stopped (iteration cap, non-finite iterate) before converging."""


def _attainable(tolerance, dtype):
  eps = float(np.finfo(dtype.as_numpy_dtype).eps)
  tol = tolerance if tolerance is not None else default_tolerance(dtype)
  if not tol > 0:
    raise ValueError(f"tolerance must be positive, got {tolerance}.")
  return max(float(tol), 4. * eps), float(np.sqrt(eps))


def _fixed_point_loop(update_fn, initial, tolerance, band, max_iterations, exact_after=None):
  """Iterates ``x <- update_fn(x)`` under the stopping rule above.

  Returns ``(x, iterations, converged, last_step)``.
  """
  dtype = initial.dtype
  tol, band = tf.constant(tolerance, dtype), tf.constant(band, dtype)

  def done(new, step, stall, rises):
    scale = 1. + tf.abs(new)
    plateau = (step <= band * scale) & (stall >= PLATEAU_ITERATIONS) & (rises >= 2)
    return (step <= tol * scale) | plateau

  def cond(k, x, finished, step, best, stall, rises):
    return tf.logical_and(k < max_iterations, tf.logical_not(finished))

  def body(k, x, finished, previous, best, stall, rises):
    new = update_fn(x)
    if isinstance(new, (tuple, list)):  # (x_next, estimate of the distance to the solution)
      new, step = new
    else:
      step = tf.abs(new - x)
    halved = step < 0.5 * best
    best = tf.where(halved, step, best)
    zero = tf.zeros_like(stall)
    stall = tf.where(halved, zero, stall + 1)
    rises = tf.where(halved, zero, rises + tf.cast(step > previous, tf.int32))
    k = k + 1
    finished = tf.reduce_all(done(new, step, stall, rises))
    if exact_after is not None:
      finished = finished | (k >= exact_after)
    finished = finished | tf.logical_not(tf.reduce_all(tf.math.is_finite(new)))
    return k, new, finished, step, best, stall, rises

  inf = tf.fill(tf.shape(initial), tf.constant(np.inf, dtype))
  zeros = tf.zeros(tf.shape(initial), tf.int32)
  k, x, _, step, _, stall, rises = tf.while_loop(
      cond, body, (tf.constant(0, tf.int32), initial, tf.constant(False), inf, inf, zeros,
                   zeros),
      maximum_iterations=max_iterations)
  converged = done(x, step, stall, rises) & tf.math.is_finite(x)
  if exact_after is not None:
    converged = converged | ((k >= exact_after) & tf.math.is_finite(x))
  return x, k, converged, step


def _report(converged, num_iterations, step, name, validate_args):
  """Control dependencies that report unconverged elements (see the section comment)."""
  if core.in_xla_context():
    return []
  failed = tf.logical_not(converged)
  num_failed = tf.reduce_sum(tf.cast(failed, tf.int32))
  finite = tf.math.is_finite(step)
  worst = tf.reduce_max(tf.where(failed & finite, step, tf.zeros_like(step)))
  num_nonfinite = tf.reduce_sum(tf.cast(failed & ~finite, tf.int32))
  advice = ("increase max_iterations, or check the layer's weights and input (a preconditioned "
            "fixed point can diverge for large weights)")
  if tf.executing_eagerly():
    if int(num_failed):
      diverged = (f", {int(num_nonfinite)} diverged to inf/NaN" if int(num_nonfinite) else "")
      text = (f"{name}: {int(num_failed)} of {int(tf.size(failed))} elements did not converge "
              f"in {int(num_iterations)} iterations (largest finite last step "
              f"{float(worst):.3g}{diverged}); {advice}.")
      if validate_args:
        raise tf.errors.InvalidArgumentError(None, None, text)
      core.warn(text, FixedPointWarning)
    return []
  ok = tf.equal(num_failed, 0)
  message = f"{name} did not converge; {advice}."
  if validate_args:
    return [tf.debugging.Assert(ok, [message, "failed elements:", num_failed, "iterations:",
                                     num_iterations, "largest finite last step:", worst,
                                     "diverged to inf/NaN:", num_nonfinite])]

  def report():
    with tf.control_dependencies([tf.print(
        "WARNING:", message, "failed elements:", num_failed, "iterations:", num_iterations,
        "largest finite last step:", worst, "diverged to inf/NaN:", num_nonfinite,
        output_stream=sys.stderr)]):
      return tf.identity(ok)

  return [tf.cond(ok, lambda: tf.identity(ok), report)]


def fixed_point(update_fn, initial, args=(), *, tolerance=None,
                max_iterations=DEFAULT_FIXED_POINT_ITERATIONS, exact_after=None,
                validate_args=False, report=True, name="fixed_point"):
  """Solves ``x = update_fn(x, *args)`` by iteration, with implicit-function gradients.

  Args:
    update_fn: callable ``(x, *args) -> x_next`` (same shape and dtype as ``x``); a
      contraction near the solution. It may instead return ``(x_next, error)``, ``error`` an
      element-wise estimate of ``|x_next - x*|`` that the stopping rule then uses in place
      of the step ``|x_next - x|`` (for iterations whose steps understate the error, e.g. a
      contraction with a factor close to 1). It may close over ``tf.Variable``s: their gradients
      through the solution are correct (adjoint method, see the section comment). The
      forward iterations run with gradient recording paused, so ``update_fn`` must not need
      a ``tf.GradientTape`` of its own (compute derivatives it uses in closed form).
    initial: starting point ``x_0`` (no gradients flow into it).
    args: tensors passed to ``update_fn`` that gradients flow to (e.g. the target of an
      equation ``F(x) = z`` written as ``x <- x - (F(x) - z) / P``).
    tolerance: an element is done once ``|x_{k+1} - x_k| <= tolerance * (1 + |x_{k+1}|)``
      (``default_tolerance(dtype)`` if None: 1e-6 float32, 1e-12 float64; never below 4
      machine epsilons), or once it has reached its rounding floor (see the section comment).
      The adjoint iteration uses the same rule.
    max_iterations: iteration cap of the forward and of the adjoint iteration.
    exact_after: for iterations that are exact after this many updates (nilpotent iteration
      matrices): reaching it counts as converged.
    validate_args: raise (``InvalidArgumentError``) if an element did not converge, in the
      forward solve and in the backward (adjoint) solve; otherwise such an element is reported
      by a ``FixedPointWarning`` (eagerly) or a message on stderr (``tf.function``). XLA
      cannot report at run time: check ``converged`` there.
    report: False leaves non-convergence of the forward solve unreported (for callers that
      try another method next and report that one).
    name: name of the solve in messages, and name scope.

  Returns:
    ``FixedPointResult(solution, num_iterations, converged, residual)``.
  """
  with tf.name_scope(name.replace(" ", "_").replace("(", "").replace(")", "")):
    initial = tf.convert_to_tensor(initial)
    dtype = initial.dtype
    args = [tf.convert_to_tensor(a) for a in args]
    try:
      tol, band = _attainable(tolerance, dtype)
    except ValueError as e:
      raise ValueError(f"{name}: {e}") from None
    if int(max_iterations) < 1:
      raise ValueError(f"{name}: max_iterations must be >= 1, got {max_iterations}.")
    max_iterations = int(max_iterations)
    exact_after = None if exact_after is None else int(exact_after)
    frozen = [tf.stop_gradient(a) for a in args]
    # No tape records the iterations (their gradients come from the adjoint below), so no
    # memory is spent on per-iteration activations even when a tape is watching.
    with core.stop_recording():
      x, k, converged, residual = _fixed_point_loop(
          lambda t: update_fn(t, *frozen), tf.stop_gradient(initial), tol, band,
          max_iterations, exact_after)
    deps = _report(converged, k, residual, name, validate_args) if report else []
    with tf.control_dependencies(deps):
      x = tf.identity(x)
    solution = _attach_adjoint_gradient(update_fn, x, args, (tol, band), max_iterations,
                                        exact_after, validate_args, name)
    return FixedPointResult(solution, k, converged, residual)


def _attach_adjoint_gradient(update_fn, solution, args, tols, max_iterations, exact_after,
                             validate_args, name):
  """``solution`` (value unchanged) with fixed-point adjoint gradients to args and variables."""
  solution = tf.stop_gradient(solution)
  g_fn = update_fn

  def update_fn(x, *a):  # the map itself, without an error estimate
    out = g_fn(x, *a)
    return out[0] if isinstance(out, (tuple, list)) else out

  @tf.custom_gradient
  def attach(*args_in):
    # Evaluating g once here lets custom_gradient see (and hand to ``grad``) the variables
    # that update_fn reads; the value returned is the loop's solution itself.
    update_fn(solution, *args_in)

    def grad(upstream, variables=None):
      variables = list(variables or [])
      # One recorded evaluation of g at the solution; every adjoint step is a backward pass
      # of it (a vector-Jacobian product), without re-running g.
      with tf.GradientTape(persistent=True) as tape:
        tape.watch([solution] + list(args_in))
        g = update_fn(solution, *args_in)

      def adjoint_step(u):
        return upstream + tape.gradient(g, solution, output_gradients=u,
                                        unconnected_gradients="zero")

      u, k, converged, step = _fixed_point_loop(adjoint_step, upstream, *tols, max_iterations,
                                                exact_after)
      deps = _report(converged, k, step, f"{name} (adjoint)", validate_args)
      with tf.control_dependencies(deps):
        u = tf.identity(u)
      grads = tape.gradient(g, list(args_in) + variables, output_gradients=u,
                            unconnected_gradients="zero")
      del tape
      return grads[:len(args_in)], grads[len(args_in):]

    return tf.identity(solution), grad

  if not args:
    # custom_gradient needs a tensor input to attach to; a zero-sized dummy carries nothing.
    dummy = tf.zeros([0], solution.dtype)
    return _attach_adjoint_gradient(lambda x, _: update_fn(x), solution, [dummy], tols,
                                    max_iterations, exact_after, validate_args, name)
  return attach(*args)


# --- Bracketed monotone root finding (Gaussianization inverses) ----------------------------
# Newton steps from the bracket's midpoint, replaced by bisection whenever a step would leave
# the current bracket (or is not finite); the bracket shrinks every iteration around the sign
# change, so the method converges for every increasing objective and quadratically near a
# simple root. Written for XLA: every division is guarded, so no NaN can enter the loop state.

UNROLLED_ITERATIONS = 4


def _solver_inputs(target, bounds, position_tolerance):
  """(target, target without gradients, its shape, bounds broadcast to it without gradients,
  tolerance) for the root finders."""
  target = tf.convert_to_tensor(target)
  shape = tf.shape(target)
  bounds = [tf.stop_gradient(tf.broadcast_to(tf.convert_to_tensor(b, target.dtype), shape))
            for b in bounds]
  tol = core.attainable_tolerance(position_tolerance, target.dtype)
  return target, tf.stop_gradient(target), shape, bounds, tol


def monotone_root(objective_fn, target, low, high, *, position_tolerance=None,
                  max_iterations=DEFAULT_MAX_ITERATIONS, validate_args=False,
                  name="monotone_root"):
  """Solves ``objective_fn(x) == target`` element-wise for increasing ``objective_fn``.

  Needs a bracket ``[low, high]`` with ``objective_fn(low) <= target <= objective_fn(high)``;
  the element-wise objective may close over variables (gradients flow to them through the
  implicit step, see the module docstring). Safeguarded Newton: each step is Newton's (the
  derivative from autodiff of ``objective_fn``) when it stays inside the shrinking bracket,
  else bisection, so it converges for any increasing objective; a Newton step longer than half
  the step before last is replaced by bisection too (Numerical Recipes' ``rtsafe`` rule), so
  Newton cannot bounce between the ends of a slowly shrinking bracket. An element stops when
  its Newton/bisection step or its bracket is below ``position_tolerance * (1 + |x|)``
  (``default_tolerance(dtype)`` if None, never below 4 ulp: ``core.attainable_tolerance``) or
  its residual is at the rounding floor of the target (``4 eps |target|``, 0 included); a
  Newton step below that tolerance is accepted even where rounding puts it on the bracket's
  edge. ``converged`` is False where ``max_iterations`` was reached first, and that is
  reported (``check_convergence``: a warning, or an error with ``validate_args``).

  Returns:
    ``RootResult`` (root with implicit gradients, per-element iterations, converged, residual).
  """
  with tf.name_scope(name):
    target, sg_target, shape, (low, high), tol = _solver_inputs(target, (low, high),
                                                                position_tolerance)
    dtype = target.dtype

    def residual_and_slope(x):
      value, slope = elementwise_derivative(objective_fn, x)
      return tf.stop_gradient(value) - sg_target, tf.stop_gradient(slope)

    eps = tf.constant(np.finfo(dtype.as_numpy_dtype).eps, dtype)

    def body(lo, hi, x, iters, done, last_step, step_before):
      r, slope = residual_and_slope(x)
      new_lo = tf.where(r < 0., x, lo)
      new_hi = tf.where(r > 0., x, hi)
      newton = x - r / tf.where(slope > 0., slope, tf.ones_like(slope))
      valid = (slope > 0.) & tf.math.is_finite(newton)
      scale = tol * (1. + tf.abs(x))
      # A Newton step below the tolerance is converged even where rounding puts it on (or an
      # ulp past) the bracket's edge; rejecting it would restart from a bisection step.
      small = valid & (tf.abs(newton - x) <= scale)
      # Newton is taken inside the bracket only while it converges: a step longer than half
      # the step before last (Newton creeping along a steep, nearly flat-then-steep objective)
      # becomes a bisection step, so the bracket at least halves every two iterations.
      fast = tf.abs(newton - x) <= 0.5 * step_before
      inside = valid & ((((newton > new_lo) & (newton < new_hi)) & fast) | small)
      x_new = tf.where(inside, newton, 0.5 * (new_lo + new_hi))
      # Converged: the step or the bracket is within the tolerance, or the residual is at the
      # rounding floor of the target (4 eps |target|; exactly 0 included).
      at_floor = tf.abs(r) <= 4. * eps * tf.abs(sg_target)
      x_new = tf.where(at_floor, x, x_new)
      stop = small | (tf.abs(x_new - x) <= scale) | (new_hi - new_lo <= scale) | at_floor
      active = ~done & (iters < max_iterations)
      return (tf.where(active, new_lo, lo), tf.where(active, new_hi, hi),
              tf.where(active, x_new, x), tf.where(active, iters + 1, iters),
              done | (active & stop), tf.where(active, tf.abs(x_new - x), last_step),
              tf.where(active, last_step, step_before))

    def cond(lo, hi, x, iters, done, last_step, step_before):
      return tf.reduce_any(~done & (iters < max_iterations))

    x0 = 0.5 * (low + high)
    width = high - low
    # Non-finite targets (NaN or inf inputs) are not iterated: their root is NaN.
    finite = tf.math.is_finite(sg_target)
    state = (low, high, x0, tf.zeros(shape, tf.int32), ~finite, width, width)
    # The first steps are unrolled: most elements converge in 3-4 Newton steps, and XLA fuses
    # unrolled element-wise steps into one kernel; the loop then finishes the stragglers.
    for _ in range(min(UNROLLED_ITERATIONS, max_iterations)):
      state = body(*state)
    _, _, root, num_iterations, converged, _, _ = tf.while_loop(cond, body, state)
    converged = converged & finite
    deps = []
    if validate_args:
      deps.append(tf.debugging.assert_less_equal(
          residual_and_slope(low)[0], tf.zeros([], dtype),
          message=f"{name}: invalid bracket, f(low) > target."))
      deps.append(tf.debugging.assert_greater_equal(
          residual_and_slope(high)[0], tf.zeros([], dtype),
          message=f"{name}: invalid bracket, f(high) < target."))
    with tf.control_dependencies(deps):
      root, residual = _implicit_step(lambda x: elementwise_derivative(objective_fn, x),
                                      root, target)
    with tf.control_dependencies(check_convergence(converged, num_iterations, residual, name,
                                                   validate_args, where=finite)):
      root = tf.identity(root)
    return RootResult(root, num_iterations, converged, residual)


# --- One-sided Newton (planar-tanh inverse) -------------------------------------------------
# Fourier's condition: if f is increasing and, between the root and the start x0, convex with
# x0 right of the root (or concave with x0 left of it) -- i.e. (f(x0) - t) f'' > 0 there --
# every tangent lies on the far side of the graph, so Newton's iterates move monotonically
# toward the root and never overshoot it. The bracket [x_k, end] then shrinks with every step
# without bisection and without bracket state, which makes each iteration a handful of fused
# element-wise operations (a few times cheaper than ``monotone_root``'s safeguarded step).

ONE_SIDED_UNROLLED_ITERATIONS = 2


def one_sided_newton(value_and_slope_fn, target, start, end, *, position_tolerance=None,
                     max_iterations=DEFAULT_MAX_ITERATIONS, validate_args=False,
                     name="one_sided_newton"):
  """Solves ``f(x) == target`` element-wise by Newton's method from a one-sided start.

  Requirements (the caller's, e.g. from bounds on the root): ``f`` is increasing on the
  bracket spanned by ``start`` and ``end``, the root lies in it, and Fourier's condition holds
  at ``start`` (``f`` convex there with ``f(start) >= target``, or concave with
  ``f(start) <= target``). Then the iterates converge monotonically, quadratically near a
  simple root. Every step is clipped into the initial bracket (rounding cannot leave it). With
  ``tol = position_tolerance * (1 + |x|)`` (``default_tolerance(dtype)`` if None, never below
  4 ulp: ``core.attainable_tolerance``), an element stops once its *unclipped* Newton step
  ``δ = (f(x) - target) / f'(x)`` satisfies ``|δ| <= tol``, once Newton's error estimate
  after the step, ``|f''| δ² / (2 f')``, is below ``tol / 10`` (this saves the step that would
  only confirm convergence), or once its residual is at the rounding floor of the target
  (``4 eps |target|``). A clipped step never counts as convergence, so a violated requirement
  shows as ``converged == False`` (reported by ``check_convergence``: a warning, or an error
  with ``validate_args``) instead of a silent wrong root. The first
  ``ONE_SIDED_UNROLLED_ITERATIONS`` steps are unrolled (XLA fuses them); a ``tf.while_loop``
  runs the rest, at most ``max_iterations`` in all. One more Newton step, differentiable,
  attaches the implicit-function gradients (module docstring).

  Args:
    value_and_slope_fn: element-wise ``x -> (f(x), f'(x), f''(x))``; ``f`` may close over
      variables (its value carries their gradients into the implicit step), the derivatives
      are used without gradients.
    target, start, end: broadcastable tensors (gradients flow from ``target`` only).
    position_tolerance, max_iterations, validate_args, name: as in ``monotone_root``.

  Returns:
    ``RootResult`` (root with implicit gradients, per-element iterations, converged, residual).
  """
  with tf.name_scope(name):
    target, sg_target, shape, (start, end), tol = _solver_inputs(target, (start, end),
                                                                 position_tolerance)
    low, high = tf.minimum(start, end), tf.maximum(start, end)
    max_iterations = int(max_iterations)
    if max_iterations < 1:
      raise ValueError(f"{name}: max_iterations must be >= 1, got {max_iterations}.")
    floor = 4. * tf.constant(np.finfo(target.dtype.as_numpy_dtype).eps, target.dtype) * tf.abs(
        sg_target)

    def body(x, iters, done):
      value, slope, curvature = value_and_slope_fn(x)
      r = tf.stop_gradient(value) - sg_target
      slope = tf.stop_gradient(slope)
      safe_slope = tf.where(slope > 0., slope, tf.ones_like(slope))
      step = r / safe_slope
      valid = (slope > 0.) & tf.math.is_finite(step)
      x_new = tf.clip_by_value(x - tf.where(valid, step, tf.zeros_like(step)), low, high)
      scale = tol * (1. + tf.abs(x))
      # Newton's error after this step is about |f''| / (2 f') step^2.
      predicted = 0.5 * tf.abs(curvature) / safe_slope * tf.square(step)
      at_floor = tf.abs(r) <= floor  # f(x) == target up to the rounding of the target
      x_new = tf.where(at_floor, x, x_new)
      stop = (valid & ((tf.abs(step) <= scale) | (predicted <= 0.1 * scale))) | at_floor
      return (tf.where(done, x, x_new), tf.where(done, iters, iters + 1), done | stop)

    # Non-finite targets (NaN or inf inputs) are not iterated: their root is NaN.
    finite = tf.math.is_finite(sg_target)
    state = (start, tf.zeros(shape, tf.int32), ~finite)
    unrolled = min(ONE_SIDED_UNROLLED_ITERATIONS, max_iterations)
    for _ in range(unrolled):
      state = body(*state)
    if max_iterations > unrolled:
      state = tf.while_loop(lambda x, iters, done: tf.reduce_any(~done), body, state,
                            maximum_iterations=max_iterations - unrolled)
    root, num_iterations, converged = state
    converged = converged & finite
    root, residual = _implicit_step(lambda x: value_and_slope_fn(x)[:2], root, target)
    with tf.control_dependencies(check_convergence(converged, num_iterations, residual, name,
                                                   validate_args, where=finite)):
      root = tf.identity(root)
    return RootResult(root, num_iterations, converged, residual)
