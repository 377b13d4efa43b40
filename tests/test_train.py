"""The shared training steps: maximum likelihood, reverse KL, batched log-densities."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows as tff

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
  dist = tff.flows.distribution(tff.flows.maf([3], num_layers=1, hidden_units=[8]), [3])
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
