"""Flows as parts of larger models: JointDistribution latents, VI surrogates, a VAE prior."""

import importlib.util
import os

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows as tff

tfd, tfb = tfp.distributions, tfp.bijectors

_EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def _example(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(_EXAMPLES, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


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
  opt = tf.keras.optimizers.Adam(0.05)
  losses = []
  for _ in range(10):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(joint.log_prob(data))
    grads = tape.gradient(loss, variables)
    assert all(g is not None for g in grads)
    opt.apply_gradients(zip(grads, variables))
    losses.append(float(loss))
  assert losses[-1] < losses[0]
  assert all(np.any(b != v.numpy()) for b, v in zip(before, variables))


def test_vi_targets_match_numpy():
  vi = _example("vi_posterior")
  target, dim = vi.logistic_regression_target()
  from sklearn.datasets import load_breast_cancer
  x, y = load_breast_cancer(return_X_y=True)
  x = np.c_[np.ones(len(x)), (x - x.mean(0)) / x.std(0)]
  w = np.random.default_rng(0).normal(size=(3, dim)).astype(np.float32)
  logits = w.astype(np.float64) @ x.T
  manual = (scipy.stats.norm.logpdf(w).sum(-1)
            + np.sum(y * logits - np.logaddexp(0., logits), -1))
  np.testing.assert_allclose(target(w), manual, rtol=1e-4)
  np.testing.assert_allclose(target(w[0]), manual[0], rtol=1e-4)

  funnel, d = vi.funnel_target(5)
  w = np.random.default_rng(1).normal(size=(4, d)).astype(np.float32)
  manual = (scipy.stats.norm.logpdf(w[:, 0], 0., 3.)
            + scipy.stats.norm.logpdf(w[:, 1:], 0., np.exp(w[:, :1] / 2.)).sum(-1))
  np.testing.assert_allclose(funnel(w), manual, rtol=1e-5)


@pytest.mark.parametrize("kind", ["iaf", "realnvp", "mean_field"])
def test_vi_surrogates_train_every_variable(kind):
  vi = _example("vi_posterior")
  target, dim = vi.funnel_target(4)
  surrogate = vi.make_surrogate(kind, dim, seed=0, num_layers=1, hidden_units=[8])
  before = [v.numpy().copy() for v in surrogate.trainable_variables]
  losses = tfp.vi.fit_surrogate_posterior(
      target, surrogate, optimizer=vi.tf_keras.optimizers.Adam(1e-2), num_steps=60,
      sample_size=32, seed=tf.constant([0, 1]))
  losses = losses.numpy()
  assert np.all(np.isfinite(losses)) and losses[-10:].mean() < losses[:10].mean()
  assert all(np.any(b != v.numpy()) for b, v in zip(before, surrogate.trainable_variables))
  # The one-pass log-density of the surrogate's samples is its density (IAF masks intact).
  x, log_q = tff.distill.sample_and_log_prob(surrogate, 16, seed=[2, 3])
  np.testing.assert_allclose(log_q, surrogate.log_prob(tf.constant(np.array(x))),
                             rtol=1e-4, atol=1e-4)
  elbo, se = vi.elbo(target, surrogate, num_samples=2000)
  assert np.isfinite(elbo) and elbo < 3 * se  # the funnel is normalised: ELBO <= 0


def test_vae_flow_prior_every_variable_trains():
  vae_lib = _example("vae_prior")
  x_train, x_test = vae_lib.load_data()
  assert x_train.shape[1] == 64 and set(np.unique(x_train)) <= {0., 1.}
  vae = vae_lib.VAE("flow", latent_dim=2, hidden=16, flow_layers=2, flow_hidden=[8])
  variables = vae.trainable_variables
  n_keras = len(vae.encoder.trainable_weights) + len(vae.decoder.trainable_weights)
  assert len(vae.prior.trainable_variables) > 0 and len(variables) > n_keras
  before = [np.array(v) for v in variables]
  losses = vae_lib.train(vae, x_train, num_steps=40, batch_size=32, learning_rate=3e-3,
                         verbose=False)
  assert np.all(np.isfinite(losses)) and losses[-10:].mean() < losses[:10].mean()
  changed = [np.any(b != np.array(v)) for b, v in zip(before, variables)]
  assert all(changed), [v.name for v, c in zip(variables, changed) if not c]
  elbo, iwae = vae_lib.evaluate(vae, x_test[:50], num_samples=20)
  assert elbo.shape == (50,) and np.all(iwae >= elbo - 1e-4)  # IWAE bound >= ELBO
  # The ELBO is a lower bound on log p(x) <= 0 for binary data.
  assert np.all(elbo < 0.)
