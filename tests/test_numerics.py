"""Tests of the shared solvers and special functions in tfp_flows.numerics."""

import numpy as np
import pytest
import tensorflow as tf

from tfp_flows import numerics


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


@pytest.mark.parametrize("dtype,tol", [(tf.float32, 1e-5), (tf.float64, 1e-12)])
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


def test_monotone_root_newton_implicit_gradients_match_finite_differences():
  m = tf.Variable(-0.8, dtype=tf.float64)
  target = tf.constant([-3., 0.05, 2., 9.], tf.float64)

  def root_at(m_value, t):
    fn = _planar_scalar(m_value)
    return numerics.monotone_root(fn, t, t - 1., t + 1.).root

  with tf.GradientTape(persistent=True) as tape:
    tape.watch(target)
    loss = tf.reduce_sum(root_at(m, target) ** 2)
  g_m, g_t = tape.gradient(loss, m).numpy(), tape.gradient(loss, target).numpy()
  eps = 1e-6

  def loss_at(mv, t):
    return float(tf.reduce_sum(root_at(tf.constant(mv, tf.float64),
                                       tf.constant(t, tf.float64)) ** 2))

  t0 = target.numpy()
  np.testing.assert_allclose(g_m, (loss_at(-0.8 + eps, t0) - loss_at(-0.8 - eps, t0)) / (2 * eps),
                             rtol=1e-6)
  for i in range(4):
    e = np.zeros(4)
    e[i] = eps
    np.testing.assert_allclose(g_t[i], (loss_at(-0.8, t0 + e) - loss_at(-0.8, t0 - e)) / (2 * eps),
                               rtol=1e-6)


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
