"""Gaussianization flows: MarginalGaussianization, HouseholderRotation, builder, RBIG.

The contract (round trips, log-dets vs autodiff, modes, density integrating to 1) runs in
tests/test_contract.py; here: independent ground truth from scipy, far tails, rotations for
extreme vector values, data-dependent init (incl. checkpoints), the training-free fit.
"""

import numpy as np
import pytest
import tensorflow as tf

import tfp_flows as tff
from tfp_flows.bijectors import gaussianization as gz

special = pytest.importorskip("scipy.special")
DTYPES = [tf.float32, tf.float64]
DT_IDS = ["float32", "float64"]


def _marginal(dtype, d=3, k=4, seed=0):
  bij = tff.bijectors.MarginalGaussianization(d, num_components=k, data_init=False, dtype=dtype)
  tff.testing.randomize_variables(bij, scale=0.5, seed=seed)
  return bij


def _reference_log_tails(bij, x):
  """log F, log(1 - F), log f from the variables, with scipy (float64)."""
  loc, scale, log_w = (t.numpy().astype(np.float64) for t in bij.mixture())
  z = (x[..., None] - loc) / scale
  lo, up = special.log_expit(z), special.log_expit(-z)
  return (special.logsumexp(log_w + lo, -1), special.logsumexp(log_w + up, -1),
          special.logsumexp(log_w + lo + up - np.log(scale), -1))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_marginal_inverse_and_density_match_scipy(dtype):
  bij = _marginal(dtype)
  x = np.random.default_rng(1).normal(size=(50, 3)) * 2.
  log_cdf, log_sf, log_pdf = _reference_log_tails(bij, x)
  ref_z = np.where(log_cdf < log_sf, special.ndtri(np.exp(log_cdf)),
                   -special.ndtri(np.exp(log_sf)))
  tol = 1e-5 if dtype == tf.float32 else 1e-12
  z = bij.inverse(tf.constant(x, dtype)).numpy()
  np.testing.assert_allclose(z, ref_z, rtol=tol, atol=tol)
  # With a N(0, I) base, log_prob of one marginal layer is exactly sum_d log f_d(x_d).
  dist = tff.flows.distribution(bij, [3])
  np.testing.assert_allclose(dist.log_prob(tf.constant(x, dtype)).numpy(), log_pdf.sum(-1),
                             rtol=10 * tol, atol=10 * tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_far_tails_have_finite_log_prob_and_gradients(dtype):
  data = np.random.default_rng(2).normal(size=(500, 2))
  flow = tff.flows.gaussianization([2], num_layers=2, num_components=8, dtype=dtype)
  dist = tff.flows.distribution(flow, [2], dtype=dtype)
  dist.log_prob(tf.constant(data, dtype))  # data-dependent init on unit-scale data
  far = np.array([[40., 0.], [-40., 0.], [0., 40.], [-40., 40.], [1e3, -1e3]])
  x = tf.constant(far, dtype)
  with tf.GradientTape() as tape:
    tape.watch(x)
    lp = dist.log_prob(x)
  grads = tape.gradient(lp, [x] + list(dist.trainable_variables))
  assert np.all(np.isfinite(lp.numpy())), lp.numpy()
  assert np.all(lp.numpy() < -10.)  # far out is improbable, but finite
  for g in grads:
    assert np.all(np.isfinite(tf.convert_to_tensor(g).numpy()))
  # A single layer is checked against scipy's log-space logistic mixture 40 sigma out.
  marginal = flow.bijectors[0]
  ref = _reference_log_tails(marginal, far)[2].sum(-1)
  one = tff.flows.distribution(marginal, [2], dtype=dtype).log_prob(tf.constant(far, dtype)).numpy()
  np.testing.assert_allclose(one, ref, rtol=1e-4 if dtype == tf.float32 else 1e-10)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_sampling_far_in_the_latent_tails_round_trips(dtype):
  bij = _marginal(dtype, d=2)
  y = np.array([[-30., 30.], [-8., 8.], [0., 1e-3]])
  x = bij.forward(tf.constant(y, dtype))
  assert np.all(np.isfinite(x.numpy()))
  back = bij.inverse(tf.constant(x.numpy())).numpy()
  rtol = 1e-4 if dtype == tf.float32 else 1e-9
  np.testing.assert_allclose(back, y, rtol=rtol, atol=rtol)


def test_sampling_gradients_wrt_variables_match_finite_differences():
  bij = _marginal(tf.float64, d=2, k=3)
  y = tf.constant([[-2., 0.5], [1.5, 3.]], tf.float64)
  var = bij.trainable_variables[0]
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(tf.sin(bij.forward(y)))
  grad = tape.gradient(loss, var).numpy()
  base = var.numpy()
  eps = 1e-6
  fd = np.zeros_like(base)
  for idx in np.ndindex(base.shape):
    for sign in (1., -1.):
      shifted = base.copy()
      shifted[idx] += sign * eps
      var.assign(shifted)
      fd[idx] += sign * float(tf.reduce_sum(tf.sin(bij.forward(tf.identity(y))))) / (2 * eps)
  var.assign(base)
  np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)


def test_forward_reports_non_convergence_with_validate_args():
  bij = tff.bijectors.MarginalGaussianization(2, num_components=4, data_init=False,
                                              max_iterations=2, validate_args=True)
  tff.testing.randomize_variables(bij, scale=0.5)
  with pytest.raises(tf.errors.InvalidArgumentError, match="did not converge"):
    bij.forward(tf.constant([[0.3, -1.2], [2., 0.1]]))


@pytest.mark.parametrize("scale", [0., 1e-30, 1., 1e30])
def test_householder_is_orthogonal_for_any_vector_values(scale):
  rng = np.random.default_rng(3)
  for dtype in DTYPES:
    if scale in (1e-30, 1e30) and dtype == tf.float32:
      value = np.float32(1e-20 if scale < 1 else 1e20) * rng.normal(size=(4, 4))
    else:
      value = scale * rng.normal(size=(4, 4))
    rot = tff.bijectors.HouseholderRotation(4, dtype=dtype)
    rot.trainable_variables[0].assign(value)
    with tf.GradientTape() as tape:
      q = rot.matrix()
      loss = tf.reduce_sum(q[0] * tf.range(4, dtype=dtype))
    grad = tape.gradient(loss, rot.trainable_variables[0]).numpy()
    tol = 1e-5 if dtype == tf.float32 else 1e-12
    np.testing.assert_allclose(q.numpy() @ q.numpy().T, np.eye(4), atol=tol)
    assert np.all(np.isfinite(grad))
    if scale == 0.:
      np.testing.assert_array_equal(q.numpy(), np.eye(4))


def test_householder_vectors_reproduce_an_orthogonal_matrix_up_to_column_signs():
  q, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(5, 5)))
  v = gz.householder_vectors(tf.constant(q))
  rebuilt = gz.householder_product(v).numpy()
  signs = np.sign(np.sum(rebuilt * q, axis=0))
  assert set(np.abs(signs)) == {1.}
  np.testing.assert_allclose(rebuilt, q * signs, atol=1e-12)


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_pca_rotation_initialises_from_the_first_batch(mode):
  rng = np.random.default_rng(5)
  cov = np.array([[3., 1.2, 0.], [1.2, 1., 0.3], [0., 0.3, 0.5]])
  y = rng.multivariate_normal(np.zeros(3), cov, size=4000)
  rot = tff.bijectors.HouseholderRotation(3, init="pca", dtype=tf.float64)
  inverse = rot.inverse if mode == "eager" else tf.function(rot.inverse, jit_compile=True)
  x = inverse(tf.constant(y)).numpy()
  assert bool(rot.initialized.numpy())
  c = np.cov(x.T)
  np.testing.assert_allclose(c - np.diag(np.diag(c)), 0., atol=1e-9)
  np.testing.assert_allclose(np.diag(c), np.sort(np.linalg.eigvalsh(np.cov(y.T)))[::-1],
                             rtol=1e-9)
  # Later batches do not re-initialise.
  before = rot.matrix().numpy()
  inverse(tf.constant(rng.normal(size=(10, 3))))
  np.testing.assert_array_equal(rot.matrix().numpy(), before)


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_marginal_data_init_uses_quantiles_of_the_first_batch(mode):
  x = np.random.default_rng(6).gamma(2., size=(2000, 2)) * [1., 10.]
  bij = tff.bijectors.MarginalGaussianization(2, num_components=16, dtype=tf.float64)
  inverse = bij.inverse if mode == "eager" else tf.function(bij.inverse, jit_compile=True)
  z = inverse(tf.constant(x)).numpy()
  assert bool(bij.initialized.numpy())
  loc, scale, log_w = (t.numpy() for t in bij.mixture())
  expected = np.quantile(x, (np.arange(16) + 0.5) / 16, axis=0, method="nearest").T
  np.testing.assert_allclose(loc, expected, rtol=0.02)
  np.testing.assert_allclose(np.exp(log_w), 1. / 16)
  assert np.all(scale[1] > 5. * scale[0])  # bandwidths scale with each dimension
  # The Gaussianized data are close to N(0, 1) per dimension.
  np.testing.assert_allclose(z.mean(0), 0., atol=0.1)
  np.testing.assert_allclose(z.std(0), 1., atol=0.1)


def test_data_init_state_is_saved_and_restored_with_the_weights(tmp_path):
  rng = np.random.default_rng(7)
  data = tf.constant(rng.normal(size=(300, 3)) @ [[1., 0.5, 0.], [0., 1., 0.], [0., 0., 2.]],
                     tf.float32)
  flow = tff.flows.gaussianization([3], num_layers=2, num_components=6, seed=1)
  dist = tff.flows.distribution(flow, [3])
  lp = dist.log_prob(data).numpy()  # initialises
  path = tf.train.Checkpoint(flow=flow).write(str(tmp_path / "ckpt"))

  fresh = tff.flows.gaussianization([3], num_layers=2, num_components=6, seed=2)
  flags = [b.initialized for b in fresh.bijectors]
  assert not any(bool(f.numpy()) for f in flags)
  tf.train.Checkpoint(flow=fresh).read(path).assert_consumed()
  assert all(bool(f.numpy()) for f in flags)
  # Restored: same density, and no re-initialisation on a different first batch.
  other = tf.constant(rng.normal(size=(50, 3)) * 5., tf.float32)
  fresh_dist = tff.flows.distribution(fresh, [3])
  fresh_dist.log_prob(other)
  np.testing.assert_allclose(fresh_dist.log_prob(data).numpy(), lp, rtol=1e-5, atol=1e-5)


def test_rbig_fits_without_training_and_refines_with_gradients():
  toy = tff.datasets.toy("8gaussians")
  x, x_test = toy.sample(3000, seed=0), toy.sample(2000, seed=1)
  flow = tff.flows.rbig(x, num_layers=4, num_components=32)
  dist = tff.flows.distribution(flow, [2])
  kl = np.mean(toy.log_prob(x_test) - dist.log_prob(x_test).numpy())
  # A Gaussian fitted by moments is the trivial baseline (KL about 1.7 nats here).
  mean, cov = x.mean(0), np.cov(x.T)
  diff = x_test - mean
  gauss_lp = (-0.5 * np.sum(diff @ np.linalg.inv(cov) * diff, -1)
              - 0.5 * np.log(np.linalg.det(2 * np.pi * cov)))
  kl_gauss = np.mean(toy.log_prob(x_test) - gauss_lp)
  assert kl < 0.5 * kl_gauss, (kl, kl_gauss)
  z = flow.inverse(tf.constant(x_test)).numpy()
  np.testing.assert_allclose(z.mean(0), 0., atol=0.15)
  np.testing.assert_allclose(z.std(0), 1., atol=0.15)
  # Refinement by maximum likelihood from the RBIG state lowers the NLL.
  opt = tf.keras.optimizers.Adam(5e-3)
  variables = dist.trainable_variables
  xt = tf.constant(x)

  def step():  # eager: cheaper than tracing for a handful of steps
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(dist.log_prob(xt))
    opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  losses = [float(step()) for _ in range(10)]
  assert losses[-1] < losses[0] - 0.02, losses


def test_builder_stack_and_fixed_rotations():
  flow = tff.flows.gaussianization([4], num_layers=3, num_components=5, rotation="random",
                                   data_init=False, seed=3)
  names = [type(b).__name__ for b in flow.bijectors]
  assert names == ["MarginalGaussianization", "HouseholderRotation"] * 2 + [
      "MarginalGaussianization"]
  rotations = flow.bijectors[1::2]
  assert all(not r.trainable_variables for r in rotations)  # fixed, but saved variables
  assert all(r.variables for r in rotations)
  assert len(flow.trainable_variables) == 3 * 3
  pca = tff.flows.gaussianization([4], num_layers=2, rotation="pca")
  assert not pca.bijectors[1].trainable_variables


def test_invalid_arguments_and_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="num_components"):
    tff.bijectors.MarginalGaussianization(2, num_components=0)
  with pytest.raises(ValueError, match="bandwidth"):
    tff.bijectors.MarginalGaussianization(2, bandwidth_factor=-1.)
  with pytest.raises(ValueError, match="event_size"):
    tff.bijectors.MarginalGaussianization([2, 2])
  with pytest.raises(ValueError, match="init"):
    tff.bijectors.HouseholderRotation(3, init="identity")
  with pytest.raises(ValueError, match="num_reflections"):
    tff.bijectors.HouseholderRotation(3, num_reflections=2, init="pca")
  with pytest.raises(ValueError, match="rotation"):
    tff.flows.gaussianization([3], rotation="bogus")
  with pytest.raises(ValueError, match="data_init"):
    tff.flows.gaussianization([3], rotation="pca", data_init=False)
  with pytest.raises(ValueError, match=r"event_shape \[D\]"):
    tff.flows.gaussianization([2, 2])
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    tff.flows.rbig(np.zeros(5, np.float32), num_layers=1)
  bij = tff.bijectors.MarginalGaussianization(3, data_init=False)
  with pytest.raises(ValueError, match="event shape"):
    bij.inverse(tf.zeros([4, 2]))
  with pytest.raises(TypeError, match="float64"):
    bij.inverse(tf.zeros([4, 3], tf.float64))
  checked = tff.bijectors.MarginalGaussianization(3, data_init=False, validate_args=True)
  with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
    checked.inverse(tf.constant([[0., np.nan, 1.]], tf.float32))


@pytest.mark.parametrize("seed,scale", [(3, 1.), (4, 2.), (5, 3.)])
def test_sampling_round_trips_for_random_variables(seed, scale):
  """Every sample is the exact inverse: the solver converges for any mixture (it used to
  bounce between the ends of its bracket and return points off by O(0.1) in logit space)."""
  bij = tff.bijectors.MarginalGaussianization(2, num_components=8, data_init=False,
                                              dtype=tf.float64)
  tff.testing.randomize_variables(bij, scale, seed=seed)
  z = tf.constant(np.random.default_rng(1).normal(size=(4000, 2)) * 3.)
  x = bij.forward(z)
  np.testing.assert_allclose(bij.inverse(tf.constant(np.array(x))), z, atol=1e-8, rtol=1e-8)
