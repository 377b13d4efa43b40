"""Coupling layers, masks, nets and builders: behaviour beyond the shared contract."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

import tfp_flows as tff

tfb, tfd = tfp.bijectors, tfp.distributions


def _affine(d=4, dtype=tf.float32, **kwargs):
  mask = tff.masks.half(d)
  net = tff.nets.MLP(int(mask.sum()), 2 * int((1 - mask).sum()), [8], dtype=dtype, seed=0)
  return tff.bijectors.AffineCoupling(mask, net, dtype=dtype, **kwargs)


# --- masks ---------------------------------------------------------------------------------

def test_masks_shapes_and_values():
  np.testing.assert_array_equal(tff.masks.half(5), [1, 1, 1, 0, 0])
  np.testing.assert_array_equal(tff.masks.alternating(4, invert=True), [0, 1, 0, 1])
  board = tff.masks.checkerboard([2, 2, 3])
  assert board.shape == (2, 2, 3) and board[0, 0, 0] == 1 and board[0, 1, 2] == 0
  ch = tff.masks.channel([2, 2, 4])
  np.testing.assert_array_equal(ch[1, 1], [1, 1, 0, 0])
  assert tff.masks.make("half", 4).sum() == 2
  np.testing.assert_array_equal(tff.masks.channel_pattern(ch), [1, 1, 0, 0])
  assert tff.masks.channel_pattern(board) is None  # varies over the pixels
  assert tff.masks.channel_pattern(tff.masks.half(4)) is None  # not an image mask


@pytest.mark.parametrize("call,match", [
    (lambda: tff.masks.half(1), "at least 2"),
    (lambda: tff.masks.checkerboard([4, 4]), r"\[H, W, C\]"),
    (lambda: tff.masks.channel([4, 4, 1]), "at least 2 channels"),
    (lambda: tff.masks.make("diagonal", 4), "unknown mask kind"),
    (lambda: tff.masks.validate_mask([1, 1]), "both"),
    (lambda: tff.masks.validate_mask([1, 0.5]), "0 or 1"),
])
def test_mask_errors(call, match):
  with pytest.raises(ValueError, match=match):
    call()


# --- bad input -----------------------------------------------------------------------------

def test_wrong_event_shape_is_named():
  bij = _affine(4)
  with pytest.raises(ValueError, match=r"expected event shape \[4\].*got shape \[3, 5\]"):
    bij.forward(tf.zeros([3, 5]))
  with pytest.raises(ValueError, match=r"expected event shape \[4\]"):
    bij.inverse(tf.zeros([3, 5]))
  dist = tff.flows.distribution(tff.flows.realnvp([4], num_layers=2, hidden_units=[8]), [4])
  with pytest.raises(ValueError, match="event shape"):
    dist.log_prob(tf.zeros([3, 5]))


def test_wrong_dtype_is_an_error():
  bij = _affine(4)
  with pytest.raises((TypeError, ValueError), match="float64|float32"):
    bij.forward(np.zeros([2, 4], np.float64))
  with pytest.raises((TypeError, ValueError), match="int"):
    bij.forward(np.zeros([2, 4], np.int32))


def test_conditioner_of_wrong_dtype_is_named():
  mask = tff.masks.half(4)
  net = tff.nets.MLP(2, 4, [8], dtype=tf.float64)
  with pytest.raises((TypeError, ValueError), match="conditioner fails .* dtype float32"):
    tff.bijectors.AffineCoupling(mask, net)
  with pytest.raises(TypeError, match="conditioner returned dtype float64, expected float32"):
    tff.bijectors.AffineCoupling(mask, lambda x: tf.zeros([1, 4], tf.float64))


def test_mask_of_wrong_size_for_conditioner_is_named():
  net = tff.nets.MLP(2, 4, [8])
  with pytest.raises(ValueError, match="conditioner output has last dim"):
    tff.bijectors.AffineCoupling(tff.masks.half(6), lambda x: tf.zeros([tf.shape(x)[0], 5]))
  with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
    tff.bijectors.AffineCoupling(tff.masks.half(6), net)  # net expects 2 inputs, gets 3


def test_nan_input_with_validate_args():
  bij = _affine(4, validate_args=True)
  x = np.zeros([2, 4], np.float32)
  x[1, 2] = np.nan
  with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or inf"):
    bij.inverse(tf.constant(x))
  dist = tff.flows.distribution(bij, [4])
  with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or inf"):
    dist.log_prob(tf.constant(x))


@pytest.mark.parametrize("call,exc,match", [
    (lambda: tff.flows.realnvp([4], num_layers=0), ValueError, "num_layers"),
    (lambda: tff.flows.realnvp([4, 2]), ValueError, r"\[D\]"),
    (lambda: tff.flows.nice([1]), ValueError, "at least 2"),
    (lambda: tff.flows.nice([4], hidden_units=[0]), ValueError, "hidden_units"),
    (lambda: tff.flows.realnvp([4], permutation="shuffle"), ValueError, "permutation"),
    (lambda: tff.flows.realnvp([4], dtype=tf.int32), TypeError, "floating"),
    (lambda: _affine(4, log_scale_bound=-1.), ValueError, "log_scale_bound"),
    (lambda: tff.bijectors.AffineCoupling(tff.masks.half(4), "net"), TypeError, "callable"),
    (lambda: tff.nets.MLP(2, 2, activation="swoosh"), ValueError, "activation"),
])
def test_invalid_hyper_parameters(call, exc, match):
  with pytest.raises(exc, match=match):
    call()


# --- behaviour -----------------------------------------------------------------------------

def test_zero_initialised_flows_start_at_identity():
  x = tf.random.normal([5, 6])
  # NICE's default networks are drawn in full (net_init="random"); "uniform" starts at zero.
  for flow in (tff.flows.realnvp([6], num_layers=3),
               tff.flows.nice([6], num_layers=3, net_init="uniform")):
    # Permutations cancel pairwise for an odd number of couplings... so compare densities.
    dist = tff.flows.distribution(flow, [6])
    base = tfd.Sample(tfd.Normal(0., 1.), [6])
    perm_back = flow.inverse(x)
    np.testing.assert_allclose(tf.sort(perm_back, -1), tf.sort(x, -1), atol=1e-6)
    np.testing.assert_allclose(dist.log_prob(x), base.log_prob(x), atol=1e-5)


def test_log_scale_is_bounded():
  mask = tff.masks.half(2)
  bij = tff.bijectors.AffineCoupling(
      mask, lambda x: tf.concat([tf.zeros_like(x), 1e4 * tf.ones_like(x)], -1),
      log_scale_bound=3.)
  ldj = bij.forward_log_det_jacobian(tf.ones([1, 2]), event_ndims=1)
  np.testing.assert_allclose(ldj, [3.], rtol=1e-6)
  unbounded = tff.bijectors.AffineCoupling(
      mask, lambda x: tf.concat([tf.zeros_like(x), 7. * tf.ones_like(x)], -1),
      log_scale_bound=None)
  np.testing.assert_allclose(unbounded.forward_log_det_jacobian(tf.ones([1, 2]), 1), [7.])


def test_conditioner_may_return_a_pair():
  bij = tff.bijectors.AffineCoupling(
      tff.masks.alternating(4), lambda x: (x, 0.1 * x), log_scale_bound=None)
  x = tf.constant([[1., 2., 3., 4.]])
  y = bij.forward(x)
  # kept: x0=1, x2=3; changed: x1 = 2 * exp(0.1 * 1) + 1, x3 = 4 * exp(0.3) + 3.
  np.testing.assert_allclose(y, [[1., 2 * np.exp(0.1) + 1, 3., 4 * np.exp(0.3) + 3]], rtol=1e-6)


def test_channel_mask_conditioner_sees_the_kept_channels_only():
  """A channel mask (here interleaved, [1, 0, 0, 1] at every pixel) hands the conditioner the
  kept channels and takes P * C_B channels back; the result is the affine map of the changed
  channels written out by hand, re-interleaved into the event's channel order."""
  seen = []
  def net(x_keep):  # [N, H, W, 2] -> shift, log-scale of the 2 changed channels
    seen.append(x_keep.shape.as_list())
    return tf.concat([x_keep[..., ::-1], 0.3 * x_keep], -1)
  mask = np.broadcast_to(np.array([1., 0., 0., 1.], np.float32), (3, 2, 4))
  bij = tff.bijectors.AffineCoupling(mask, net, log_scale_bound=None)
  x = tf.random.stateless_normal([5, 3, 2, 4], [1, 2])
  y = bij.forward(x)
  assert seen[-1] == [5, 3, 2, 2]
  a, b = x.numpy()[..., [0, 3]], x.numpy()[..., [1, 2]]
  expect = x.numpy().copy()
  expect[..., [1, 2]] = b * np.exp(0.3 * a) + a[..., ::-1]
  np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(bij.forward_log_det_jacobian(x, 3),
                             (0.3 * a).sum(axis=(1, 2, 3)), rtol=1e-5)


def test_transform_kept_moves_the_kept_entries_by_their_own_parameters():
  """transform_kept: y_A = f(x_A; phi) with learned constants phi, and the conditioner sees
  y_A; written out by hand for the affine transformer (bound 3)."""
  seen = []
  def net(y_keep):  # [N, 2] -> shift and raw log-scale of the 2 changed entries
    seen.append(y_keep.numpy().copy())
    return tf.concat([y_keep[:, ::-1], 0.5 * y_keep], -1)
  bij = tff.bijectors.AffineCoupling(tff.masks.alternating(4), net, transform_kept=True)
  assert bij.kept_params.shape == [2, 2] and bij.trainable_variables == (bij.kept_params,)
  x = tf.random.stateless_normal([5, 4], [3, 4])
  np.testing.assert_array_equal(bij.forward(x)[:, ::2], x.numpy()[:, ::2])  # zeros: identity
  phi = np.array([[0.3, -0.2], [0.4, -1.1]], np.float32)  # shifts; raw log-scales
  bij.kept_params.assign(phi)
  y = bij.forward(x).numpy()

  def bounded(s):
    return 3. * np.tanh(s / 3.)
  xa, xb = x.numpy()[:, ::2], x.numpy()[:, 1::2]
  ya = xa * np.exp(bounded(phi[1])) + phi[0]
  yb = xb * np.exp(bounded(0.5 * ya)) + ya[:, ::-1]
  np.testing.assert_allclose(seen[-1], ya, rtol=1e-6)
  np.testing.assert_allclose(y[:, ::2], ya, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(y[:, 1::2], yb, rtol=1e-5, atol=1e-6)
  fldj = bounded(phi[1]).sum() + bounded(0.5 * ya).sum(-1)
  np.testing.assert_allclose(bij.forward_log_det_jacobian(x, 1), fldj, rtol=1e-5)
  fresh = tf.constant(y)  # not the cached output tensor
  np.testing.assert_allclose(bij.inverse(fresh), x, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(bij.inverse_log_det_jacobian(tf.constant(y), 1), -fldj,
                             rtol=1e-5)
  # Copies share the variable, so they are the same map.
  for other in (bij.copy(), type(bij)(**bij.parameters)):
    assert other.kept_params is bij.kept_params
    np.testing.assert_array_equal(other.forward(x), y)
  # A tensor is used as given (amortised parameters): gradients reach what produced it.
  source = tf.Variable(phi)
  with tf.GradientTape() as tape:
    amortised = tff.bijectors.AffineCoupling(tff.masks.alternating(4), net,
                                             transform_kept=True, kept_params=2. * source)
    out = amortised.forward(x)
    total = tf.reduce_sum(out)
  np.testing.assert_allclose(out[:, ::2], xa * np.exp(bounded(2. * phi[1])) + 2. * phi[0],
                             rtol=1e-5, atol=1e-6)
  assert amortised.trainable_variables == ()
  assert np.all(np.isfinite(tape.gradient(total, source)))


@pytest.mark.parametrize("call,exc,match", [
    (lambda: tff.bijectors.AffineCoupling(tff.masks.checkerboard([2, 2, 1]),
                                          lambda x: tf.concat([x, x], -1), transform_kept=True),
     ValueError, "vector mask or a channel mask"),
    (lambda: tff.bijectors.AffineCoupling(tff.masks.half(4), lambda x: tf.concat([x, x], -1),
                                          transform_kept="yes"), TypeError, "must be a bool"),
    (lambda: tff.bijectors.AffineCoupling(tff.masks.half(4), lambda x: tf.concat([x, x], -1),
                                          transform_kept=True,
                                          kept_params=tf.zeros([2, 2], tf.float64)),
     TypeError, "expected float32"),
    (lambda: tff.bijectors.AffineCoupling(tff.masks.half(4), lambda x: tf.concat([x, x], -1),
                                          transform_kept=True,
                                          kept_params=tf.Variable(tf.zeros([2, 3]))),
     ValueError, "kept_params"),
    (lambda: tff.bijectors.AffineCoupling(tff.masks.half(4), lambda x: tf.concat([x, x], -1),
                                          transform_kept=True, kept_params=tf.zeros([5, 2, 2])),
     ValueError, "no batch dims"),
    (lambda: tff.bijectors.AffineCoupling(tff.masks.half(4), lambda x: tf.concat([x, x], -1),
                                          kept_params=tf.zeros([2, 2])),
     ValueError, "transform_kept is False"),
    (lambda: tff.flows.nsf([4], autoregressive=True, transform_kept=True), ValueError,
     "couplings only"),
])
def test_transform_kept_errors_are_named(call, exc, match):
  with pytest.raises(exc, match=match):
    call()


def test_keras3_layer_as_conditioner_trains_and_is_tracked():
  import keras
  net = keras.Sequential([keras.layers.Dense(16, activation="relu"),
                          keras.layers.Dense(4, kernel_initializer="zeros")])
  bij = tff.bijectors.AffineCoupling(tff.masks.half(4), net)
  names = {v.name for v in bij.trainable_variables}
  assert len(bij.trainable_variables) == 4, names
  dist = tff.flows.distribution(tfb.Chain([bij, tfb.Permute([3, 2, 1, 0])]), [4])
  assert len(dist.trainable_variables) == 4
  x = tf.constant(np.random.default_rng(0).normal(2., 0.5, (256, 4)), tf.float32)
  opt = keras.optimizers.Adam(1e-2)
  before = float(-tf.reduce_mean(dist.log_prob(x)))
  for _ in range(30):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(dist.log_prob(x))
    grads = tape.gradient(loss, dist.trainable_variables)
    assert all(g is not None for g in grads)
    opt.apply_gradients(zip(grads, dist.trainable_variables))
  assert float(loss) < before - 0.5


def test_tf_keras_layer_as_conditioner_is_tracked():
  net = tf_keras.Sequential([tf_keras.layers.Dense(8, activation="tanh"), tf_keras.layers.Dense(4)])
  bij = tff.bijectors.AffineCoupling(tff.masks.half(4), net)
  assert len(bij.trainable_variables) == 4  # built eagerly by the bijector


def test_conditional_coupling_uses_context():
  flow = tff.flows.realnvp([2], num_layers=2, hidden_units=[8], conditional_shape=[3])
  tff.testing.randomize_variables(flow, seed=1)
  dist = tff.flows.distribution(flow, [2])
  x = tf.random.normal([4, 2])
  c1, c2 = tf.zeros([4, 3]), tf.ones([4, 3])
  lp1 = dist.log_prob(x, bijector_kwargs=tff.flows.conditional_kwargs(flow, c1))
  lp2 = dist.log_prob(x, bijector_kwargs=tff.flows.conditional_kwargs(flow, c2))
  assert lp1.shape == [4] and not np.allclose(lp1, lp2)
  # A single context broadcasts over the batch.
  lp3 = dist.log_prob(x, bijector_kwargs=tff.flows.conditional_kwargs(flow, tf.ones([3])))
  np.testing.assert_allclose(lp2, lp3, rtol=1e-5)
  with pytest.raises(ValueError, match="needs a conditional_input"):
    dist.log_prob(x)


def test_builders_seeded_and_float64():
  a = tff.flows.realnvp([4], num_layers=2, hidden_units=[8], seed=3, dtype=tf.float64)
  b = tff.flows.realnvp([4], num_layers=2, hidden_units=[8], seed=3, dtype=tf.float64)
  for va, vb in zip(a.trainable_variables, b.trainable_variables):
    assert va.dtype == tf.float64
    np.testing.assert_array_equal(va.numpy(), vb.numpy())
  assert len(tff.flows.nice([4], num_layers=3, hidden_units=[8]).trainable_variables) == 3 * 4 + 1


def test_random_permutation_option():
  flow = tff.flows.realnvp([6], num_layers=3, hidden_units=[8], permutation="random", seed=1)
  perms = [b for b in flow.bijectors if isinstance(b, tfb.Permute)]
  assert len(perms) == 2


# --- generalised coupling, MADE, MAF, builders (issues 11, 12, 13) ------------------------

def test_alternating_masks_replace_permutations_and_start_at_identity():
  flow = tff.flows.realnvp([5], num_layers=3, hidden_units=[8], mask="half")
  assert not any(isinstance(b, tfb.Permute) for b in flow.bijectors)
  assert [tuple(b.mask) for b in flow.bijectors[::-1]] == [
      (1, 1, 1, 0, 0), (0, 0, 0, 1, 1), (1, 1, 1, 0, 0)]
  x = tf.random.normal([4, 5])
  np.testing.assert_allclose(flow.forward(x), x, atol=1e-6)  # zero output layers


def test_alternating_mask_option_of_the_coupling_builders():
  # Alternating by default: the even entries condition the odd ones in the first layer, the
  # odd ones the even ones in the next (built as half masks between two permutations).
  x = tf.random.stateless_normal([3, 5], [0, 1])
  for builder in (tff.flows.realnvp, tff.flows.nsf, tff.flows.nice):
    one = builder([5], num_layers=1, hidden_units=[8], **(
        {"scaling": False} if builder is tff.flows.nice else {}))
    tff.testing.randomize_variables(one, seed=2)
    y = one.forward(x).numpy()
    np.testing.assert_array_equal(y[:, ::2], x.numpy()[:, ::2])
    assert not np.allclose(y[:, 1::2], x.numpy()[:, 1::2])
  # The coupling applied first to the data keeps the even entries for any number of layers
  # (mask_anchor="data", zuko's orientation); "latent" anchors the pattern at the base side.
  for layers, anchor, kept in [(2, "data", "even"), (3, "data", "even"),
                               (2, "latent", "odd"), (3, "latent", "even")]:
    flow = tff.flows.realnvp([5], num_layers=layers, hidden_units=[8], mask_anchor=anchor)
    tff.testing.randomize_variables(flow, seed=3)
    data_side = tfb.Chain(flow.bijectors[:2])  # the permutation and the data-side coupling
    y = data_side.inverse(x).numpy()  # the even entries first, then the odd ones
    evens, odds = x.numpy()[:, ::2], x.numpy()[:, 1::2]
    if kept == "even":
      np.testing.assert_array_equal(y[:, :3], evens)
      assert not np.allclose(y[:, 3:], odds)
    else:
      np.testing.assert_array_equal(y[:, 3:], odds)
      assert not np.allclose(y[:, :3], evens)
    assert isinstance(flow.bijectors[0], tfb.Permute)
    assert isinstance(flow.bijectors[-1], tfb.Permute)
  for builder in (tff.flows.nice, tff.flows.realnvp, tff.flows.nsf):
    assert builder([4], num_layers=2, mask="half").bijectors[0].mask.tolist() == [1, 1, 0, 0]
    assert builder([4], num_layers=2, mask="half", mask_anchor="latent").bijectors[
        0].mask.tolist() == [0, 0, 1, 1]
    assert [b.mask.tolist() for b in builder([2], num_layers=4).bijectors[:4]] == [
        [1, 0], [0, 1], [1, 0], [0, 1]]  # D = 2: the first layer on the data keeps x_0
  for bad in (lambda: tff.flows.realnvp([4], mask_anchor="base"),
              lambda: tff.flows.realnvp([4, 4, 1], mask_anchor="base"),  # images check it too
              lambda: tff.flows.nsf([4], autoregressive=True, mask_anchor="base")):
    with pytest.raises(ValueError, match="mask_anchor must be one of"):
      bad()
  with pytest.raises(ValueError, match="couplings only"):
    tff.flows.nsf([4], autoregressive=True, mask_anchor="latent")
  # A config saved before mask_anchor existed rebuilds the orientation it was trained with.
  config = tff.flows.get_config(tff.flows.nice([4], num_layers=2, hidden_units=[8]))
  assert config["kwargs"]["mask_anchor"] == "data"
  del config["kwargs"]["mask_anchor"]
  assert tff.flows.from_config(config).bijectors[1].mask.tolist() == [0, 0, 1, 1]
  # An autoregressive NSF saved before mask / mask_anchor existed loads (it takes neither).
  config = tff.flows.get_config(tff.flows.nsf([3], num_layers=2, hidden_units=[8],
                                              autoregressive=True))
  del config["kwargs"]["mask"], config["kwargs"]["mask_anchor"]
  assert len(tff.flows.from_config(config).bijectors) == 2
  with pytest.raises(ValueError, match="mask must be one of"):
    tff.flows.nice([4], mask="checkerboard")
  with pytest.raises(ValueError, match="couplings only"):
    tff.flows.nsf([4], autoregressive=True, mask="half")
  # A config saved before the argument existed rebuilds its half masks, not today's default.
  config = tff.flows.get_config(tff.flows.realnvp([4], num_layers=2, hidden_units=[8]))
  del config["kwargs"]["mask"], config["kwargs"]["mask_anchor"]  # neither existed then
  old = tff.flows.from_config(config)
  assert [tuple(b.mask) for b in old.bijectors[::-1]] == [(1, 1, 0, 0), (0, 0, 1, 1)]


@pytest.mark.parametrize("order", [None, [3, 1, 4, 2]])
def test_made_is_autoregressive_in_its_order_and_float64(order):
  made = tff.nets.MADE(4, 3, [7, 9], conditional_size=2, order=order, dtype=tf.float64,
                       seed=0, init="random")
  x = tf.constant(np.random.default_rng(0).normal(size=(5, 4)))
  c = tf.constant(np.random.default_rng(1).normal(size=(5, 2)))
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([x, c])
    out = made(x, conditional_input=c)
  assert out.dtype == tf.float64 and out.shape == [5, 12]
  jac = tape.batch_jacobian(out, x).numpy()  # [5, 12, 4]
  degree = np.arange(1, 5) if order is None else np.array(order)
  for p in range(3):
    for i in range(4):
      row = np.abs(jac[:, p * 4 + i, :]).max(0)
      allowed = degree < degree[i]
      assert np.all(row[~allowed] == 0.), (p, i, row)
      assert np.all(row[allowed] > 0.), (p, i, row)  # random init: every allowed path is used
  assert np.all(np.abs(tape.gradient(out, c).numpy()) > 0)


def test_made_with_fewer_hidden_units_than_entries_stays_autoregressive():
  """A 784-D MAF with 512 hidden units is the usual size: degrees spread over 1..D-1."""
  d = 10
  made = tff.nets.MADE(d, 2, [4, 3], activation="tanh", dtype=tf.float64, seed=0,
                       init="random")  # tanh: no dead units hide a connection
  x = tf.constant(np.random.default_rng(0).normal(size=(3, d)))
  with tf.GradientTape() as tape:
    tape.watch(x)
    out = made(x)
  jac = np.abs(tape.batch_jacobian(out, x).numpy()).max(0)  # [2d, d]
  for p in range(2):
    block = jac[p * d:(p + 1) * d]
    assert np.all(np.triu(block) == 0.), block  # output i sees only inputs < i
  assert np.any(jac[d - 1, d // 2:] > 0.)  # late inputs still reach the last outputs
  flow = tff.flows.maf([d], num_layers=2, hidden_units=[4])  # the builder accepts it too
  z = tf.random.normal([2, d])
  np.testing.assert_allclose(flow.inverse(tf.identity(flow.forward(z))), z, atol=1e-4)


def test_made_initialisations():
  x = tf.random.normal([3, 4])
  for init in ("uniform", "glorot"):
    made = tff.nets.MADE(4, 2, [8], init=init, seed=0)
    np.testing.assert_array_equal(made(x), 0.)  # zero output layer: the identity transform
  assert np.any(tff.nets.MADE(4, 2, [8], init="random", seed=0)(x) != 0.)
  mlp = tff.nets.MLP(2, 3, [16], init="uniform", seed=0)
  assert np.any(mlp.hidden[0].bias.numpy() != 0.)  # PyTorch-style biases spread the kinks
  assert np.all(tff.nets.MLP(2, 3, [16], init="glorot", seed=0).hidden[0].bias.numpy() == 0.)
  with pytest.raises(ValueError, match="init"):
    tff.nets.MLP(2, 3, init="he")


@pytest.mark.parametrize("builder", ["maf", "iaf", "nsf_ar"])
def test_float64_autoregressive_flows_are_float64_throughout(builder):
  """issue 11 item 5: log-det against slogdet of the float64 autodiff Jacobian to 1e-10."""
  if builder == "nsf_ar":
    flow = tff.flows.nsf([3], num_layers=2, hidden_units=[16], autoregressive=True,
                         dtype=tf.float64)
  else:
    flow = getattr(tff.flows, builder)([3], num_layers=2, hidden_units=[16], dtype=tf.float64)
  tff.testing.randomize_variables(flow, scale=0.3, seed=1)
  assert all(v.dtype == tf.float64 for v in flow.variables if v.dtype.is_floating)
  x = tf.constant(np.random.default_rng(2).normal(size=(6, 3)))
  ldj = flow.forward_log_det_jacobian(x, event_ndims=1)
  ref = tff.testing.autodiff_log_det(flow.forward, x, 1)
  np.testing.assert_allclose(ldj, ref, rtol=0, atol=1e-10)
  back = flow.inverse(tf.constant(flow.forward(x).numpy()))
  np.testing.assert_allclose(back, x, rtol=0, atol=1e-10)


@pytest.mark.parametrize("builder", ["nice", "realnvp", "maf", "iaf"])
def test_validate_args_through_the_builders(builder):
  flow = getattr(tff.flows, builder)([3], num_layers=2, hidden_units=[8], validate_args=True)
  assert all(b.validate_args for b in flow.bijectors)
  x = np.zeros([2, 3], np.float32)
  x[1, 2] = np.inf
  with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or inf"):
    tff.flows.distribution(flow, [3]).log_prob(x)


@pytest.mark.parametrize("builder", ["nice", "realnvp", "maf", "nsf"])
def test_wrong_event_size_is_an_error_when_the_static_shape_is_unknown(builder):
  flow = getattr(tff.flows, builder)([2], num_layers=2, hidden_units=[8])
  dist = tff.flows.distribution(flow, [2])
  log_prob = tf.function(dist.log_prob, input_signature=[tf.TensorSpec([None, None])],
                         autograph=False)
  assert log_prob(tf.zeros([4, 2])).shape == [4]
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected event shape \[2\]"):
    log_prob(tf.zeros([4, 3]))  # never truncated to the first 2 columns


def test_parameters_copy_and_equality_keep_the_same_variables():
  net = tff.nets.MLP(2, 4, [8], seed=0, init="random")
  mask = tff.masks.half(4)
  x = tf.random.normal([3, 4])
  for bij in (tff.bijectors.AffineCoupling(mask, net, log_scale_bound=2., name="a"),
              tff.bijectors.AdditiveCoupling(mask, tff.nets.MLP(2, 2, [8], seed=1,
                                                                 init="random"))):
    for other in (type(bij)(**bij.parameters), bij.copy()):
      assert set(other.parameters) == set(bij.parameters)
      assert other.conditioner is bij.conditioner and other.name == bij.name
      np.testing.assert_array_equal(other.forward(x), bij.forward(x))
      assert other == bij
  made = tff.nets.MADE(4, 2, [8], seed=0, init="random")
  maf = tff.bijectors.MaskedAutoregressiveFlow(params_fn=made, conditional_shape=None)
  assert set(maf.parameters) >= {"shift_and_log_scale_fn", "bijector_fn", "params_fn",
                                 "transformer", "conditional_shape", "dtype"}
  np.testing.assert_array_equal(maf.copy().inverse(x), maf.inverse(x))
  assert maf.copy().params_fn is made and maf.dtype == tf.float32
  tfp_made = tfb.AutoregressiveNetwork(params=2, event_shape=[4], hidden_units=[8])
  tfp_maf = tff.bijectors.MaskedAutoregressiveFlow(tfp_made)
  np.testing.assert_array_equal(tfp_maf.copy().inverse(x), tfp_maf.inverse(x))
  assert tfp_maf.dtype is None


def test_maf_rejects_bad_arguments_and_inputs():
  made = tff.nets.MADE(3, 2, [8])
  with pytest.raises(ValueError, match="not both"):
    tff.bijectors.MaskedAutoregressiveFlow(made, params_fn=made)
  with pytest.raises(ValueError, match="go with params_fn"):
    tff.bijectors.MaskedAutoregressiveFlow(made, transformer="spline")
  maf = tff.bijectors.MaskedAutoregressiveFlow(params_fn=made, transformer="spline")
  with pytest.raises(ValueError, match="needs 23 x 3 = 69"):
    maf.inverse(tf.zeros([2, 3]))
  maf = tff.bijectors.MaskedAutoregressiveFlow(params_fn=made)
  with pytest.raises(TypeError, match="float64"):
    maf.inverse(np.zeros([2, 3]))
  with pytest.raises(ValueError, match=r"expected event shape \[3\]"):
    maf.inverse(tf.zeros([2, 4]))


# --- the affine map's clamp and direction --------------------------------------------------

def test_affine_clamps_and_directions_are_the_maps_written_out():
  Affine = tff.bijectors.transformers.Affine
  rng = np.random.default_rng(3)
  x = tf.constant(rng.standard_normal((6, 4)))
  t, raw = rng.standard_normal((6, 4)), 4. * rng.standard_normal((6, 4))
  params = tf.constant(np.stack([t, raw], axis=-2))
  for clamp, s in (("tanh", 2. * np.tanh(raw / 2.)), ("softsign", raw / (1. + np.abs(raw) / 2.))):
    forward, inverse = Affine(2., clamp), Affine(2., clamp, direction="inverse")
    y, log_det = forward.forward(x, params)
    np.testing.assert_allclose(y, x * np.exp(s) + t, rtol=1e-12)
    np.testing.assert_allclose(log_det, s, rtol=1e-12)
    # direction="inverse": the density direction is x exp(s) + t, sampling its inverse.
    z, log_det = inverse.inverse(x, params)
    np.testing.assert_allclose(z, x * np.exp(s) + t, rtol=1e-12)
    np.testing.assert_allclose(log_det, s, rtol=1e-12)
    x_back, log_det_back = inverse.forward(z, params)
    np.testing.assert_allclose(x_back, x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(log_det_back, -s, rtol=1e-12)
    assert np.all(np.abs(s) < 2.)
  # Huge raw log-scales stay inside the bound with either clamp (no overflow, no NaN).
  huge = tf.constant([[[0.], [1e30]]])
  for clamp in ("tanh", "softsign"):
    _, log_det = Affine(3., clamp, "inverse").inverse(tf.ones([1, 1]), huge)
    np.testing.assert_allclose(log_det, [[3.]], rtol=1e-6)
  assert Affine(clamp="softsign") != Affine() != Affine(direction="inverse")
  for bad, match in ((dict(clamp="sigmoid"), "clamp must be"),
                     (dict(direction="backward"), "direction must be")):
    with pytest.raises(ValueError, match=match):
      Affine(**bad)


@pytest.mark.parametrize("build", [
    lambda **kw: tff.flows.realnvp([3], num_layers=2, hidden_units=[8], **kw),
    lambda **kw: tff.flows.maf([3], num_layers=2, hidden_units=[8], **kw),
    lambda **kw: tff.flows.iaf([3], num_layers=2, hidden_units=[8], **kw)],
    ids=["realnvp", "maf", "iaf"])
def test_affine_flows_take_the_clamp_and_direction_and_old_configs_keep_theirs(build):
  def maps(flow):
    layers = [getattr(b, "bijector", b) for b in flow.bijectors]  # iaf: tfb.Invert layers
    return {(b.transformer.clamp, b.transformer.direction) for b in layers
            if hasattr(b, "transformer")}
  assert maps(build()) == {("tanh", "inverse")}  # the default: affine data -> latent
  assert maps(build(affine_direction="forward")) == {("tanh", "forward")}
  flow = build(log_scale_clamp="softsign", affine_direction="inverse")
  assert maps(flow) == {("softsign", "inverse")}
  # A config round-trips; one saved before the arguments existed rebuilds the map it was
  # trained with (base -> data, tanh), not today's default.
  config = tff.flows.get_config(flow)
  assert maps(tff.flows.from_config(config)) == {("softsign", "inverse")}
  del config["kwargs"]["log_scale_clamp"], config["kwargs"]["affine_direction"]
  assert maps(tff.flows.from_config(config)) == {("tanh", "forward")}
  for bad, match in ((dict(affine_direction="backward"), "affine_direction must be"),
                     (dict(log_scale_clamp="sigmoid"), "log_scale_clamp must be"),
                     (dict(log_scale_clamp="softsign", log_scale_bound=None),
                      "needs a log_scale_bound")):
    with pytest.raises(ValueError, match=match):
      build(**bad)


def test_image_realnvp_keeps_its_own_scale_map():
  """Image flows choose their scale map with ``scale=``; either direction is accepted (configs
  saved before the argument existed record "forward") and changes nothing; softsign is not."""
  kw = dict(num_layers=1, hidden_units=4, num_blocks=0, num_scales=1, actnorm=False, seed=3)
  x = tf.random.stateless_normal([2, 4, 4, 1], [0, 1])
  a = tff.flows.realnvp([4, 4, 1], affine_direction="forward", **kw)
  b = tff.flows.realnvp([4, 4, 1], **kw)
  np.testing.assert_array_equal(a.inverse(x), b.inverse(tf.identity(x)))
  with pytest.raises(ValueError, match="log_scale_clamp applies to vector flows only"):
    tff.flows.realnvp([4, 4, 1], log_scale_clamp="softsign", **kw)
