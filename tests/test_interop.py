"""Our bijectors next to TFP's own, in one TransformedDistribution; training; checkpoints."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

import tfp_flows as tff

tfb, tfd = tfp.bijectors, tfp.distributions


def _mixed_flow(dtype=tf.float32, batchnorm=True):
  """Our couplings chained with TFP's MAF, Invert(MAF), Permute and BatchNormalization."""
  d = 4
  maf = tff.flows.maf([d], num_layers=1, hidden_units=[16], dtype=dtype, seed=1)
  iaf = tff.flows.iaf([d], num_layers=1, hidden_units=[16], dtype=dtype, seed=2)
  flow = tfb.Chain([
      tff.bijectors.AffineCoupling(tff.masks.half(d), tff.nets.MLP(2, 4, [16], dtype=dtype, seed=3),
                                   dtype=dtype, name="ours_affine"),
      tfb.Permute([3, 2, 1, 0]),
      maf,
      (tfb.BatchNormalization(tf_keras.layers.BatchNormalization(dtype=dtype), training=False,
                              name="batchnorm") if batchnorm else tfb.Identity()),
      tff.bijectors.AdditiveCoupling(tff.masks.alternating(d),
                                     tff.nets.MLP(2, 2, [16], dtype=dtype, seed=4),
                                     dtype=dtype, name="ours_additive"),
      iaf,
      tff.bijectors.Scaling([d], dtype=dtype),
  ])
  flow.inverse(tf.zeros([1, d], dtype))  # TFP builds its BatchNormalization layer lazily.
  return flow


def _data(n=512, seed=0):
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((n, 4))
  return np.stack([z[:, 0], z[:, 0] ** 2 + 0.3 * z[:, 1], np.sin(2 * z[:, 2]),
                   0.5 * z[:, 3] + z[:, 0]], 1).astype(np.float32)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_mixed_chain_contract(batchnorm):
  flow = _mixed_flow(tf.float64, batchnorm=batchnorm)
  tff.testing.randomize_variables(flow, scale=0.1, seed=5)
  x = np.random.default_rng(1).standard_normal((6, 4))
  # TFP's BatchNormalization needs exactly one batch axis: no sample shapes [] or [n, m].
  tff.testing.assert_bijector_contract(flow, tf.constant(x, tf.float64),
                                       check_sample_shapes=not batchnorm)


def test_mixed_chain_sample_and_log_prob_shapes():
  dist = tff.flows.distribution(_mixed_flow(batchnorm=False), [4])
  s = dist.sample([3, 5], seed=(1, 2))
  assert s.shape == [3, 5, 4]
  assert dist.log_prob(s).shape == [3, 5]
  assert np.all(np.isfinite(dist.log_prob(s).numpy()))


def test_gradient_tape_training_lowers_nll():
  flow = _mixed_flow()
  dist = tff.flows.distribution(flow, [4])
  x = tf.constant(_data())
  variables = dist.trainable_variables
  # Every part contributes variables: ours, TFP's MADE (tf_keras), BatchNorm, Scaling.
  assert len(variables) == 4 + 4 + 2 + 4 + 4 + 1
  opt = tf.keras.optimizers.Adam(3e-3)

  @tf.function(jit_compile=True)
  def step():
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(dist.log_prob(x))
    opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  first = float(step())
  for _ in range(150):
    last = float(step())
  assert last < first - 0.5, (first, last)
  # MADE's masks survive training (constraints applied): MAF still inverts exactly.
  y = flow.forward(x[:8])
  np.testing.assert_allclose(flow.inverse(tf.constant(y.numpy())), x[:8], atol=1e-3)


def test_checkpoint_round_trip_gives_identical_log_probs(tmp_path):
  flow = _mixed_flow()
  tff.testing.randomize_variables(flow, scale=0.1, seed=9)
  dist = tff.flows.distribution(flow, [4])
  x = tf.constant(_data(64, seed=3))
  want = dist.log_prob(x).numpy()
  path = tf.train.Checkpoint(flow=flow).save(str(tmp_path / "ckpt"))

  fresh = _mixed_flow()
  fresh_dist = tff.flows.distribution(fresh, [4])
  assert not np.allclose(fresh_dist.log_prob(x).numpy(), want)
  tf.train.Checkpoint(flow=fresh).restore(path).assert_consumed()
  # A fresh tensor: TFP's bijector cache would answer the same tensor from memory.
  np.testing.assert_array_equal(fresh_dist.log_prob(tf.constant(x.numpy())).numpy(), want)


def test_tfp_realnvp_and_ours_compose():
  tfp_nvp = tfb.RealNVP(num_masked=1, shift_and_log_scale_fn=tfb.real_nvp_default_template(
      hidden_layers=[8]))
  ours = tff.flows.realnvp([2], num_layers=2, hidden_units=[8])
  dist = tff.flows.distribution(tfb.Chain([ours, tfp_nvp]), [2])
  x = tf.random.normal([5, 2])
  assert dist.log_prob(x).shape == [5]
