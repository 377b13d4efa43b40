"""Glow: the LU-parameterised invertible 1x1 convolution and the ``tff.flows.glow`` builder.

The bijector contract for both runs from tests/test_contract.py; here: the LU algebra against
numpy (matrix, determinant, inverse), invertibility for extreme variable values, TFP's
conventions (``parameters``, ``copy``, tensors used as given), the builder's structure, its
log-det against autodiff with initialised ActNorms, the additive and conditional variants,
``validate_args`` through the builder, errors, and a short ``FlowModel`` fit on real images.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows as tff
from test_image import assert_image_flow_exact

tfb = tfp.bijectors
InvertibleConv1x1 = tff.bijectors.InvertibleConv1x1


def _fresh(t):
  return tf.constant(np.array(t))


# InvertibleConv1x1.

def test_conv1x1_is_p_l_u_with_exact_log_det_and_inverse():
  conv = InvertibleConv1x1(5, seed=1, dtype=tf.float64)
  w0 = conv.matrix().numpy()
  np.testing.assert_allclose(w0 @ w0.T, np.eye(5), atol=1e-12)  # a rotation at init
  tff.testing.randomize_variables(conv, scale=0.7, seed=2)
  w = conv.matrix().numpy()
  p = np.eye(5)[:, conv.permutation]
  lower = np.tril(conv.lower.numpy(), -1) + np.eye(5)
  upper = np.triu(conv.upper.numpy(), 1) + np.diag(
      np.sign(np.diag(np.linalg.qr(np.random.default_rng(1).standard_normal((5, 5)))[0]) * 0.)
      + conv._sign.numpy() * np.exp(conv.log_diagonal.numpy()))
  np.testing.assert_allclose(w, p @ lower @ upper, atol=1e-12)
  sign, logdet = np.linalg.slogdet(w)
  assert sign != 0
  np.testing.assert_allclose(conv.forward_log_det_jacobian(np.zeros((2, 5)), event_ndims=1),
                             logdet, atol=1e-12)
  np.testing.assert_allclose(conv.inverse_matrix().numpy(), np.linalg.inv(w), atol=1e-10)
  x = np.random.default_rng(3).standard_normal((4, 3, 3, 5))
  y = conv.forward(x)
  np.testing.assert_allclose(y, x @ w.T, atol=1e-12)
  np.testing.assert_allclose(conv.inverse(_fresh(y)), x, atol=1e-12)
  # Image events: H * W copies of the per-pixel log-det.
  np.testing.assert_allclose(conv.forward_log_det_jacobian(x, event_ndims=3),
                             np.full([4], 9 * logdet), atol=1e-10)


def test_conv1x1_invertible_for_extreme_variables():
  conv = InvertibleConv1x1(4, seed=0, dtype=tf.float64)
  # det W = +-exp(sum(log_diagonal)), never 0, whatever the variables hold.
  conv.log_diagonal.assign([-30., 20., 0., -5.])
  conv.lower.assign(np.random.default_rng(0).normal(0., 10., (4, 4)))
  w = conv.matrix().numpy()
  assert np.isfinite(w).all()
  np.testing.assert_allclose(float(conv.forward_log_det_jacobian(np.zeros(4), 1)), -15.)
  np.testing.assert_allclose(np.linalg.slogdet(w)[1], -15., rtol=1e-8)
  # Round trips are as exact as the conditioning allows (here cond(W) ~ 1e4).
  conv.log_diagonal.assign([-4., 3., 0., -2.])
  conv.lower.assign(np.random.default_rng(0).normal(0., 2., (4, 4)))
  x = np.random.default_rng(1).standard_normal((3, 4))
  np.testing.assert_allclose(conv.inverse(_fresh(conv.forward(x))), x, atol=1e-9)


def test_conv1x1_parameters_copy_and_tensor_parameters():
  conv = InvertibleConv1x1(3, seed=4)
  tff.testing.randomize_variables(conv, seed=5)
  params = conv.parameters
  assert set(params) == {"channels", "lower", "upper", "log_diagonal", "permutation", "sign",
                         "seed", "validate_args", "dtype", "name"}
  for rebuilt in (type(conv)(**params), conv.copy()):
    assert rebuilt.lower is conv.lower and rebuilt.log_diagonal is conv.log_diagonal
    np.testing.assert_array_equal(rebuilt.matrix(), conv.matrix())
  # A tensor parameter is used as given: gradients reach the layer that produced it.
  raw = tf.Variable(tf.zeros([3]))
  with tf.GradientTape() as tape:
    amortised = InvertibleConv1x1(3, log_diagonal=2. * raw, seed=4)
    ldj = amortised.forward_log_det_jacobian(tf.zeros([3]), event_ndims=1)
  assert not amortised.trainable_variables[-1] is raw
  np.testing.assert_allclose(tape.gradient(ldj, raw), [2., 2., 2.])


def test_conv1x1_errors():
  with pytest.raises(ValueError, match="channels"):
    InvertibleConv1x1(0)
  with pytest.raises(ValueError, match="permutation"):
    InvertibleConv1x1(3, permutation=[0, 0, 1])
  with pytest.raises(ValueError, match="sign"):
    InvertibleConv1x1(3, sign=[1., 0., -1.])
  with pytest.raises(ValueError, match=r"shape \[3, 3\]"):
    InvertibleConv1x1(3, lower=tf.zeros([2, 2]))
  with pytest.raises(TypeError, match="float64"):
    InvertibleConv1x1(3, log_diagonal=tf.zeros([3], tf.float64))
  conv = InvertibleConv1x1(3)
  with pytest.raises(ValueError, match="expected event shape"):
    conv.forward(tf.zeros([2, 4]))
  with pytest.raises(TypeError, match="float64"):
    conv.inverse(np.zeros((2, 3)))


# The builder.

def test_glow_structure_shapes_and_errors():
  flow = tff.flows.glow([8, 8, 2], num_levels=2, num_steps=2, hidden_units=4, seed=0)
  names = [b.name for b in flow.bijectors]
  assert names[0].endswith("squeeze_inv") and names[1].endswith("actnorm")
  assert names[2].endswith("conv1x1") and names[3].endswith("coupling")
  assert names[-3].endswith("prior") and "factor_out" in names[-2]
  assert flow.forward_event_shape([8, 8, 2]) == [8, 8, 2]
  for shape in ([28, 28, 1], [32, 32, 3]):
    f = tff.flows.glow(shape, num_levels=2, num_steps=1, hidden_units=4)
    dist = tff.flows.distribution(f, shape)
    x = tf.random.normal([3] + shape)
    lp = dist.log_prob(x)
    assert lp.shape == (3,) and np.isfinite(lp).all()
    np.testing.assert_allclose(f.forward(_fresh(f.inverse(x))), x, atol=1e-4)
    assert dist.sample(2, seed=1).shape == [2] + shape
  with pytest.raises(ValueError, match="divisible by 8"):
    tff.flows.glow([28, 28, 1], num_levels=3)
  with pytest.raises(ValueError, match="coupling"):
    tff.flows.glow([8, 8, 1], coupling="spline")
  with pytest.raises(ValueError, match="num_steps|num_layers"):
    tff.flows.glow([8, 8, 1], num_steps=0)


@pytest.mark.parametrize("coupling", ["affine", "additive"])
def test_glow_log_det_vs_autodiff_with_initialised_actnorms(coupling):
  flow = tff.flows.glow([4, 4, 1], num_levels=2, num_steps=1, hidden_units=4, num_blocks=0,
                        coupling=coupling, dtype=tf.float64, seed=1)
  rng = np.random.default_rng(0)
  flow.inverse(tf.constant(rng.normal(size=(16, 4, 4, 1)) * 3. + 1.))  # ActNorm init
  assert not tff.core.pending_data_init(flow)
  tff.testing.randomize_variables(flow, scale=0.1, seed=2)
  z = tf.constant(rng.normal(size=(2, 4, 4, 1)))
  assert_image_flow_exact(flow, z)


def test_glow_additive_is_volume_preserving_apart_from_actnorm_and_conv():
  flow = tff.flows.glow([4, 4, 1], num_levels=1, num_steps=2, hidden_units=4,
                        coupling="additive", actnorm=False, dtype=tf.float64)
  tff.testing.randomize_variables(flow, scale=0.3, seed=3)
  convs = [b for b in flow.bijectors if isinstance(b, InvertibleConv1x1)]
  expected = 4 * sum(float(tf.reduce_sum(c.log_diagonal)) for c in convs)
  z = tf.constant(np.random.default_rng(1).normal(size=(3, 4, 4, 1)))
  np.testing.assert_allclose(flow.forward_log_det_jacobian(z, event_ndims=3), expected,
                             atol=1e-10)


def test_conditional_glow_and_validate_args():
  flow = tff.flows.glow([4, 4, 1], num_levels=2, num_steps=1, hidden_units=4,
                        conditional_shape=[2], validate_args=True, dtype=tf.float64)
  tff.testing.randomize_variables(flow, scale=0.1, seed=2)
  assert tff.flows.conditional_shape(flow) == (2,)
  dist = tff.flows.distribution(flow, [4, 4, 1])
  x = tf.constant(np.random.default_rng(3).normal(size=(3, 4, 4, 1)))
  kw = [tff.flows.conditional_kwargs(flow, tf.constant(c, tf.float64)) for c in
        (np.zeros((3, 2)), np.ones((3, 2)))]
  lp = [dist.log_prob(x, bijector_kwargs=k) for k in kw]
  assert not np.allclose(lp[0], lp[1])
  z = flow.inverse(x, **kw[1])
  np.testing.assert_allclose(flow.forward(_fresh(z), **kw[1]), x, atol=1e-10)
  bad = x.numpy()
  bad[0, 0, 0, 0] = np.nan
  with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or inf"):
    dist.log_prob(tf.constant(bad), bijector_kwargs=kw[0])


def test_glow_trains_with_flow_model_on_digits():
  """A short FlowModel fit of the Glow builder on real 8x8 digit images lowers the loss."""
  x_train, _ = tff.datasets.digits()
  u = tff.bijectors.dequantize(x_train[:256], 17, seed=0).numpy()
  flow = tfb.Chain([tff.bijectors.Dequantize(17), tff.bijectors.Logit(0.05),
                    tff.flows.glow([8, 8, 1], num_levels=1, num_steps=2, hidden_units=8,
                                   num_blocks=0)])
  model = tff.keras.FlowModel(tff.flows.distribution(flow, [8, 8, 1]))
  model.compile(keras.optimizers.Adam(5e-3), jit_compile=False)  # XLA-CPU convs: slower
  history = model.fit(u, batch_size=64, epochs=3, verbose=0)
  loss = history.history["loss"]
  assert np.isfinite(loss).all() and loss[-1] < loss[0] - 5., loss
  assert model.sample(2, seed=1).shape == (2, 8, 8, 1)
