"""Tests of the shared solvers and special functions in tfp_flows.numerics."""

from decimal import Decimal, getcontext

import numpy as np
import pytest
import tensorflow as tf

import tfp_flows as tff
from tfp_flows import numerics
from tfp_flows.bijectors.planar import Planar


# --- monotone_root -------------------------------------------------------------------------

def _cubic(theta):
  # Increasing for theta > 0: f(x) = x^3 + theta * x.
  return lambda x: x ** 3 + theta * x


@pytest.mark.parametrize("dtype,tol", [(tf.float32, 1e-5), (tf.float64, 1e-11)])
def test_monotone_root_accuracy(dtype, tol):
  theta = tf.constant(0.7, dtype)
  target = tf.constant(np.linspace(-30., 30., 101), dtype)
  res = numerics.monotone_root(_cubic(theta), target, -10., 10.)
  x = res.root.numpy()
  np.testing.assert_allclose(x ** 3 + 0.7 * x, target.numpy(), rtol=tol, atol=tol * 30)
  assert res.converged.numpy().all()
  assert res.num_iterations.shape == target.shape


def test_monotone_root_implicit_gradients_match_finite_differences():
  theta = tf.Variable(0.7, dtype=tf.float64)
  target = tf.constant([-3., 0.5, 2., 9.], tf.float64)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(target)
    root = numerics.monotone_root(_cubic(theta), target, -10., 10.).root
    loss = tf.reduce_sum(root ** 2)
  g_theta = tape.gradient(loss, theta).numpy()
  g_target = tape.gradient(loss, target).numpy()

  def loss_at(th, t):
    return float(tf.reduce_sum(numerics.monotone_root(
        _cubic(tf.constant(th, tf.float64)), tf.constant(t, tf.float64), -10., 10.).root ** 2))

  eps = 1e-6
  fd_theta = (loss_at(0.7 + eps, target.numpy()) - loss_at(0.7 - eps, target.numpy())) / (2 * eps)
  np.testing.assert_allclose(g_theta, fd_theta, rtol=1e-6)
  for i in range(4):
    e = np.zeros(4)
    e[i] = eps
    fd = (loss_at(0.7, target.numpy() + e) - loss_at(0.7, target.numpy() - e)) / (2 * eps)
    np.testing.assert_allclose(g_target[i], fd, rtol=1e-6)


def test_monotone_root_reports_non_convergence():
  target = tf.constant([0.3, 5.], tf.float64)
  res = numerics.monotone_root(_cubic(tf.constant(1., tf.float64)), target, -10., 10.,
                               max_iterations=2)
  assert not res.converged.numpy().all()
  with pytest.raises(tf.errors.InvalidArgumentError, match="did not converge"):
    numerics.monotone_root(_cubic(tf.constant(1., tf.float64)), target, -10., 10.,
                           max_iterations=2, validate_args=True)


def test_monotone_root_rejects_invalid_bracket():
  with pytest.raises(tf.errors.InvalidArgumentError, match="invalid bracket"):
    numerics.monotone_root(_cubic(tf.constant(1., tf.float64)),
                           tf.constant([500.], tf.float64), -1., 1., validate_args=True)


def test_monotone_root_under_xla():
  f = tf.function(lambda t: numerics.monotone_root(
      _cubic(tf.constant(0.5, tf.float32)), t, -10., 10.).root, jit_compile=True)
  t = tf.constant([-2., 0., 3.], tf.float32)
  x = f(t).numpy()
  np.testing.assert_allclose(x ** 3 + 0.5 * x, t.numpy(), atol=1e-4)


def test_default_tolerance_rejects_integers():
  with pytest.raises(TypeError, match="floating"):
    numerics.default_tolerance(tf.int32)


# --- special functions ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_log1mexp_accuracy(dtype):
  x = np.array([-1e-20, -1e-8, -1e-3, -0.5, -0.7, -1., -5., -40., -800.])
  got = numerics.log1mexp(tf.constant(x, dtype)).numpy()
  want = np.log(-np.expm1(x.astype(np.float64)))
  want = np.where(np.isfinite(want), want, 0.)  # exp(-800) underflows: log1p(-0) = 0
  rtol = 1e-5 if dtype == tf.float32 else 1e-12
  mask = x > -1e-10 if dtype == tf.float32 else np.zeros_like(x, bool)
  np.testing.assert_allclose(got[~mask], want[~mask], rtol=rtol, atol=rtol)
  assert np.all(np.isfinite(got))


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_log1mexp_gradient_is_finite_where_exp_rounds_to_one(dtype):
  """The reason log1mexp is not tfp.math.log1mexp: its gradient is NaN for |x| < eps."""
  x = np.array([-1e-30, -1e-20, -1e-12, -1e-7, -1e-3, -0.69, -0.7, -5., -40.])
  xt = tf.constant(x, dtype)
  with tf.GradientTape() as tape:
    tape.watch(xt)
    y = numerics.log1mexp(xt)
  grad = tape.gradient(y, xt).numpy()
  want = -1. / np.expm1(-x.astype(dtype.as_numpy_dtype).astype(np.float64))  # d/dx log(1 - e^x)
  np.testing.assert_allclose(grad, want, rtol=10 * np.finfo(dtype.as_numpy_dtype).eps)


def test_log_normal_pdf_matches_scipy_in_the_input_dtype():
  scipy_stats = pytest.importorskip("scipy.stats")
  x = np.array([-1e4, -3., 0., 0.5, 40.])
  for dtype in (tf.float32, tf.float64):
    got = numerics.log_normal_pdf(tf.constant(x, dtype))
    assert got.dtype == dtype
    np.testing.assert_allclose(got, scipy_stats.norm.logpdf(x), rtol=1e-6)


def test_log_sigmoid_is_finite_far_out():
  x = tf.constant([-1000., -40., 0., 40., 1000.], tf.float32)
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = numerics.log_sigmoid(x)
  g = tape.gradient(y, x)
  assert np.all(np.isfinite(y.numpy())) and np.all(np.isfinite(g.numpy()))
  np.testing.assert_allclose(y.numpy()[0], -1000., rtol=1e-6)


# --- fixed_point (masked convolutions) -----------------------------------------------------

def _triangular_system(n, seed):
  rng = np.random.default_rng(seed)
  a = np.tril(rng.normal(0., 1., (n, n)), -1) + np.diag(rng.uniform(0.5, 2., n))
  return a, rng.normal(0., 1., n)


def test_fixed_point_solves_triangular_system_in_at_most_n_steps():
  # Jacobi iteration x <- x - D^-1 (A x - b) on a triangular A: the error matrix I - D^-1 A is
  # nilpotent, so the iteration is exact after n steps (one more step confirms it).
  n = 7
  a, b = _triangular_system(n, 0)
  a_t, d = tf.constant(a), tf.constant(np.diag(a))
  res = numerics.fixed_point(lambda x, rhs: x - (tf.linalg.matvec(a_t, x) - rhs) / d,
                             tf.zeros([n], tf.float64), (tf.constant(b),))
  assert int(res.num_iterations) <= n + 1
  assert res.converged.numpy().all() and res.residual.shape == (n,)
  np.testing.assert_allclose(res.solution, np.linalg.solve(a, b), rtol=1e-12, atol=1e-12)


def _coupled_update(theta, a_t, d):
  # Root of F(x) = A x + theta * tanh(x) - z (triangular, increasing diagonal) by Newton-Jacobi.
  def update(x, z):
    f = tf.linalg.matvec(a_t, x) + theta * tf.tanh(x) - z
    return x - f / (d + theta * (1. - tf.tanh(x) ** 2))
  return update


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_fixed_point_gradients_match_finite_differences(mode):
  n = 5
  a, z0 = _triangular_system(n, 1)
  a_t, d = tf.constant(a), tf.constant(np.diag(a))
  theta = tf.Variable(0.8, dtype=tf.float64)
  w = np.random.default_rng(2).normal(size=n)

  def loss(z):
    x = numerics.fixed_point(_coupled_update(theta, a_t, d), tf.zeros([n], tf.float64), (z,),
                             validate_args=mode != "jit").solution
    return tf.reduce_sum(w * tf.sin(x))

  def value_and_grads(z):
    with tf.GradientTape() as tape:
      tape.watch(z)
      value = loss(z)
    return value, tape.gradient(value, [z, theta])

  fn = {"eager": value_and_grads, "function": tf.function(value_and_grads),
        "jit": tf.function(value_and_grads, jit_compile=True)}[mode]
  _, (g_z, g_theta) = fn(tf.constant(z0))
  eps = 1e-6
  for i in range(n):
    e = np.zeros(n)
    e[i] = eps
    fd = (float(loss(tf.constant(z0 + e))) - float(loss(tf.constant(z0 - e)))) / (2 * eps)
    assert float(g_z[i]) == pytest.approx(fd, rel=1e-6, abs=1e-10)
  theta.assign(0.8 + eps)
  up = float(loss(tf.constant(z0)))
  theta.assign(0.8 - eps)
  down = float(loss(tf.constant(z0)))
  theta.assign(0.8)
  assert float(g_theta) == pytest.approx((up - down) / (2 * eps), rel=1e-6)


def test_fixed_point_reports_and_raises_on_non_convergence():
  n = 6
  a, b = _triangular_system(n, 3)
  a_t, d = tf.constant(a), tf.constant(np.diag(a))
  update = lambda x, rhs: x - (tf.linalg.matvec(a_t, x) - rhs) / d
  res = numerics.fixed_point(update, tf.zeros([n], tf.float64), (tf.constant(b),),
                             max_iterations=2)
  assert int(res.num_iterations) == 2 and not res.converged.numpy().all()
  with pytest.raises(tf.errors.InvalidArgumentError, match="did not converge"):
    numerics.fixed_point(update, tf.zeros([n], tf.float64), (tf.constant(b),),
                         max_iterations=2, validate_args=True)
  with pytest.raises(ValueError, match="tolerance"):
    numerics.fixed_point(update, tf.zeros([n], tf.float64), (tf.constant(b),), tolerance=0.)
  with pytest.raises(ValueError, match="max_iterations"):
    numerics.fixed_point(update, tf.zeros([n], tf.float64), (tf.constant(b),),
                         max_iterations=0)


def test_fixed_point_without_args_still_differentiates_variables():
  theta = tf.Variable(0.5, dtype=tf.float64)
  with tf.GradientTape() as tape:
    x = numerics.fixed_point(lambda x: 0.5 * tf.cos(x) + theta, tf.zeros([], tf.float64)).solution
  # x = 0.5 cos x + theta  =>  dx/dtheta = 1 / (1 + 0.5 sin x)
  assert float(tape.gradient(x, theta)) == pytest.approx(1. / (1. + 0.5 * np.sin(float(x))),
                                                         rel=1e-9)


# --- log-space CDFs and the inverse normal CDF (Gaussianization) ----------------------------

def _scipy_special():
  return pytest.importorskip("scipy.special")  # skips only the tests that need scipy


@pytest.mark.parametrize("dtype,tol", [(tf.float32, 2e-5), (tf.float64, 1e-12)])
def test_erfcx_matches_scipy(dtype, tol):
  scipy_special = _scipy_special()
  t = np.concatenate([np.linspace(0., 30., 601), np.logspace(1.5, 15., 50)])
  got = numerics.erfcx(tf.constant(t, dtype)).numpy()
  np.testing.assert_allclose(got, scipy_special.erfcx(t.astype(dtype.as_numpy_dtype)), rtol=tol)


@pytest.mark.parametrize("dtype,tol", [(tf.float32, 2e-6), (tf.float64, 1e-13)])
def test_log_ndtr_matches_scipy_over_the_whole_range(dtype, tol):
  scipy_special = _scipy_special()
  x = np.concatenate([-np.logspace(-3., 6., 200), np.linspace(-40., 8., 481)])
  x = x.astype(dtype.as_numpy_dtype)  # compare at the exactly representable inputs
  expected = scipy_special.log_ndtr(x.astype(np.float64))
  got = numerics.log_ndtr(tf.constant(x)).numpy()
  np.testing.assert_allclose(got, expected, rtol=tol, atol=1e-6 * tol)
  # Gradient phi(x) / Phi(x), finite everywhere (reference from erfcx, no cancellation).
  xt = tf.constant(x)
  with tf.GradientTape() as tape:
    tape.watch(xt)
    y = numerics.log_ndtr(xt)
  grad = tape.gradient(y, xt).numpy()
  ref = 1. / (scipy_special.erfcx(-x.astype(np.float64) / np.sqrt(2.)) * np.sqrt(np.pi / 2.))
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(grad, ref, rtol=100 * tol)


def _ndtri_reference(log_p):
  """Phi^-1(exp(log_p)) by bisection on scipy's log_ndtr (independent of our code)."""
  scipy_special = _scipy_special()
  lo = np.full_like(log_p, -1e11)
  hi = np.zeros_like(log_p)
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    below = scipy_special.log_ndtr(mid) < log_p
    lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
  return 0.5 * (lo + hi)


@pytest.mark.parametrize("dtype,tol", [(tf.float32, 3e-7), (tf.float64, 2e-15)])
def test_ndtri_of_log_matches_reference_to_extreme_tails(dtype, tol):
  scipy_special = _scipy_special()
  log_p = -np.logspace(np.log10(np.log(2.)), 9., 200)
  log_p = log_p.astype(dtype.as_numpy_dtype).astype(np.float64)
  ref = _ndtri_reference(log_p)
  lp = tf.constant(log_p, dtype)
  with tf.GradientTape() as tape:
    tape.watch(lp)
    x = numerics.ndtri_of_log(lp)
  grad = tape.gradient(x, lp).numpy()
  x = x.numpy()
  assert np.all(np.isfinite(x)) and np.all(np.isfinite(grad))
  np.testing.assert_allclose(x, ref, rtol=tol, atol=tol)
  # dx / dlog p = Phi(x) / phi(x)
  mills = scipy_special.erfcx(-ref / np.sqrt(2.)) * np.sqrt(np.pi / 2.)
  np.testing.assert_allclose(grad, mills, rtol=1e3 * tol)


def test_ndtri_from_log_tails_is_antisymmetric_and_resolves_p_near_one():
  scipy_special = _scipy_special()
  p = np.array([1e-300, 1e-20, 0.01, 0.3, 0.5])
  log_p, log_q = np.log(p), np.log1p(-p)
  lower = numerics.ndtri_from_log_tails(tf.constant(log_p), tf.constant(log_q)).numpy()
  upper = numerics.ndtri_from_log_tails(tf.constant(log_q), tf.constant(log_p)).numpy()
  np.testing.assert_allclose(lower, scipy_special.ndtri(p), rtol=1e-13, atol=1e-15)
  np.testing.assert_allclose(upper, -lower, rtol=1e-13, atol=1e-15)  # 1 - 1e-300 rounds to 1


def test_logistic_mixture_log_cdf_matches_scipy_and_stays_finite():
  scipy_special = _scipy_special()
  rng = np.random.default_rng(0)
  loc, scale = rng.normal(size=(3, 4)), 0.1 + rng.uniform(size=(3, 4))
  logits = rng.normal(size=(3, 4))
  log_w = logits - scipy_special.logsumexp(logits, -1, keepdims=True)
  x = np.concatenate([rng.normal(size=(5, 3)), [[-1e3, 40., 1e4]]])
  z = (x[..., None] - loc) / scale
  ref_cdf = scipy_special.logsumexp(log_w + scipy_special.log_expit(z), -1)
  ref_sf = scipy_special.logsumexp(log_w + scipy_special.log_expit(-z), -1)
  ref_pdf = scipy_special.logsumexp(
      log_w + scipy_special.log_expit(z) + scipy_special.log_expit(-z) - np.log(scale), -1)
  for dtype, tol in ((tf.float64, 1e-12), (tf.float32, 1e-5)):
    got = numerics.logistic_mixture_log_cdf(*(tf.constant(a, dtype) for a in
                                              (x, loc, scale, log_w)))
    for g, r in zip(got, (ref_cdf, ref_sf, ref_pdf)):
      np.testing.assert_allclose(g.numpy(), r, rtol=tol, atol=tol)


# --- monotone_root on the planar-tanh equation ----------------------------------------------

def _planar_scalar(m):
  # The planar-tanh equation along w: x + m tanh(x), increasing for m > -1.
  return lambda x: x + m * tf.tanh(x)


@pytest.mark.parametrize("dtype,tol", [
    pytest.param(tf.float32, 1e-5, marks=pytest.mark.slow),  # 26 s; float64 runs by default
    (tf.float64, 1e-12)])
def test_monotone_root_newton_accuracy_and_xla(dtype, tol):
  target = tf.constant(np.linspace(-30., 30., 101), dtype)
  for m in (-0.999, -0.5, 0.0, 3.):
    fn = _planar_scalar(tf.constant(m, dtype))
    half = abs(m) + 1e-3
    for mode in (lambda f: f, lambda f: tf.function(f, jit_compile=True)):
      res = mode(lambda t: numerics.monotone_root(fn, t, t - half, t + half))(target)
      x = res.root.numpy().astype(np.float64)
      np.testing.assert_allclose(x + m * np.tanh(x), target.numpy(), rtol=tol, atol=tol)
      assert res.converged.numpy().all() and np.all(res.num_iterations.numpy() <= 20)
  # The cubic on a wide bracket too.
  res = numerics.monotone_root(_cubic(tf.constant(0.7, dtype)), target, -10., 10.)
  x = res.root.numpy().astype(np.float64)
  np.testing.assert_allclose(x ** 3 + 0.7 * x, target.numpy(), rtol=tol, atol=tol * 30)


def _check_root_gradients(root_at, theta, rtol):
  """Gradients of sum(root^2) w.r.t. a scalar parameter and the targets vs central differences.

  ``root_at(theta, targets)`` returns the roots; theta is a float, the targets are fixed.
  """
  theta_var = tf.Variable(theta, dtype=tf.float64)
  target = tf.constant([-3., 0.05, 2., 9.], tf.float64)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(target)
    loss = tf.reduce_sum(root_at(tf.convert_to_tensor(theta_var), target) ** 2)
  g_theta = tape.gradient(loss, theta_var).numpy()
  g_t = tape.gradient(loss, target).numpy()
  eps = 1e-6

  def loss_at(th, t):
    return float(tf.reduce_sum(root_at(tf.constant(th, tf.float64),
                                       tf.constant(t, tf.float64)) ** 2))

  t0 = target.numpy()
  np.testing.assert_allclose(
      g_theta, (loss_at(theta + eps, t0) - loss_at(theta - eps, t0)) / (2 * eps), rtol=rtol)
  for i in range(len(t0)):
    e = np.zeros(len(t0))
    e[i] = eps
    np.testing.assert_allclose(
        g_t[i], (loss_at(theta, t0 + e) - loss_at(theta, t0 - e)) / (2 * eps), rtol=rtol)


def test_monotone_root_newton_implicit_gradients_match_finite_differences():
  _check_root_gradients(
      lambda m, t: numerics.monotone_root(_planar_scalar(m), t, t - 1., t + 1.).root,
      theta=-0.8, rtol=1e-6)


def test_monotone_root_newton_reports_non_convergence_and_bad_brackets():
  fn = _planar_scalar(tf.constant(-0.9, tf.float64))
  target = tf.constant([0.3, 5.], tf.float64)
  res = numerics.monotone_root(fn, target, target - 1., target + 1., max_iterations=1)
  assert not res.converged.numpy().all()
  with pytest.raises(tf.errors.InvalidArgumentError, match="did not converge"):
    numerics.monotone_root(fn, target, target - 1., target + 1., max_iterations=1,
                                   validate_args=True)
  with pytest.raises(tf.errors.InvalidArgumentError, match="invalid bracket"):
    numerics.monotone_root(fn, target, target + 1., target + 2., validate_args=True)


def test_monotone_root_accepts_a_newton_step_below_an_ulp_at_the_bracket_edge():
  # Regression: a converged Newton step that rounding put on the bracket's edge was rejected
  # and replaced by bisection, restarting the search (22 iterations instead of 5 here).
  m = tf.constant(-0.617, tf.float32)
  target = tf.constant(np.linspace(-10., 10., 20001), tf.float32)
  half = 0.617 * (1. + 4e-7) + 1e-6 * (1. + tf.abs(target))
  res = numerics.monotone_root(_planar_scalar(m), target, target - half, target + half)
  assert res.converged.numpy().all()
  assert res.num_iterations.numpy().max() <= 8


# --- x_minus_tanh and one_sided_newton --------------------------------------------------------

def _decimal_tanh(d):
  e = (2 * d).exp()
  return (e - 1) / (e + 1)


def _reference_x_minus_tanh(x):
  getcontext().prec = 120
  d = Decimal(float(x))
  if abs(x) < 1e-8:  # the series is exact to far below double precision here
    return float(d ** 3 / 3 - 2 * d ** 5 / 15)
  return float(d - _decimal_tanh(d))


@pytest.mark.parametrize("dtype,ulps", [(tf.float32, 60), (tf.float64, 60)])
def test_x_minus_tanh_has_full_relative_precision(dtype, ulps):
  x = np.concatenate([np.logspace(-12, 1.5, 800), [0.24999, 0.25, 0.25001]])
  x = x.astype(dtype.as_numpy_dtype)
  ref = np.array([_reference_x_minus_tanh(v) for v in x.astype(np.float64)])
  got = numerics.x_minus_tanh(tf.constant(x)).numpy().astype(np.float64)
  eps = np.finfo(dtype.as_numpy_dtype).eps
  normal = ref > np.finfo(dtype.as_numpy_dtype).tiny / eps  # away from underflow of x^3
  np.testing.assert_array_less(np.abs(got - ref)[normal] / ref[normal], ulps * eps)
  np.testing.assert_array_equal(numerics.x_minus_tanh(tf.constant(-x)).numpy(), -got)


def _planar_value_and_slope(p):
  # x + (p - 1) tanh(x) without cancellation, as Planar evaluates it; increasing for p > 0.
  def fn(x):
    th = tf.tanh(x)
    sech2 = 1. - tf.square(th)
    return (numerics.x_minus_tanh(x) + p * th, tf.square(th) + p * sech2,
            2. * (1. - p) * th * sech2)
  return fn


def _reference_planar_root(x, p, t):
  getcontext().prec = 80
  xd, pd, td = Decimal(float(x)), Decimal(float(p)), Decimal(float(t))
  for _ in range(8):  # Newton from the float root: 1e-7 -> 1e-56 in a handful of steps
    th = _decimal_tanh(xd)
    xd -= (xd + (pd - 1) * th - td) / (1 + (pd - 1) * (1 - th * th))
  return float(xd)


@pytest.mark.parametrize("dtype,tol", [(tf.float32, 1e-6), (tf.float64, 1e-14)])
def test_one_sided_newton_on_the_planar_equation_up_to_the_boundary(dtype, tol):
  eps = np.finfo(dtype.as_numpy_dtype).eps
  p_values = np.array([eps, 1e-5, 1e-2, 0.5, 1., 3., 1e4])
  t_values = np.concatenate([-np.logspace(-30, 3, 12), [0.], np.logspace(-30, 3, 12)])
  p_grid, t_grid = np.meshgrid(p_values, t_values, indexing="ij")
  p = tf.constant(p_grid, dtype)
  t = tf.constant(t_grid, dtype)
  start = Planar._tanh_start(t, p)  # pylint: disable=protected-access
  solve = lambda t, s: numerics.one_sided_newton(_planar_value_and_slope(p), t, s, t)
  for mode in (lambda f: f, lambda f: tf.function(f, jit_compile=True)):
    res = mode(solve)(t, start)
    assert res.converged.numpy().all()
    assert res.num_iterations.numpy().max() <= 40
    x = res.root.numpy().astype(np.float64)
    ref = np.array([_reference_planar_root(*args) for args in
                    zip(x.ravel(), p.numpy().ravel(), t.numpy().ravel())]).reshape(x.shape)
    np.testing.assert_array_less(np.abs(x - ref) / (1. + np.abs(ref)), tol)


def test_one_sided_newton_implicit_gradients_match_finite_differences():
  def root_at(p, t):
    start = Planar._tanh_start(t, p)  # pylint: disable=protected-access
    return numerics.one_sided_newton(_planar_value_and_slope(p), t, start, t).root

  _check_root_gradients(root_at, theta=0.3, rtol=1e-7)


def test_one_sided_newton_reports_a_violated_bracket_instead_of_a_wrong_root():
  fn = _planar_value_and_slope(tf.constant(0.1, tf.float64))
  target = tf.constant([0.3, 5.], tf.float64)
  # The root of x - 0.9 tanh(x) = 5 is ~5.9, outside [5, 5.5]: the clipped iterate sits on the
  # edge with a large Newton step, which never counts as converged.
  res = numerics.one_sided_newton(fn, target, target + 0.5, target)
  assert not res.converged.numpy()[1] and res.num_iterations.numpy()[1] == 100
  with pytest.raises(tf.errors.InvalidArgumentError, match="did not converge"):
    numerics.one_sided_newton(fn, target, target + 0.5, target, validate_args=True)
  capped = numerics.one_sided_newton(fn, target, target + 2., target, max_iterations=1)
  assert not capped.converged.numpy().all()
  with pytest.raises(ValueError, match="max_iterations"):
    numerics.one_sided_newton(fn, target, target, target, max_iterations=0)


# --- convergence reports and attainable tolerances -------------------------------------------


def _capped_planar(**kwargs):
  return tff.bijectors.Planar(2, u=[2., -1.], w=[1., 0.5], b=0.2, max_iterations=1,
                              tolerance=1e-6, name="my_planar", **kwargs)


def test_non_convergence_warns_naming_the_layer_iterations_and_residual():
  y = tf.constant(np.random.default_rng(4).normal(size=(50, 2)) * 3., tf.float32)
  with pytest.warns(numerics.ConvergenceWarning,
                    match=r"my_planar_tanh_inverse: \d+ of 50 elements did not converge in 1 "
                          r"iterations \(largest residual [0-9.e+-]+\)"):
    _capped_planar().inverse(y)


def test_non_convergence_inside_tf_function_is_printed(capfd):
  y = tf.constant(np.random.default_rng(4).normal(size=(50, 2)) * 3., tf.float32)
  tf.function(_capped_planar().inverse)(y)
  err = capfd.readouterr().err
  assert "my_planar_tanh_inverse did not converge" in err and "largest residual" in err


def test_non_convergence_with_validate_args_raises_with_the_figures():
  y = tf.constant(np.random.default_rng(4).normal(size=(50, 2)) * 3., tf.float32)
  bij = _capped_planar(validate_args=True)
  with pytest.raises(tf.errors.InvalidArgumentError, match="my_planar.*residual"):
    bij.inverse(y)
  with pytest.raises(tf.errors.InvalidArgumentError, match="my_planar_tanh_inverse did not"):
    tf.function(bij.inverse)(tf.identity(y))


def test_monotone_root_does_not_bounce_between_the_bracket_ends():
  """Newton inside the bracket can alternate between its ends while it shrinks by a sliver
  per step (a steep component in a logistic mixture); bisection must take over."""
  loc = tf.constant([[0.507, -3.443, -0.071, -0.725, -0.295, 0.273, -1.133, 1.302]], tf.float64)
  scale = tf.constant([[0.661, 0.526, 0.354, 0.564, 0.0227, 0.730, 0.138, 0.0705]], tf.float64)
  log_w = tf.math.log(tf.constant([[0.117, 0.057, 0.188, 0.059, 0.074, 0.338, 0.124, 0.043]],
                                  tf.float64))
  log_w -= tf.reduce_logsumexp(log_w, -1, keepdims=True)

  def logit_cdf(u):
    log_cdf, log_sf, _ = numerics.logistic_mixture_log_cdf(u, loc, scale, log_w)
    return log_cdf - log_sf

  target = tf.constant(np.linspace(-0.4, 0.1, 41)[:, None])
  res = numerics.monotone_root(logit_cdf, target, -3.5 * tf.ones_like(target),
                               1.3 * tf.ones_like(target))
  assert np.all(res.converged) and int(np.max(res.num_iterations)) <= 40
  np.testing.assert_allclose(logit_cdf(res.root), target, atol=1e-12)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_tolerances_below_the_dtype_precision_are_met_at_that_precision(dtype):
  assert tff.core.attainable_tolerance(1e-30, dtype) == 4 * np.finfo(dtype.as_numpy_dtype).eps
  assert tff.core.attainable_tolerance(None, dtype) == numerics.default_tolerance(dtype)
  target = tf.constant(np.linspace(-30., 30., 201), dtype)
  fn = lambda x: x + 0.5 * tf.sin(x) + x**3 / 100.
  res = numerics.monotone_root(fn, target, target - 40., target + 40., position_tolerance=1e-30)
  assert np.all(res.converged)
  np.testing.assert_allclose(fn(res.root), target, rtol=10 * np.finfo(dtype.as_numpy_dtype).eps,
                             atol=10 * np.finfo(dtype.as_numpy_dtype).eps)
