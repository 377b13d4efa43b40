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
  with pytest.warns(tff.numerics.FixedPointWarning, match="did not converge in 1 iterations"):
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


# TFP conventions (issue 11): parameters are the constructor's arguments, variables are shared.

@pytest.mark.parametrize("make", [
    lambda: MaskedConv2D([3, 3, 2], hidden_channels=4, order="reverse", seed=1),
    lambda: LinearMaskedConv2D([3, 4, 2], order="reverse", seed=2)], ids=["mintnet", "linear"])
def test_parameters_rebuild_the_same_map_with_the_same_variables(make):
  bij = make()
  tff.testing.randomize_variables(bij, scale=0.3, seed=3)  # "trained": not the initial values
  y = tf.random.stateless_normal([2] + list(bij.event_shape), seed=[1, 2])
  for rebuilt in (type(bij)(**bij.parameters), bij.copy()):
    assert all(v is w for v, w in zip(rebuilt.trainable_variables, bij.trainable_variables))
    np.testing.assert_array_equal(rebuilt.inverse(y), bij.inverse(y))
  assert "self" not in bij.parameters and bij.parameters["name"] in ("masked_conv2d",
                                                                    "linear_masked_conv2d")
  assert set(bij.parameters) <= set(type(bij).__init__.__code__.co_varnames)


def test_tensor_parameters_are_used_as_given():
  raw = tf.Variable(tf.zeros([3, 3, 1]))
  with tf.GradientTape() as tape:
    bij = MaskedConv2D([3, 3, 1], hidden_channels=2, t_raw=raw + 1.)
    ildj = bij.inverse_log_det_jacobian(tf.ones([1, 3, 3, 1]), event_ndims=3)
  assert raw.ref() not in {v.ref() for v in bij.variables}  # no copy into a new variable
  assert tape.gradient(ildj, raw) is not None
  with pytest.raises(ValueError, match=r"t_raw must have shape \[3, 3, 1\]"):
    MaskedConv2D([3, 3, 1], t_raw=tf.zeros([3, 3]))


# Sampling solves (issue 12): tolerances reachable in the working dtype, never silent.

def test_float32_solve_converges_as_far_as_float32_allows():
  """Moderate weights (init + N(0, 0.5^2)): float32 used to run 500 iterations and report
  converged=False for an answer as good as float32 gives."""
  b32 = MaskedConv2D([8, 8, 1], hidden_channels=16)
  tff.testing.randomize_variables(b32, scale=0.5, seed=0)
  b64 = MaskedConv2D([8, 8, 1], hidden_channels=16, dtype=tf.float64)
  for v, w in zip(b64.trainable_variables, b32.trainable_variables):
    v.assign(tf.cast(w, tf.float64))
  z = np.random.default_rng(1).normal(size=(4, 8, 8, 1))
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no FixedPointWarning
    r32 = b32.solve_forward(tf.constant(z, tf.float32))
  r64 = b64.solve_forward(tf.constant(z))
  assert r32.converged.numpy().all() and int(r32.num_iterations) < 150
  assert r64.converged.numpy().all() and int(r64.num_iterations) < 60
  np.testing.assert_allclose(r32.solution, r64.solution, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # 12 s
def test_diverging_newton_falls_back_to_chord_and_failures_are_reported():
  bij = MaskedConv2D([8, 8, 3], solver="newton", name="big_block")
  tff.testing.randomize_variables(bij, scale=2., seed=0)
  z = tf.constant(np.random.default_rng(0).normal(size=(4, 8, 8, 3)), tf.float32)
  with pytest.warns(tff.numerics.FixedPointWarning,
                    match=r"big_block_solve: \d+ of 768 elements did not converge in \d+ "
                          r"iterations \(largest finite last step"):
    newton = bij.solve_forward(z)
  assert not newton.converged.numpy().all()
  auto = bij.solve_forward(z, solver="auto")  # chord from scratch after newton fails
  assert auto.converged.numpy().all()
  strict = MaskedConv2D([8, 8, 3], solver="newton", validate_args=True, name="strict_block")
  for v, w in zip(strict.trainable_variables, bij.trainable_variables):
    v.assign(w)
  with pytest.raises(tf.errors.InvalidArgumentError, match="strict_block_solve: .* iterations"):
    strict.forward(z)


def test_nonconvergence_inside_tf_function_is_printed(capfd):
  bij = MaskedConv2D([4, 4, 1], hidden_channels=2, solver="newton", max_iterations=1,
                     name="traced_block")
  tff.testing.randomize_variables(bij, scale=0.5, seed=1)
  tf.function(bij.forward)(tf.random.stateless_normal([2, 4, 4, 1], seed=[3, 4]))
  assert "traced_block_solve did not converge" in capfd.readouterr().err


def test_linear_sampling_memory_is_linear_in_the_image_size():
  """No intermediate of the sampling graph is larger than a few images (no (HWC)^2 matrix)."""
  bij = LinearMaskedConv2D([64, 64, 3], order="reverse", seed=0)
  fn = tf.function(bij.forward).get_concrete_function(tf.TensorSpec([2, 64, 64, 3]))
  largest = max((int(np.prod(t.shape)) for op in fn.graph.get_operations()
                 for t in op.outputs if t.shape.is_fully_defined()), default=0)
  assert largest <= 2 * 64 * 64 * 3
  tff.testing.randomize_variables(bij, scale=0.3, seed=1)
  y = tf.random.stateless_normal([2, 64, 64, 3], seed=[1, 2])
  result = bij.solve_forward(tf.constant(bij.inverse(y).numpy()))
  assert result.converged.numpy().all() and int(result.num_iterations) <= bij.num_wavefronts
  np.testing.assert_allclose(result.solution, y, atol=1e-4)
