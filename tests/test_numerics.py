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
