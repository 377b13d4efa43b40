"""Tests of the invertible masked convolutions (MaskedConv2D, LinearMaskedConv2D, the builder).

The bijector contract (round trips, log-det vs slogdet, modes, gradients) runs from
tests/test_contract.py; here: the triangular structure itself, the positivity of the diagonal
for extreme variables, gradients of the iterative direction against finite differences, the
solver's convergence reports, argument errors, image sizes and maximum-likelihood training.
"""

import numpy as np
import pytest
import tensorflow as tf

import tfp_flows as tff
from tfp_flows.bijectors.masked_conv import conv_mask

MaskedConv2D = tff.bijectors.MaskedConv2D
LinearMaskedConv2D = tff.bijectors.LinearMaskedConv2D


def _jacobian(fn, x):
  """Dense Jacobian of fn at one image x (flattened in raster-then-channel order)."""
  x = tf.constant(x)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    y = tf.reshape(fn(x), [-1])
  return tape.jacobian(y, x, experimental_use_pfor=False).numpy().reshape(y.shape[0], -1)


def test_conv_mask_rules():
  m = conv_mask([0, 1], [0, 1], "forward")
  assert m[0].all() and m[1, 0].all()             # row above and left neighbour: all channels
  assert not m[1, 2].any() and not m[2].any()     # right neighbour and row below: nothing
  np.testing.assert_array_equal(m[1, 1], [[1, 1], [0, 1]])  # centre: c_in <= c_out
  r = conv_mask([0, 1], [0, 1], "reverse")
  np.testing.assert_array_equal(r, m[::-1, ::-1].transpose(0, 1, 3, 2))


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_mintnet_jacobian_is_triangular_with_analytic_diagonal(order):
  bij = MaskedConv2D([3, 3, 2], hidden_channels=4, order=order, dtype=tf.float64)
  tff.testing.randomize_variables(bij, scale=0.7, seed=1)
  x = np.random.default_rng(0).standard_normal((3, 3, 2))
  jac = _jacobian(bij.inverse, x)  # the explicit map F (data -> latent)
  strict = np.triu(jac, 1) if order == "forward" else np.tril(jac, -1)
  assert np.abs(strict).max() == 0.
  assert np.abs(np.tril(jac, -1) if order == "forward" else np.triu(jac, 1)).max() > 1e-3
  _, diagonal = bij._map_and_diagonal(tf.constant(x[None]), bij._weights())
  np.testing.assert_allclose(np.diag(jac), diagonal.numpy().ravel(), rtol=1e-12)
  assert (np.diag(jac) > 0).all()
  assert float(bij.inverse_log_det_jacobian(x, event_ndims=3)) == pytest.approx(
      np.log(np.diag(jac)).sum(), rel=1e-12)


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_linear_matrix_is_the_convolution(order):
  bij = LinearMaskedConv2D([3, 4, 2], order=order, dtype=tf.float64)
  tff.testing.randomize_variables(bij, scale=0.7, seed=2)
  x = np.random.default_rng(1).standard_normal((3, 4, 2))
  jac = _jacobian(bij.inverse, x)
  m = bij.matrix().numpy()
  np.testing.assert_allclose(m, jac, atol=1e-14)
  assert np.abs(np.triu(m, 1) if order == "forward" else np.tril(m, -1)).max() == 0.
  np.testing.assert_allclose(bij.inverse(x).numpy().ravel(),
                             m @ x.ravel() + np.tile(bij.bias.numpy(), 12), atol=1e-12)


def test_diagonal_positive_for_extreme_variables():
  bij = MaskedConv2D([4, 4, 2], hidden_channels=6, dtype=tf.float32)
  rng = np.random.default_rng(3)
  for v in bij.trainable_variables:
    v.assign(rng.normal(0., 8., v.shape).astype(np.float32))
  bij.t_raw.assign(tf.fill(bij.t_raw.shape, -50.))  # softplus underflows: t = min_diagonal
  x = tf.constant(rng.normal(0., 5., (16, 4, 4, 2)), tf.float32)
  _, diagonal = bij._map_and_diagonal(x, bij._weights())
  assert (diagonal.numpy() >= 1e-3 * (1 - 1e-6)).all()
  assert np.isfinite(bij.inverse_log_det_jacobian(x, event_ndims=3).numpy()).all()
  assert (bij.diagonal_bound().numpy()[None] >= diagonal.numpy() * (1 - 1e-6)).all()


def test_iterative_direction_gradients_match_finite_differences():
  bij = MaskedConv2D([2, 3, 1], hidden_channels=2, dtype=tf.float64)
  tff.testing.randomize_variables(bij, scale=0.5, seed=4)
  rng = np.random.default_rng(5)
  x0 = rng.standard_normal((2, 2, 3, 1))
  weights = tf.constant(rng.standard_normal((2, 2, 3, 1)))

  def loss(x):
    return tf.reduce_sum(weights * tf.sin(bij.forward(x)))

  x = tf.constant(x0)
  with tf.GradientTape() as tape:
    tape.watch(x)
    value = loss(x)
  g_x, g_w2 = tape.gradient(value, [x, bij.w2])
  eps = 1e-6
  for idx in [(0, 0, 0, 0), (0, 1, 2, 0), (1, 0, 1, 0)]:
    e = np.zeros_like(x0)
    e[idx] = eps
    fd = (float(loss(tf.constant(x0 + e))) - float(loss(tf.constant(x0 - e)))) / (2 * eps)
    assert float(g_x[idx]) == pytest.approx(fd, rel=1e-6, abs=1e-9)
  for idx in [(0, 0, 0, 1), (1, 1, 1, 0), (1, 0, 0, 1)]:  # unmasked / centre entries
    w = bij.w2.numpy()
    vals = []
    for sign in (1, -1):
      w_pert = w.copy()
      w_pert[idx] += sign * eps
      bij.w2.assign(w_pert)
      vals.append(float(loss(tf.constant(x0))))
    bij.w2.assign(w)
    assert float(g_w2[idx]) == pytest.approx((vals[0] - vals[1]) / (2 * eps), rel=1e-6,
                                             abs=1e-9)


@pytest.mark.parametrize("solver,order", [("newton", "forward"), ("chord", "reverse")])
def test_solve_reports_convergence(solver, order):
  bij = MaskedConv2D([4, 4, 2], hidden_channels=4, solver=solver, order=order,
                     dtype=tf.float64)
  tff.testing.randomize_variables(bij, scale=0.5, seed=6)
  z = tf.constant(np.random.default_rng(7).standard_normal((3, 4, 4, 2)))
  result = bij.solve_forward(z)
  assert result.converged.numpy().all()
  assert result.solution.shape == z.shape and result.converged.shape == z.shape
  assert 1 <= int(result.num_iterations) < 500
  np.testing.assert_allclose(bij.inverse(tf.constant(result.solution.numpy())), z, atol=1e-10)
  short = bij.solve_forward(z, max_iterations=1)
  assert not short.converged.numpy().all() and int(short.num_iterations) == 1


def test_validate_args_raises_on_non_convergence():
  bij = MaskedConv2D([3, 3, 1], hidden_channels=2, max_iterations=1, validate_args=True,
                     dtype=tf.float64)
  tff.testing.randomize_variables(bij, scale=0.5, seed=8)
  z = tf.constant(np.random.default_rng(9).standard_normal((2, 3, 3, 1)))
  with pytest.raises(tf.errors.InvalidArgumentError, match="did not converge"):
    bij.forward(z)
  with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or inf"):
    bij.inverse(tf.constant(np.full((1, 3, 3, 1), np.nan)))


def test_argument_errors():
  with pytest.raises(ValueError, match=r"\[H, W, C\]"):
    MaskedConv2D([4, 4])
  with pytest.raises(ValueError, match="multiple"):
    MaskedConv2D([4, 4, 3], hidden_channels=4)
  with pytest.raises(ValueError, match="order"):
    LinearMaskedConv2D([4, 4, 1], order="diagonal")
  with pytest.raises(ValueError, match="solver"):
    MaskedConv2D([4, 4, 1], solver="bisection")
  with pytest.raises(ValueError, match="step_size"):
    MaskedConv2D([4, 4, 1], step_size=2.5)
  with pytest.raises(ValueError, match="activation"):
    MaskedConv2D([4, 4, 1], activation="relu")  # relu' = 0 would allow a zero diagonal
  with pytest.raises(TypeError, match="floating"):
    MaskedConv2D([4, 4, 1], dtype=tf.int32)
  bij = MaskedConv2D([4, 4, 1], hidden_channels=2)
  with pytest.raises(ValueError, match="expected event shape"):
    bij.inverse(tf.zeros([2, 4, 5, 1]))
  with pytest.raises((TypeError, ValueError), match="float64|dtype"):
    bij.inverse(tf.zeros([2, 4, 4, 1], tf.float64))
  with pytest.raises(ValueError, match="image event_shape"):
    tff.flows.masked_conv([16])


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["float32", "float64"])
def test_builder_stack_log_det_and_round_trip(dtype):
  flow = tff.flows.masked_conv([3, 3, 2], num_layers=2, hidden_units=4, dtype=dtype)
  tff.testing.randomize_variables(flow, scale=0.3, seed=3)
  assert [b.order for b in flow.bijectors] == ["forward"] * 2 + ["reverse"] * 2
  y = tf.constant(np.random.default_rng(4).standard_normal((2, 3, 3, 2)), dtype)
  tol = 2e-4 if dtype == tf.float32 else 1e-9
  # log_prob direction: ildj against slogdet of the autodiff Jacobian of the inverse.
  want = tff.testing.autodiff_log_det(flow.inverse, y, 3).numpy()
  np.testing.assert_allclose(flow.inverse_log_det_jacobian(y, 3), want, rtol=tol, atol=tol)
  z = flow.inverse(y)
  np.testing.assert_allclose(flow.forward(tf.constant(z.numpy())), y, rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)],
                         ids=["8x8x1", "28x28x1", "32x32x3"])
def test_builder_image_sizes_and_training_smoke(shape):
  flow = tff.flows.masked_conv(list(shape), num_layers=2, hidden_units=2 * shape[-1], seed=1)
  assert len(flow.trainable_variables) == 2 * (3 + 7)
  dist = tff.flows.distribution(flow, shape)
  rng = np.random.default_rng(0)
  x = tf.constant(rng.standard_normal((2,) + shape), tf.float32)
  with tf.GradientTape() as tape:
    loss = -tf.reduce_mean(dist.log_prob(x))
  grads = tape.gradient(loss, flow.trainable_variables)
  assert np.isfinite(float(loss)) and all(np.isfinite(g.numpy()).all() for g in grads)
  for v, g in zip(flow.trainable_variables, grads):  # one plain SGD step
    v.assign_sub(1e-3 * g)
  z = tf.constant(rng.standard_normal((2,) + shape), tf.float32)
  y = flow.forward(z)
  assert y.shape == (2,) + shape
  np.testing.assert_allclose(flow.inverse(tf.constant(y.numpy())), z, atol=2e-4, rtol=2e-4)
  assert dist.log_prob(y).shape == (2,)


def test_builder_trains_by_maximum_likelihood_on_digits():
  from sklearn.datasets import load_digits
  images = load_digits().images[:64].astype(np.float32)  # values 0..16
  rng = np.random.default_rng(0)
  x = (images + rng.uniform(size=images.shape).astype(np.float32)) / 17.
  x = tf.constant(((x - 0.5) * 4.)[..., None])
  flow = tff.flows.masked_conv([8, 8, 1], num_layers=2, hidden_units=8, seed=0)
  dist = tff.flows.distribution(flow, [8, 8, 1])
  variables = flow.trainable_variables

  @tf.function
  def loss_and_grads():
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(dist.log_prob(x))
    return loss, tape.gradient(loss, variables)

  # Plain Adam (lr 1e-2), written out to keep the test free of Keras.
  m = [tf.zeros_like(v) for v in variables]
  s = [tf.zeros_like(v) for v in variables]
  losses = []
  for k in range(1, 31):
    loss, grads = loss_and_grads()
    losses.append(float(loss))
    for i, (v, g) in enumerate(zip(variables, grads)):
      m[i] = 0.9 * m[i] + 0.1 * g
      s[i] = 0.999 * s[i] + 0.001 * g * g
      v.assign_sub(1e-2 * (m[i] / (1 - 0.9 ** k)) / (tf.sqrt(s[i] / (1 - 0.999 ** k)) + 1e-8))
  assert np.isfinite(losses).all()
  assert losses[-1] < losses[0] - 20.  # nats per 64-dim image
  # Sampling the trained flow still converges and inverts.
  z = tf.random.stateless_normal([4, 8, 8, 1], seed=[1, 2])
  y = flow.forward(z)
  np.testing.assert_allclose(flow.inverse(tf.constant(y.numpy())), z, atol=1e-3, rtol=1e-3)
