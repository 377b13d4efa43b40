"""The shared training steps: maximum likelihood, reverse KL, batched log-densities."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows as tff

tfb = tfp.bijectors
tfd = tfp.distributions


def _data(n=512, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, 2)) * [2., 0.5] + [1., -1.]).astype(np.float32)


def test_fit_lowers_the_nll_and_batched_log_prob_matches():
  x = _data()
  dist = tff.flows.distribution(tff.flows.realnvp([2], num_layers=2, hidden_units=[16]), [2])
  before = -np.mean(tff.train.batched_log_prob(dist, x, batch_size=100))
  losses = tff.train.fit(dist, x, optimizer=keras.optimizers.Adam(1e-2), steps=150,
                         batch_size=128, jit_compile=False)
  after = tff.train.batched_log_prob(dist, x, batch_size=100)
  assert len(losses) == 150 and np.all(np.isfinite(losses))
  assert -np.mean(after) < before - 0.5
  np.testing.assert_allclose(after, dist.log_prob(x).numpy(), rtol=1e-5, atol=1e-5)


def test_ml_step_applies_variable_constraints():
  """TFP's MADE keeps its autoregressive masks in kernel constraints."""
  made = tfb.AutoregressiveNetwork(params=2, hidden_units=[8], event_shape=[3])
  dist = tff.flows.distribution(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=made), [3])
  dist.log_prob(tf.zeros([1, 3]))  # builds the network's variables
  step = tff.train.make_ml_step(dist, keras.optimizers.Adam(0.1), jit_compile=False)
  constrained = [v for v in dist.trainable_variables if getattr(v, "constraint", None)]
  assert constrained
  for _ in range(3):
    step(tf.constant(np.random.default_rng(1).normal(size=(64, 3)), tf.float32))
  for v in constrained:
    np.testing.assert_array_equal(v.numpy(), v.constraint(tf.convert_to_tensor(v)).numpy())


def test_vi_step_fits_a_gaussian_target():
  target = tfd.MultivariateNormalDiag([1., -2.], [0.5, 2.])
  q = tff.flows.distribution(tff.flows.realnvp([2], num_layers=2, hidden_units=[16]), [2])
  step = tff.train.make_vi_step(q, target.log_prob, keras.optimizers.Adam(1e-2), 256,
                                jit_compile=False)
  losses = [float(step(tf.constant([i, 0], tf.int32))) for i in range(300)]
  # Reverse KL to a normalised target is >= 0 and reaches ~0 when q matches.
  assert np.mean(losses[-20:]) < 0.05 < losses[0]


def test_fit_checks_its_data():
  dist = tff.flows.distribution(tff.flows.realnvp([2], num_layers=1, hidden_units=[4]), [2])
  with pytest.raises(ValueError, match="no training data"):
    tff.train.fit(dist, np.zeros([0, 2], np.float32), optimizer=keras.optimizers.Adam(),
                  steps=1, batch_size=4)
  with pytest.raises(ValueError, match="context rows"):
    tff.train.fit(dist, _data(8), context=np.zeros([4, 1]), optimizer=keras.optimizers.Adam(),
                  steps=1, batch_size=4)


def test_make_train_step_minimises_any_loss_and_clips():
  v = tf.Variable([3., -4.])
  step = tff.train.make_train_step(lambda t: tf.reduce_sum(tf.square(v - t)),
                                   keras.optimizers.SGD(0.1), [v], jit_compile=False)
  target = tf.constant([1., 2.])
  losses = [float(step(target)) for _ in range(100)]
  assert losses[0] == pytest.approx(40.) and losses[-1] < 1e-6
  np.testing.assert_allclose(v.numpy(), [1., 2.], atol=1e-4)
  # clip_norm bounds the update: SGD(1.0) with gradients clipped to norm 1 moves v by 1.
  w = tf.Variable([10., 0.])
  clipped = tff.train.make_train_step(lambda: tf.reduce_sum(tf.square(w)),
                                      keras.optimizers.SGD(1.), [w], clip_norm=1.)
  clipped()
  np.testing.assert_allclose(w.numpy(), [9., 0.], atol=1e-6)
  with pytest.raises(ValueError, match="no variables"):
    tff.train.make_train_step(lambda: tf.constant(0.), keras.optimizers.SGD(), [])


class _ForwardOnly(tfp.bijectors.Bijector):
  """y = x + shift with a forward log-det only: an inverse call is an error."""

  def __init__(self):
    self.shift = tf.Variable([0., 0.])
    super().__init__(forward_min_event_ndims=1, name="forward_only")

  def _forward(self, x):
    return x + self.shift

  def _forward_log_det_jacobian(self, x):
    return tf.zeros(tf.shape(x)[:-1])

  def _inverse(self, y):
    raise AssertionError("inverse called")


def test_vi_step_never_inverts_the_surrogate():
  """log q comes with the sample (an IAF is never inverted)."""
  q = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0., 1.), [2]), _ForwardOnly())
  target = tfd.MultivariateNormalDiag([1., -2.], [1., 1.])
  step = tff.train.make_vi_step(q, target.log_prob, keras.optimizers.Adam(0.1), 64,
                                jit_compile=False)
  losses = [float(step(tf.constant([i, 1], tf.int32))) for i in range(150)]
  # KL(N(s, I) || N(m, I)) = |s - m|^2 / 2: 2.5 at the start, ~0 once the shift is learnt.
  assert losses[0] == pytest.approx(2.5, abs=0.6)
  np.testing.assert_allclose(q.bijector.shift.numpy(), [1., -2.], atol=0.15)


def test_fit_runs_data_dependent_init_on_the_first_batch():
  x = np.random.default_rng(0).normal(3., 2., size=(64, 4, 4, 1)).astype(np.float32)
  dist = tff.flows.distribution(
      tff.flows.realnvp([4, 4, 1], num_layers=1, hidden_units=4, num_blocks=1, num_scales=1),
      [4, 4, 1])
  pending = tff.core.pending_data_init(dist.bijector)
  assert pending  # ActNorm waits for data
  # A first batch that is not finite is refused and leaves the layers uninitialised.
  bad = x[:8].copy()
  bad[0, 0, 0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN or inf"):
    tff.train.initialize(dist, bad)
  with pytest.raises(ValueError, match="stays uninitialised"):
    tff.train.initialize(dist, x[:0])
  assert tff.core.pending_data_init(dist.bijector) == pending
  losses = tff.train.fit(dist, x, optimizer=keras.optimizers.Adam(1e-3), steps=3, batch_size=16,
                         jit_compile=False)
  assert not tff.core.pending_data_init(dist.bijector) and np.all(np.isfinite(losses))
  assert tff.train.initialize(dist, x) == []  # nothing left to initialise


def test_batched_log_prob_with_context_matches_log_prob():
  rng = np.random.default_rng(2)
  x, c = rng.normal(size=(300, 2)).astype(np.float32), rng.normal(size=(300, 3)).astype(np.float32)
  flow = tff.flows.realnvp([2], num_layers=2, hidden_units=[8], conditional_shape=[3], seed=1)
  tff.testing.randomize_variables(flow, scale=0.3, seed=1)
  dist = tff.flows.distribution(flow, [2])
  expected = dist.log_prob(x, bijector_kwargs=tff.flows.conditional_kwargs(flow, c)).numpy()
  for jit in (False, True):
    got = tff.train.batched_log_prob(dist, x, batch_size=128, context=c, jit_compile=jit)
    assert got.dtype == np.float64 and got.shape == (300,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
