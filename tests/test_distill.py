"""Probability-density distillation (tff.distill) against closed-form ground truth."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows as tff

tfd, tfb = tfp.distributions, tfp.bijectors

_L = np.array([[1.5, 0., 0.], [0.8, 0.5, 0.], [-0.6, 0.3, 0.7]], np.float32)
_LOC = np.array([1., -2., 0.5], np.float32)


def _gaussian_teacher():
  return tfd.MultivariateNormalTriL(loc=_LOC, scale_tril=_L)


def _iaf_student(d=3, seed=2):
  return tff.flows.distribution(tff.flows.iaf([d], num_layers=2, hidden_units=[16], seed=seed),
                                [d])


def _shrink(dist, factor):
  # TFP's MADE starts with Glorot weights everywhere (its log-scales are unbounded): shrink
  # them so that a synthetic flow stays a tame density.
  for v in dist.trainable_variables:
    v.assign(factor * v)
  return dist


def _maf_teacher(d=3):
  teacher = tff.flows.distribution(tff.flows.maf([d], num_layers=2, hidden_units=[16], seed=1),
                                   [d])
  tff.testing.randomize_variables(teacher.bijector, scale=0.1, seed=1)
  return _shrink(teacher, 0.5)


def test_sample_and_log_prob_matches_sequential_inverse():
  student = _iaf_student()
  tff.testing.randomize_variables(student.bijector, scale=0.1, seed=3)
  x, log_q = tff.distill.sample_and_log_prob(student, 64, seed=[4, 5])
  assert x.shape == [64, 3] and log_q.shape == [64]
  # Fresh tensor: the bijector cache must not answer the inverse.
  expected = student.log_prob(tf.constant(np.array(x)))
  np.testing.assert_allclose(log_q, expected, rtol=1e-4, atol=1e-4)


class _ForwardOnly(tfb.Bijector):
  """y = 2x + 1 with a forward log-det only: an inverse call is an error."""

  def __init__(self):
    super().__init__(forward_min_event_ndims=1, name="forward_only")

  def _forward(self, x):
    return 2. * x + 1.

  def _forward_log_det_jacobian(self, x):
    return tf.fill(tf.shape(x)[:-1], 3. * np.log(2.).astype(np.float32))

  def _inverse(self, y):
    raise AssertionError("inverse called")


def test_sample_and_log_prob_never_inverts_and_nests():
  inner = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0., 1.), [3]), _ForwardOnly())
  outer = tfd.TransformedDistribution(inner, tfb.Shift(-1.))
  x, log_q = tff.distill.sample_and_log_prob(outer, 10, seed=[1, 2])
  # x = 2 z: the density of N(0, 4 I) in 3-D.
  expected = tfd.MultivariateNormalDiag(tf.zeros(3), 2. * tf.ones(3)).log_prob(x)
  np.testing.assert_allclose(log_q, expected, rtol=1e-5, atol=1e-5)


def test_kl_estimate_matches_closed_form():
  # Student: an affine flow with random lower-triangular scale; KL between Gaussians is exact.
  rng = np.random.default_rng(0)
  loc = rng.normal(size=3).astype(np.float32)
  tril = np.tril(rng.normal(size=(3, 3))).astype(np.float32) * 0.5 + np.eye(3, dtype=np.float32)
  student = tfd.TransformedDistribution(
      tfd.Sample(tfd.Normal(0., 1.), [3]),
      tfb.Chain([tfb.Shift(tf.Variable(loc)), tfb.ScaleMatvecTriL(tf.Variable(tril))]))
  teacher = _gaussian_teacher()
  exact = tfd.kl_divergence(tfd.MultivariateNormalTriL(loc, tril), teacher).numpy()
  est, se = tff.distill.kl_estimate(student, teacher, num_samples=20_000, seed=7)
  assert se > 0
  assert abs(est - exact) < 5 * se, (est, exact, se)


def test_distillation_fits_gaussian_teacher():
  teacher, student = _gaussian_teacher(), _iaf_student()
  before, _ = tff.distill.kl_estimate(student, teacher, 4000, seed=1)
  result = tff.distill.density_distillation(teacher, student, num_steps=400, batch_size=128,
                                            learning_rate=1e-2, seed=0, eval_samples=4000)
  assert result.history.shape == (400,)
  assert before > 10.
  assert result.kl < 0.2 and result.kl_stderr < 0.05, (result.kl, result.kl_stderr)
  assert result.history[-50:].mean() < 0.05 * result.history[:50].mean()
  # The student's moments match the teacher's.
  x = student.sample(20_000, seed=3).numpy()
  np.testing.assert_allclose(x.mean(0), _LOC, atol=0.15)
  cov = _L @ _L.T
  assert np.linalg.norm(np.cov(x.T) - cov) < 0.3 * np.linalg.norm(cov)


class _PlainSGD:
  """An optimiser that ignores variable constraints (distillation must apply them)."""

  def apply_gradients(self, grads_and_vars):
    for g, v in grads_and_vars:
      v.assign_sub(0.1 * g)


def test_teacher_untouched_and_student_stays_autoregressive():
  teacher, student = _maf_teacher(), _shrink(_iaf_student(), 0.1)
  before = [v.numpy().copy() for v in teacher.trainable_variables]
  s_before = [v.numpy().copy() for v in student.trainable_variables]
  result = tff.distill.density_distillation(teacher, student, num_steps=30, batch_size=64,
                                            optimizer=_PlainSGD(), seed=1, eval_samples=0)
  assert np.isnan(result.kl) and np.all(np.isfinite(result.history))
  for a, v in zip(before, teacher.trainable_variables):
    np.testing.assert_array_equal(a, v.numpy())
  # Every student variable moved (the masked kernels move only at their unmasked entries).
  assert all(np.any(a != v.numpy()) for a, v in zip(s_before, student.trainable_variables))
  # The MADE masks still hold: the one-pass log-prob equals the sequential inverse's.
  x, log_q = tff.distill.sample_and_log_prob(student, 64, seed=[9, 9])
  np.testing.assert_allclose(log_q, student.log_prob(tf.constant(np.array(x))),
                             rtol=1e-4, atol=1e-4)


def test_same_seed_same_run():
  runs = []
  for _ in range(2):
    teacher, student = _gaussian_teacher(), _iaf_student()
    runs.append(tff.distill.density_distillation(teacher, student, num_steps=5, batch_size=16,
                                                 seed=3, eval_samples=0).history)
  np.testing.assert_allclose(runs[0], runs[1], rtol=1e-5)


def test_bad_arguments():
  teacher, student = _gaussian_teacher(), _iaf_student()
  with pytest.raises(ValueError, match="same, fully known event shape"):
    tff.distill.density_distillation(teacher, _iaf_student(d=4), num_steps=1)
  with pytest.raises(ValueError, match="num_steps >= 1"):
    tff.distill.density_distillation(teacher, student, num_steps=0)
  with pytest.raises(ValueError, match="reparameterised"):
    tff.distill.density_distillation(
        teacher, tfd.Independent(tfd.Poisson(rate=tf.Variable([1., 2., 3.])), 1), num_steps=1)
  with pytest.raises(TypeError, match="dtypes differ"):
    tff.distill.density_distillation(
        tfd.MultivariateNormalDiag(tf.zeros(3, tf.float64)), student, num_steps=1)
  with pytest.raises(TypeError, match="tfd.Distribution"):
    tff.distill.density_distillation(teacher, student.bijector, num_steps=1)
  with pytest.raises(ValueError, match="share variables"):
    tff.distill.density_distillation(student, student, num_steps=1)


def test_divergence_is_reported_and_the_student_reset():
  # A teacher with no mass where the student samples: log_prob = -inf, a non-finite KL.
  teacher = tfd.Independent(tfd.Uniform(low=[-0.1] * 3, high=[0.1] * 3), 1)
  student = _iaf_student()
  before = [v.numpy().copy() for v in student.trainable_variables]
  with pytest.raises(FloatingPointError, match="step 0.*support.*reset"):
    tff.distill.density_distillation(teacher, student, num_steps=5, batch_size=16,
                                      eval_samples=0)
  for b, v in zip(before, student.trainable_variables):
    np.testing.assert_array_equal(b, v.numpy())
  # Still usable: it samples and scores finitely.
  x, log_q = tff.distill.sample_and_log_prob(student, 8, seed=[1, 1])
  assert np.all(np.isfinite(log_q))
