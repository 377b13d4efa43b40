"""Flows as parts of larger models: JointDistribution latents, VI surrogates, a VAE prior."""

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows as tff

tfd, tfb = tfp.distributions, tfp.bijectors


def _flow_latent(seed=0):
  flow = tff.flows.realnvp([2], num_layers=2, hidden_units=[8], seed=seed)
  tff.testing.randomize_variables(flow, scale=0.3, seed=seed)
  return tff.flows.distribution(flow, [2])


def _flow_log_prob_by_jacobian(latent, z):
  """log N(f^-1(z)) + log|det d f^-1 / dz| from an autodiff Jacobian and slogdet."""
  z = tf.constant(np.array(z))
  with tf.GradientTape() as tape:
    tape.watch(z)
    u = latent.bijector.inverse(z)
  jac = tape.batch_jacobian(u, z).numpy().astype(np.float64)
  u = u.numpy().astype(np.float64)
  return scipy.stats.norm.logpdf(u).sum(-1) + np.linalg.slogdet(jac)[1]


def _emission_loc(z):
  return tf.concat([z, z[..., :1] * z[..., 1:]], -1)


def test_joint_sequential_log_prob_and_sample():
  latent = _flow_latent()
  joint = tfd.JointDistributionSequential([
      latent,
      lambda z: tfd.Independent(tfd.Normal(_emission_loc(z), 0.5), 1),
  ])
  z, x = joint.sample(2000, seed=[3, 4])
  assert z.shape == [2000, 2] and x.shape == [2000, 3]
  # The flow's variables are the joint's (tf.Module traversal).
  ids = {id(v) for v in joint.trainable_variables}
  assert ids == {id(v) for v in latent.trainable_variables} and ids

  zn, xn = z.numpy()[:20].astype(np.float64), x.numpy()[:20].astype(np.float64)
  loc = np.concatenate([zn, zn[:, :1] * zn[:, 1:]], -1)
  manual = (_flow_log_prob_by_jacobian(latent, z.numpy()[:20])
            + scipy.stats.norm.logpdf(xn, loc, 0.5).sum(-1))
  got = joint.log_prob([tf.constant(z.numpy()[:20]), tf.constant(x.numpy()[:20])])
  np.testing.assert_allclose(got, manual, rtol=1e-4, atol=1e-3)

  # Samples: x | z has the emission's law, and z has the flow's law.
  resid = (x.numpy() - _emission_loc(z).numpy()) / 0.5
  np.testing.assert_allclose(resid.mean(0), 0., atol=0.1)
  np.testing.assert_allclose(resid.std(0), 1., atol=0.06)
  ref = latent.sample(4000, seed=[5, 6]).numpy()
  for k in range(2):
    assert scipy.stats.ks_2samp(z.numpy()[:, k], ref[:, k]).pvalue > 1e-3


def test_joint_named_flow_trains_inside_the_model():
  latent = _flow_latent(seed=1)
  joint = tfd.JointDistributionNamed(dict(
      z=latent,
      x=lambda z: tfd.Independent(tfd.Normal(_emission_loc(z), 0.5), 1)))
  sample = joint.sample(8, seed=[1, 2])
  assert set(sample) == {"z", "x"} and sample["x"].shape == [8, 3]
  lp = joint.log_prob(sample)
  expected = latent.log_prob(sample["z"]) + tfd.Independent(
      tfd.Normal(_emission_loc(sample["z"]), 0.5), 1).log_prob(sample["x"])
  np.testing.assert_allclose(lp, expected, rtol=1e-5, atol=1e-5)

  # Maximum likelihood of the joint on data moves every flow variable.
  data = {k: tf.constant(np.array(v)) for k, v in sample.items()}
  variables = joint.trainable_variables
  before = [v.numpy().copy() for v in variables]
  step = tff.train.make_train_step(lambda: -tf.reduce_mean(joint.log_prob(data)),
                                   keras.optimizers.Adam(0.05), variables, jit_compile=False)
  losses = [float(step()) for _ in range(10)]
  assert losses[-1] < losses[0]
  assert all(np.any(b != v.numpy()) for b, v in zip(before, variables))


def _surrogate(kind, dim):
  """q = Shift o Scale o flow of N(0, I): the layout of examples/vi_posterior.py."""
  affine = [tfb.Shift(tf.Variable(tf.zeros(dim))),
            tfb.Scale(tfp.util.TransformedVariable(tf.ones(dim), tfb.Softplus()))]
  flow = {"mean_field": [],
          "iaf": [tff.flows.iaf([dim], num_layers=1, hidden_units=[8], seed=0)],
          "realnvp": [tff.flows.realnvp([dim], num_layers=2, hidden_units=[8], seed=0)]}[kind]
  if kind == "iaf":
    for v in flow[0].trainable_variables:  # MADE starts from Glorot weights: near the identity
      v.assign(0.1 * v)
  return tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0., 1.), [dim]),
                                     tfb.Chain(affine + flow))


def _trains_every_variable(surrogate, fit):
  target = tff.datasets.funnel(4)
  before = [v.numpy().copy() for v in surrogate.trainable_variables]
  losses = np.asarray(fit(target, surrogate))
  assert np.all(np.isfinite(losses)) and losses[-10:].mean() < losses[:10].mean()
  assert all(np.any(b != v.numpy()) for b, v in zip(before, surrogate.trainable_variables))
  # The one-pass log-density of the surrogate's samples is its density (IAF masks intact).
  x, log_q = surrogate.experimental_sample_and_log_prob(16, seed=[2, 3])
  np.testing.assert_allclose(log_q, surrogate.log_prob(tf.constant(np.array(x))),
                             rtol=1e-4, atol=1e-4)
  # The funnel is normalised: -loss is an ELBO <= log Z = 0 (up to Monte-Carlo error).
  w, log_q = surrogate.experimental_sample_and_log_prob(4000, seed=[4, 5])
  d = (target.log_prob(w) - log_q).numpy()
  assert d.mean() < 3 * d.std() / np.sqrt(d.size)


@pytest.mark.parametrize("kind", ["iaf", "realnvp", "mean_field"])
def test_flow_surrogates_with_tfp_vi(kind):
  """tfp.vi.fit_surrogate_posterior trains flow surrogates (a tf_keras optimizer applies the
  MADE masks' constraints)."""
  import tf_keras  # pylint: disable=import-outside-toplevel

  def fit(target, surrogate):
    return tfp.vi.fit_surrogate_posterior(
        target.log_prob, surrogate, optimizer=tf_keras.optimizers.Adam(1e-2), num_steps=60,
        sample_size=32, seed=tf.constant([0, 1])).numpy()

  _trains_every_variable(_surrogate(kind, 4), fit)


def test_flow_surrogate_with_tff_train():
  """The same with tff.train.make_vi_step and a Keras 3 optimizer (MADE constraints applied)."""
  def fit(target, surrogate):
    step = tff.train.make_vi_step(surrogate, target.log_prob, keras.optimizers.Adam(1e-2), 32,
                                  jit_compile=False)
    return [float(step(tf.constant([0, i]))) for i in range(60)]

  _trains_every_variable(_surrogate("iaf", 4), fit)


def test_vae_with_flow_prior_trains_every_variable():
  """Keras 3 encoder/decoder and a flow prior (tf.Variables) trained jointly on -ELBO."""
  rng = np.random.default_rng(0)
  x = (rng.uniform(size=(256, 16)) < np.linspace(0.1, 0.9, 16)).astype(np.float32)
  encoder = keras.Sequential([keras.Input([16]), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(4)])
  decoder = keras.Sequential([keras.Input([2]), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(16)])
  prior = tff.flows.distribution(tff.flows.realnvp([2], num_layers=2, hidden_units=[8]), [2])

  def elbo(xb, seed):
    out = encoder(xb)
    q = tfd.MultivariateNormalDiag(out[:, :2], tf.math.softplus(out[:, 2:]) + 1e-4)
    z = q.sample(seed=seed)
    log_lik = tfd.Independent(tfd.Bernoulli(logits=decoder(z)), 1).log_prob(xb)
    return log_lik + prior.log_prob(z) - q.log_prob(z)

  variables = (encoder.trainable_weights + decoder.trainable_weights
               + list(prior.trainable_variables))
  assert len(prior.trainable_variables) > 0
  before = [np.array(v) for v in variables]
  step = tff.train.make_train_step(lambda xb, s: -tf.reduce_mean(elbo(xb, s)),
                                   keras.optimizers.Adam(3e-3), variables, jit_compile=False)
  losses = np.array([float(step(tf.constant(x[rng.integers(0, 256, 32)]), tf.constant([0, i])))
                     for i in range(60)])
  assert np.all(np.isfinite(losses)) and losses[-10:].mean() < losses[:10].mean()
  changed = [np.any(b != np.array(v)) for b, v in zip(before, variables)]
  assert all(changed), [v.name for v, c in zip(variables, changed) if not c]
  # The ELBO is a lower bound on log p(x) <= 0 for binary data.
  assert np.all(elbo(tf.constant(x), tf.constant([1, 1])).numpy() < 0.)
