"""Planar and radial flows: constraints, the inverse at the boundary, gradients, batches, ML.

The contract (round trips, log-det vs autodiff, shapes, XLA, density) runs from
``tests/test_contract.py``; here are the checks specific to these families.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows as tff

tfb = tfp.bijectors
tfd = tfp.distributions
Planar = tff.bijectors.Planar
Radial = tff.bijectors.Radial


def _fresh(t):
  return tf.constant(np.array(t))


@pytest.mark.parametrize("activation,slope,lo", [("tanh", 0.2, -1.), ("leaky_relu", 0.2, -1.),
                                                 ("leaky_relu", 2.5, -0.4)])
def test_uhat_constraint_for_any_parameters(activation, slope, lo):
  rng = np.random.default_rng(0)
  u = rng.normal(0., 10., (200, 3))
  w = rng.normal(0., 3., (200, 3))
  bij = Planar(3, activation=activation, negative_slope=slope, u=u, w=w, b=np.zeros(200),
               dtype=tf.float64)
  u_hat, _, _, wtu_hat, p, ok = bij.constrained_parameters()
  assert np.all(ok)
  # wᵀû from the vectors agrees with the analytic value lo + softplus(wᵀu), which is > lo.
  dot = np.sum(w * u_hat.numpy(), -1)
  np.testing.assert_allclose(dot, wtu_hat.numpy(), atol=1e-9 * (1 + np.abs(u * w).sum(-1)).max())
  eps = np.finfo(np.float64).eps
  np.testing.assert_allclose(wtu_hat.numpy(), lo + eps + np.logaddexp(0., np.sum(u * w, -1)),
                             rtol=1e-12, atol=1e-12)
  # wᵀû = lo + p with p = ε + softplus(wᵀu) >= ε (wᵀû itself rounds to lo for wᵀu << 0).
  assert np.all(p.numpy() >= eps) and np.all(wtu_hat.numpy() >= lo)
  # The slope 1 + h'(a) wᵀû = (1 + h' lo) + h' p is positive and its log finite for every a.
  a = tf.constant(np.linspace(-5., 5., 41)[:, None] * np.ones(200))
  log_slope = bij._log_slope(a, p, ok)  # pylint: disable=protected-access
  assert np.all(np.isfinite(log_slope))
  hp = 1. - np.tanh(a)**2 if activation == "tanh" else np.where(a >= 0, 1., slope)
  moderate = np.abs(np.sum(u * w, -1)) < 20.  # where 1 + h' wᵀû is well away from rounding
  np.testing.assert_allclose(np.exp(log_slope)[:, moderate],
                             (1. + hp * wtu_hat.numpy())[:, moderate], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("activation", ["tanh", "leaky_relu"])
def test_far_beyond_the_boundary_stays_finite(dtype, activation):
  # wᵀu = -200: softplus underflows to 0 in float32, wᵀû == -1 to machine precision.
  w = np.array([1.0, -0.5])
  u = -200. * w / np.sum(w**2) + np.array([0.3, 0.2])
  bij = Planar(2, activation=activation, u=u, w=w, b=0.0, dtype=dtype)
  x = tf.constant(np.random.default_rng(1).normal(size=(64, 2)), dtype)
  x_in = _fresh(x)
  with tf.GradientTape() as tape:
    tape.watch(x_in)
    y = bij.forward(x_in)
    fldj = bij.forward_log_det_jacobian(x_in, event_ndims=1)
    loss = tf.reduce_sum(y) + tf.reduce_sum(fldj)
  grads = tape.gradient(loss, [x_in] + list(bij.trainable_variables))
  assert np.all(np.isfinite(y)) and np.all(np.isfinite(fldj))
  assert all(np.all(np.isfinite(g)) for g in grads)
  # The well-conditioned direction: forward(inverse(y)) == y.
  z, info = bij.solve_inverse(_fresh(y))
  assert np.all(np.isfinite(z))
  # The tanh inverse converges at the boundary too (the residual is evaluated without
  # cancellation, so Newton does not stall at rounding noise).
  assert np.all(info.converged) and np.max(info.num_iterations) <= 40
  tol = 1e-4 if dtype == tf.float32 else 1e-10
  np.testing.assert_allclose(bij.forward(_fresh(z)), y, atol=tol * 10, rtol=tol)


@pytest.mark.parametrize("activation", ["tanh", "leaky_relu"])
def test_zero_w_is_a_translation_without_nan(activation):
  u = np.array([0.7, -0.4])
  bij = Planar(2, activation=activation, u=u, w=np.zeros(2), b=0.5, dtype=tf.float64)
  x = tf.constant(np.random.default_rng(2).normal(size=(8, 2)))
  h_b = np.tanh(0.5) if activation == "tanh" else 0.5
  with tf.GradientTape() as tape:
    y = bij.forward(x)
    ldj = bij.forward_log_det_jacobian(x, event_ndims=1)
    z = bij.inverse(_fresh(y))
    loss = tf.reduce_sum(y) + tf.reduce_sum(ldj) + tf.reduce_sum(z)
  np.testing.assert_allclose(y, x.numpy() + u * h_b, atol=1e-14)
  np.testing.assert_allclose(ldj, 0., atol=1e-14)
  np.testing.assert_allclose(z, x, atol=1e-12)
  grads = tape.gradient(loss, bij.trainable_variables)
  assert all(g is None or np.all(np.isfinite(g)) for g in grads)


def test_tanh_inverse_gradients_match_finite_differences():
  rng = np.random.default_rng(3)
  bij = Planar(3, u=tf.Variable(rng.normal(size=3)), w=tf.Variable(rng.normal(size=3)),
               b=tf.Variable(0.3, dtype=tf.float64), dtype=tf.float64)
  y0 = rng.normal(size=(5, 3))
  g = tf.constant(rng.normal(size=(5, 3)))

  def loss(y):  # depends on the root found along w, and on û, w, b
    y = tf.constant(y) if not isinstance(y, tf.Tensor) else y
    z = bij.inverse(y)
    return tf.reduce_sum(g * z) + tf.reduce_sum(
        bij.inverse_log_det_jacobian(y, event_ndims=1))

  y_t = tf.constant(y0)
  with tf.GradientTape() as tape:
    tape.watch(y_t)
    value = loss(y_t)
  grads = tape.gradient(value, [y_t] + [bij.u, bij.w, bij.b])
  eps = 1e-6

  # w.r.t. the input y
  fd = np.zeros_like(y0)
  for idx in np.ndindex(*y0.shape):
    dy = np.zeros_like(y0)
    dy[idx] = eps
    fd[idx] = (loss(y0 + dy).numpy() - loss(y0 - dy).numpy()) / (2 * eps)
  np.testing.assert_allclose(grads[0], fd, rtol=1e-6, atol=1e-7)

  # w.r.t. every parameter
  for var, grad in zip([bij.u, bij.w, bij.b], grads[1:]):
    start = var.numpy()
    fd = np.zeros_like(start)
    for idx in np.ndindex(*start.shape):
      d = np.zeros_like(start)
      d[idx] = eps
      var.assign(start + d)
      up = loss(y0).numpy()
      var.assign(start - d)
      down = loss(y0).numpy()
      fd[idx] = (up - down) / (2 * eps)
    var.assign(start)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7, err_msg=var.name)


def test_tanh_inverse_reports_convergence_and_raises_without_it():
  bij = Planar(2, u=[2., -1.], w=[1., 0.5], b=0.2, dtype=tf.float64, seed=0)
  y = tf.constant(np.random.default_rng(4).normal(size=(50, 2)) * 3.)
  z, info = bij.solve_inverse(y)
  assert np.all(info.converged) and np.all(info.num_iterations > 0)
  # The scalar equation is solved to the documented tolerance (1e-12 relative in float64).
  assert np.max(info.residual) < 1e-10
  capped = Planar(2, u=[2., -1.], w=[1., 0.5], b=0.2, max_iterations=1, validate_args=True,
                  dtype=tf.float64)
  with pytest.raises(tf.errors.InvalidArgumentError, match="did not converge"):
    capped.inverse(_fresh(y))


# Parameters and points (from randomised / training stacks) for which the jit-compiled inverse
# returned NaN when numerics.monotone_root used TFP's Chandrupatla solver under XLA.
_XLA_CASES = [
    (tf.float64, [0.1377702190681865, -0.9240052260961442],
     [0.7885075147419695, 1.205787919018695], -0.3116372312686761,
     [[-0.7681181744617748, 0.9057764157122813], [0.37563580533300683, 0.3331665957453224]]),
    (tf.float32, [-0.25969407, -0.01876201], [-0.3043957, -0.19210091], 0.04402674,
     [[-1.456363, -0.5386712]]),
]


@pytest.mark.parametrize("dtype,u,w,b,y", _XLA_CASES, ids=["float64", "float32"])
def test_tanh_inverse_under_xla_has_no_nan(dtype, u, w, b, y):
  bij = Planar(2, u=u, w=w, b=b, dtype=dtype)
  y = tf.constant(y, dtype)
  eager = bij.inverse(tf.identity(y))
  jit = tf.function(bij.inverse, jit_compile=True)(_fresh(y))
  tol = 1e-12 if dtype == tf.float64 else 1e-5
  np.testing.assert_allclose(jit, eager, atol=tol)
  np.testing.assert_allclose(bij.forward(_fresh(jit)), y, atol=tol)


def test_batch_of_flows_matches_separate_flows():
  rng = np.random.default_rng(5)
  u, w, b = rng.normal(size=(4, 1, 2)), rng.normal(size=(4, 1, 2)), rng.normal(size=(4, 1))
  batched = Planar(2, u=u, w=w, b=b, dtype=tf.float64)
  assert batched.experimental_batch_shape() == [4, 1]
  assert Planar(2, batch_shape=[3]).experimental_batch_shape() == [3]
  assert Radial(2, batch_shape=[2, 3]).experimental_batch_shape() == [2, 3]
  x = rng.normal(size=(7, 4, 5, 2))  # sample [7], batch [4, 5] broadcast against [4, 1]
  y = batched.forward(tf.constant(x))
  ldj = batched.forward_log_det_jacobian(tf.constant(x), event_ndims=1)
  assert y.shape == [7, 4, 5, 2] and ldj.shape == [7, 4, 5]
  back = batched.inverse(_fresh(y))
  np.testing.assert_allclose(back, x, atol=1e-10)
  for i in range(4):
    single = Planar(2, u=u[i, 0], w=w[i, 0], b=b[i, 0], dtype=tf.float64)
    np.testing.assert_allclose(single.forward(tf.constant(x[:, i])), y[:, i], atol=1e-12)
    np.testing.assert_allclose(single.forward_log_det_jacobian(tf.constant(x[:, i]), 1),
                               ldj[:, i], atol=1e-12)
  # A TransformedDistribution over a scalar-batch base takes the bijector's batch shape.
  dist = tff.flows.distribution(Planar(2, batch_shape=[3], dtype=tf.float64, seed=1), [2])
  assert dist.batch_shape == [3]
  assert dist.log_prob(tf.constant(rng.normal(size=(6, 3, 2)))).shape == [6, 3]


def test_radial_constraint_and_closed_form_inverse():
  rng = np.random.default_rng(6)
  alpha_raw, beta_raw = rng.normal(0., 5., 50), rng.normal(0., 5., 50)
  bij = Radial(3, z0=rng.normal(size=(50, 3)), alpha_raw=alpha_raw, beta_raw=beta_raw,
               dtype=tf.float64)
  _, alpha, beta, _ = bij.constrained_parameters()
  assert np.all(alpha.numpy() > 0.) and np.all(beta.numpy() >= -alpha.numpy())
  x = rng.normal(size=(10, 50, 3)) * 2.
  y = bij.forward(tf.constant(x))
  np.testing.assert_allclose(bij.inverse(_fresh(y)), x, atol=1e-9)
  # The centre is a fixed point and has a finite log-det.
  z0 = bij.z0.numpy()
  np.testing.assert_allclose(bij.forward(tf.constant(z0)), z0, atol=1e-12)
  np.testing.assert_allclose(bij.inverse(tf.constant(z0)), z0, atol=1e-12)
  assert np.all(np.isfinite(bij.forward_log_det_jacobian(tf.constant(z0), 1)))


def test_bad_arguments_raise_clear_errors():
  with pytest.raises(ValueError, match="activation"):
    Planar(2, activation="relu6")
  with pytest.raises(ValueError, match="negative_slope"):
    Planar(2, activation="leaky_relu", negative_slope=-0.1)
  with pytest.raises(ValueError, match="event_size"):
    Planar([2, 2])
  with pytest.raises(ValueError, match="shape"):
    Planar(3, u=np.zeros(2))
  with pytest.raises(TypeError, match="dtype"):
    Planar(2, w=tf.Variable(tf.ones([2], tf.float64)))
  with pytest.raises(ValueError, match="event shape"):
    Planar(2).forward(tf.zeros([4, 3]))
  with pytest.raises(ValueError, match="event shape"):
    Radial(2).inverse(tf.zeros([4, 3]))
  with pytest.raises((TypeError, ValueError), match="dtype|float64"):
    Planar(2).forward(tf.zeros([4, 2], tf.float64))
  with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
    Planar(2, validate_args=True).inverse(tf.constant([[np.nan, 0.]], tf.float32))
  with pytest.raises(ValueError, match="num_layers"):
    tff.flows.planar([2], num_layers=0)
  with pytest.raises(ValueError, match="vector"):
    tff.flows.radial([2, 2])


@pytest.mark.parametrize("builder", ["planar", "radial"])
def test_maximum_likelihood_through_the_inverse_decreases_nll(builder):
  data = tf.constant(tff.datasets.toy("moons").sample(256, seed=0))
  make = getattr(tff.flows, builder)
  flow = make([2], num_layers=2, seed=1)
  dist = tff.flows.distribution(flow, [2])
  variables = flow.trainable_variables
  opt = tf.keras.optimizers.Adam(0.05)

  @tf.function  # tracing dominates the cost; the steps themselves take milliseconds
  def step():
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(dist.log_prob(data))
    grads = tape.gradient(loss, variables)
    opt.apply_gradients(zip(grads, variables))
    return loss

  nll = [float(step()) for _ in range(100)]
  final = float(-tf.reduce_mean(dist.log_prob(data)))
  assert np.all(np.isfinite(nll))
  assert final < nll[0] - 0.5, (nll[0], final)



@pytest.mark.parametrize("norm", [1e19, 1e20, 1e30, 1e37])
def test_radial_is_finite_and_exact_for_huge_finite_inputs(norm):
  """‖x - z0‖² overflows float32 above ~1.8e19; the map, its inverse and log-det must not."""
  z0, alpha_raw, beta_raw = [0.3, -0.2], 0.4, -0.7
  b32 = Radial(2, z0=z0, alpha_raw=alpha_raw, beta_raw=beta_raw)
  b64 = Radial(2, z0=z0, alpha_raw=alpha_raw, beta_raw=beta_raw, dtype=tf.float64)
  x = np.array([[0.6, -0.8], [-1., 0.], [0.7071, 0.7071]]) * norm
  y32 = b32.forward(tf.constant(x, tf.float32))
  y64 = b64.forward(tf.constant(x))
  np.testing.assert_allclose(y32, y64, rtol=1e-6, atol=1e-30)
  np.testing.assert_allclose(b32.inverse(_fresh(y32)), x, rtol=1e-6, atol=1e-30)
  for ldj32, ldj64 in ((b32.forward_log_det_jacobian(tf.constant(x, tf.float32), 1),
                        b64.forward_log_det_jacobian(tf.constant(x), 1)),
                       (b32.inverse_log_det_jacobian(_fresh(y32), 1),
                        b64.inverse_log_det_jacobian(tf.constant(np.array(y64)), 1))):
    assert np.all(np.isfinite(ldj32))
    np.testing.assert_allclose(ldj32, ldj64, atol=1e-6)


def test_planar_with_huge_or_tiny_w_gives_finite_values():
  """û is built without ‖w‖² (which overflows or underflows): no inf/NaN for any w."""
  for scale in (1e-30, 1e25):
    w = np.array([1., -0.5]) * scale
    bij = Planar(2, u=[0.7, 0.3], w=w, b=0.1)
    _, w_eff, _, wtu_hat, _, ok = bij.constrained_parameters()
    assert np.all(np.isfinite(bij.constrained_parameters()[0]))
    if bool(ok):
      assert float(wtu_hat) > -1.
    x = tf.constant(np.random.default_rng(8).normal(size=(16, 2)), tf.float32)
    y = bij.forward(x)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(bij.forward_log_det_jacobian(x, 1)))


def test_tanh_inverse_with_a_tolerance_below_float32_precision_converges_quickly():
  """A tolerance finer than the dtype resolves is met at the dtype's precision (4 ulp)."""
  rng = np.random.default_rng(0)
  bij = Planar(2, u=rng.normal(0, 3, (64, 2)), w=rng.normal(0, 3, (64, 2)),
               b=rng.normal(0, 1, 64), tolerance=1e-12)
  y = tf.constant(rng.normal(0, 5, (50, 64, 2)), tf.float32)
  z, info = bij.solve_inverse(y)
  assert np.all(info.converged) and int(np.max(info.num_iterations)) < 20
  np.testing.assert_allclose(bij.forward(_fresh(z)), y, rtol=1e-5, atol=1e-4)


def test_amortized_planar_parameters_carry_gradients_to_the_encoder():
  """Per-example u, w, b from an encoder (Rezende & Mohamed's amortised posterior): the flow's
  log-density gradients reach the encoder weights that produced them."""
  rng = np.random.default_rng(9)
  n, d, k = 6, 3, 2
  kernel = tf.Variable(rng.normal(0., 0.3, (5, k * (2 * d + 1))))
  x = tf.constant(rng.normal(size=(n, 5)))
  eps = tf.constant(rng.normal(size=(n, d)))
  with tf.GradientTape() as tape:
    params = tf.split(tf.matmul(x, kernel), k, axis=-1)
    layers = [Planar(d, u=p[:, :d], w=p[:, d:2 * d], b=p[:, 2 * d], dtype=tf.float64,
                     name=f"amortised_{i}") for i, p in enumerate(params)]
    flow = tfb.Chain(layers[::-1])
    assert flow.experimental_batch_shape(x_event_ndims=1) == [n]
    z = flow.forward(eps)
    log_q = -flow.forward_log_det_jacobian(eps, event_ndims=1)
    loss = tf.reduce_sum(z) + tf.reduce_sum(log_q)
  grad = tape.gradient(loss, kernel).numpy()
  assert log_q.shape == [n] and np.all(np.isfinite(grad)) and np.max(np.abs(grad)) > 1e-6


def test_solve_inverse_takes_numpy_and_rejects_other_dtypes():
  layer = tff.bijectors.Planar(2)
  z, info = layer.solve_inverse(np.zeros((4, 2), np.float32))
  assert z.shape == [4, 2] and bool(tf.reduce_all(info.converged))
  with pytest.raises(TypeError, match="float32"):
    layer.solve_inverse(np.zeros((4, 2), np.float64))
