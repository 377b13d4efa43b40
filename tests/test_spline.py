"""Spline flows: the rational-quadratic transformer, spline couplings, autoregressive splines.

The shared contract (tests/test_contract.py) checks round trips, log-dets against autodiff and
densities; here: agreement with TFP's independent ``tfb.RationalQuadraticSpline``, the identity
tails, float32 accuracy against float64, one conditioner call per layer, conditioning, the
builder's options and errors, and training through ``FlowModel``.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows as tff
from tfp_flows.bijectors.transformers import RationalQuadraticSpline

tfb = tfp.bijectors


def _random_params(spline, shape, scale=1.5, seed=0):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.normal(0., scale, shape[:-1] + (spline.num_params, shape[-1])))


def test_spline_matches_tfp_rational_quadratic_spline():
  """Same knots through TFP's implementation: outputs and log-dets agree to rounding (the
  spline in TFP's orientation, ``direction="forward"``)."""
  spline = RationalQuadraticSpline(num_bins=6, bound=3., direction="forward")
  params = _random_params(spline, (40, 5))
  x = tf.constant(np.random.default_rng(1).uniform(-4., 4., (40, 5)))
  _, widths, _, heights, derivs = spline._knots(params)
  reference = tfb.RationalQuadraticSpline(
      tf.linalg.matrix_transpose(widths), tf.linalg.matrix_transpose(heights),
      tf.linalg.matrix_transpose(derivs[..., 1:-1, :]), range_min=-3.)
  y, log_det = spline.forward(x, params)
  np.testing.assert_allclose(y, reference.forward(x), rtol=0, atol=1e-13)
  np.testing.assert_allclose(log_det, reference.forward_log_det_jacobian(x, 0), rtol=0,
                             atol=1e-12)
  x_back, inv_log_det = spline.inverse(tf.constant(y.numpy()), params)
  np.testing.assert_allclose(x_back, x, rtol=0, atol=1e-12)
  np.testing.assert_allclose(inv_log_det, -log_det, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_spline_gradients_match_autodiff_through_tfp(inverse):
  """The hand-written gradient against autodiff of TFP's spline (raw parameters -> knots by
  the same softmax/softplus code, then tfb.RationalQuadraticSpline), float64."""
  spline = RationalQuadraticSpline(num_bins=5, bound=3., direction="forward")
  params = _random_params(spline, (30, 4), seed=5)
  v = tf.constant(np.random.default_rng(6).uniform(-3.5, 3.5, (30, 4)))
  weights = tf.constant(np.random.default_rng(7).normal(size=(2, 30, 4)))
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([params, v])
    out, log_det = (spline.inverse if inverse else spline.forward)(v, params)
    ours = tf.reduce_sum(weights[0] * out + weights[1] * log_det)
    _, widths, _, heights, derivs = spline._knots(params)
    ref_bij = tfb.RationalQuadraticSpline(
        tf.linalg.matrix_transpose(widths), tf.linalg.matrix_transpose(heights),
        tf.linalg.matrix_transpose(derivs[..., 1:-1, :]), range_min=-3.)
    if inverse:
      ref_out, ref_ld = ref_bij.inverse(v), ref_bij.inverse_log_det_jacobian(v, 0)
    else:
      ref_out, ref_ld = ref_bij.forward(v), ref_bij.forward_log_det_jacobian(v, 0)
    ref = tf.reduce_sum(weights[0] * ref_out + weights[1] * ref_ld)
  for a, b in zip(tape.gradient(ours, [params, v]), tape.gradient(ref, [params, v])):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_default_direction_makes_the_spline_the_density_direction():
  """direction="inverse" (the default) is direction="forward" with forward and inverse
  swapped: the rational-quadratic map is what log_prob evaluates (data -> latent)."""
  spline, tfp_oriented = RationalQuadraticSpline(5, 3.), RationalQuadraticSpline(
      5, 3., direction="forward")
  assert spline.direction == "inverse" and spline != tfp_oriented
  params = _random_params(spline, (20, 3), seed=8)
  v = tf.constant(np.random.default_rng(9).uniform(-4., 4., (20, 3)))
  for ours, theirs in ((spline.inverse, tfp_oriented.forward),
                       (spline.forward, tfp_oriented.inverse)):
    for a, b in zip(ours(v, params), theirs(v, params)):
      np.testing.assert_array_equal(a, b)
  flow = tff.flows.nsf([2], num_layers=2, hidden_units=[8], num_bins=5, bound=3.)
  assert all(b.transformer == spline for b in flow.bijectors)
  old = tff.flows.nsf([2], num_layers=2, hidden_units=[8], spline_direction="forward")
  assert all(b.transformer.direction == "forward" for b in old.bijectors)
  ar = tff.flows.nsf([3], num_layers=2, hidden_units=[8], autoregressive=True,
                     spline_direction="forward")
  assert all(b.transformer.direction == "forward" for b in ar.bijectors)
  # Configs saved before the argument existed rebuild the orientation they were trained with.
  config = tff.flows.get_config(flow)
  assert config["kwargs"]["spline_direction"] == "inverse"
  del config["kwargs"]["spline_direction"]
  assert all(b.transformer.direction == "forward"
             for b in tff.flows.from_config(config).bijectors)


def test_zero_parameters_are_the_identity_and_tails_are_linear():
  spline = RationalQuadraticSpline(num_bins=5, bound=2., direction="forward")
  x = tf.constant(np.linspace(-5., 5., 101))[:, None]
  y, log_det = spline.forward(x, tf.zeros([101, spline.num_params, 1], tf.float64))
  np.testing.assert_allclose(y, x, atol=1e-14)
  np.testing.assert_allclose(log_det, 0., atol=1e-14)
  # Random parameters: outside [-B, B] the map is the identity with log-det 0, and the
  # derivative is continuous at +-B (boundary derivatives are 1).
  params = _random_params(spline, (101, 1))
  y, log_det = spline.forward(x, params)
  outside = np.abs(x.numpy()) > 2.
  np.testing.assert_array_equal(y.numpy()[outside], x.numpy()[outside])
  np.testing.assert_array_equal(log_det.numpy()[outside], 0.)
  edge = tf.constant([[-2. + 1e-9], [2. - 1e-9]], tf.float64)
  np.testing.assert_allclose(spline.forward(edge, params[:2])[1], 0., atol=1e-6)


def test_inverse_is_exact_at_knots_and_bounds():
  spline = RationalQuadraticSpline(num_bins=8, bound=3., direction="forward")
  params = _random_params(spline, (1, 1), scale=2.)
  xs, _, ys, _, _ = spline._knots(params)
  knots_x = tf.reshape(xs, [-1, 1])
  y, _ = spline.forward(knots_x, tf.repeat(params, 8, axis=0))
  np.testing.assert_allclose(y, tf.reshape(ys, [-1, 1]), atol=1e-14)
  grid = tf.constant(np.concatenate([np.linspace(-3.5, 3.5, 2001), [-3., 3.]]))[:, None]
  p = tf.repeat(params, grid.shape[0], axis=0)
  y, _ = spline.forward(grid, p)
  assert np.all(np.diff(y.numpy()[:2001, 0]) > 0)  # strictly increasing
  x_back, _ = spline.inverse(tf.constant(y.numpy()), p)
  np.testing.assert_allclose(x_back, grid, atol=1e-12)


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_gradients_stay_finite_for_extreme_parameters_under_xla(direction):
  # Raw parameters of scale 50 with no minimum bin size make bins far below the rounding of
  # their knots; at and beyond the bound the root's denominator could round to 0 and the
  # masked branch turned the parameter gradients into NaN under XLA (0 * inf).
  rng = np.random.default_rng(0)
  k, b, n = 32, 3., 500
  params = tf.constant(rng.normal(size=[n, 3 * k - 1, 4]) * 50.)
  x = tf.constant(np.stack([np.full(n, b), np.full(n, -b), np.full(n, b + .5),
                            rng.uniform(-b, b, n)], -1))
  spline = RationalQuadraticSpline(k, b, min_bin_size=0., min_derivative=0.)

  @tf.function(jit_compile=True)
  def grads(x, params):
    with tf.GradientTape() as tape:
      tape.watch([x, params])
      y, log_det = getattr(spline, direction)(x, params)
      total = tf.reduce_sum(y) + tf.reduce_sum(log_det)
    return tape.gradient(total, [x, params])

  g_x, g_params = grads(x, params)
  assert np.all(np.isfinite(g_x.numpy())) and np.all(np.isfinite(g_params.numpy()))


def test_parameters_of_unknown_static_shape():
  spline = RationalQuadraticSpline(num_bins=4, bound=3.)

  @tf.function(input_signature=[tf.TensorSpec([None, 3]), tf.TensorSpec([None, 33])])
  def inverse(x, raw):  # the bin axis of the parameters is unknown while tracing
    return spline.inverse(x, tf.reshape(raw, [tf.shape(raw)[0], -1, 3]))

  x = tf.constant([[0.5, -1., 4.]])
  raw = tf.random.stateless_normal([1, 33], [1, 2])
  z, log_det = inverse(x, raw)
  z_ref, log_det_ref = spline.inverse(x, tf.reshape(raw, [1, 11, 3]))
  np.testing.assert_allclose(z, z_ref, rtol=1e-6)
  np.testing.assert_allclose(log_det, log_det_ref, rtol=1e-6, atol=1e-6)


def test_float32_error_is_the_conditioning_not_the_formula():
  """float32 inverse vs the float64 inverse of the same float32 outputs: the difference is
  bounded by the rounding of the knots (K float32 ulps of the interval 2B, from the cumulative
  sums) carried through the inverse's derivative dx/dy."""
  spline = RationalQuadraticSpline(num_bins=8, bound=3., direction="forward")
  params64 = _random_params(spline, (5000, 1), scale=1.5, seed=3)
  x64 = tf.constant(np.random.default_rng(4).uniform(-3., 3., (5000, 1)))
  y32, log_det = spline.forward(tf.cast(x64, tf.float32), tf.cast(params64, tf.float32))
  x32, _ = spline.inverse(y32, tf.cast(params64, tf.float32))
  x_ref, _ = spline.inverse(tf.cast(y32, tf.float64), params64)
  dx_dy = np.exp(-log_det.numpy().astype(np.float64))
  bound = 8 * np.finfo(np.float32).eps * 6. * (1. + dx_dy)
  err = np.abs(x32.numpy() - x_ref.numpy())
  assert np.all(err <= bound), float(np.max(err / bound))


class _Counting(tf.Module):
  def __init__(self, net):
    super().__init__()
    self.net, self.calls = net, 0

  def __call__(self, x, **kwargs):
    self.calls += 1
    return self.net(x, **kwargs)


@pytest.mark.parametrize("autoregressive", [False, True], ids=["coupling", "autoregressive"])
def test_one_network_call_per_layer_in_log_prob(autoregressive):
  d, bins = 3, 4
  spline = RationalQuadraticSpline(bins, 3.)
  if autoregressive:
    nets = [_Counting(tff.nets.MADE(d, spline.num_params, [8], seed=i)) for i in range(2)]
    layers = [tff.bijectors.MaskedAutoregressiveFlow(params_fn=n, transformer=spline)
              for n in nets]
  else:
    masks = [tff.masks.half(d), tff.masks.half(d, invert=True)]
    nets = [_Counting(tff.nets.MLP(int(m.sum()), spline.num_params * int((1 - m).sum()), [8],
                                   seed=i)) for i, m in enumerate(masks)]
    layers = [tff.bijectors.SplineCoupling(m, n, num_bins=bins, bound=3.)
              for m, n in zip(masks, nets)]
  dist = tff.flows.distribution(tfb.Chain(layers), [d])
  for n in nets:
    n.calls = 0
  dist.log_prob(tf.constant(np.random.default_rng(0).normal(size=(5, d)), tf.float32))
  assert [n.calls for n in nets] == [1, 1]


@pytest.mark.parametrize("autoregressive", [False, True], ids=["coupling", "autoregressive"])
def test_conditional_nsf_uses_and_broadcasts_the_context(autoregressive):
  flow = tff.flows.nsf([2], num_layers=2, hidden_units=[8], num_bins=4,
                       autoregressive=autoregressive, conditional_shape=[3], seed=1)
  tff.testing.randomize_variables(flow, scale=0.3, seed=2)
  assert tff.flows.conditional_shape(flow) == (3,)
  dist = tff.flows.distribution(flow, [2])
  x = tf.random.normal([4, 2])
  c1, c2 = tf.zeros([4, 3]), tf.ones([4, 3])
  lp1 = dist.log_prob(x, bijector_kwargs=tff.flows.conditional_kwargs(flow, c1))
  lp2 = dist.log_prob(x, bijector_kwargs=tff.flows.conditional_kwargs(flow, c2))
  assert lp1.shape == [4] and not np.allclose(lp1, lp2)
  lp3 = dist.log_prob(x, bijector_kwargs=tff.flows.conditional_kwargs(flow, tf.ones([3])))
  np.testing.assert_allclose(lp2, lp3, rtol=1e-5)
  # Sampling given a context inverts the density direction.
  z = tf.random.normal([4, 2])
  y = flow.forward(z, **tff.flows.conditional_kwargs(flow, c2))
  back = flow.inverse(tf.constant(y.numpy()), **tff.flows.conditional_kwargs(flow, c2))
  np.testing.assert_allclose(back, z, atol=1e-4)
  with pytest.raises(ValueError, match="needs a conditional_input"):
    dist.log_prob(x)


def test_nsf_builder_options_and_structure():
  flow = tff.flows.nsf([4], num_layers=3, hidden_units=[8], num_bins=5, bound=4., seed=0)
  couplings = [b for b in flow.bijectors if isinstance(b, tff.bijectors.SplineCoupling)]
  # Alternating masks: half masks between one permutation at each end (even entries first).
  assert len(couplings) == 3 and len(flow.bijectors) == 5
  assert [b.permutation.numpy().tolist() for b in (flow.bijectors[0], flow.bijectors[-1])] == [
      [0, 2, 1, 3], [0, 2, 1, 3]]
  assert couplings[0].transformer == RationalQuadraticSpline(5, 4.)
  assert {tuple(c.mask) for c in couplings} == {(1, 1, 0, 0), (0, 0, 1, 1)}
  half = tff.flows.nsf([4], num_layers=3, hidden_units=[8], mask="half")
  assert len(half.bijectors) == 3  # no permutation op
  rev = tff.flows.nsf([4], num_layers=3, hidden_units=[8], permutation="reverse")
  assert sum(isinstance(b, tfb.Permute) for b in rev.bijectors) == 2
  ar = tff.flows.nsf([4], num_layers=2, hidden_units=[8], autoregressive=True)
  assert all(isinstance(b, tff.bijectors.MaskedAutoregressiveFlow) for b in ar.bijectors)
  orders = [tuple(b.params_fn.order) for b in ar.bijectors]
  assert orders[0] == orders[1][::-1]  # reversed between layers
  # Zero-initialised output layers: the flow starts at the identity.
  x = tf.random.normal([3, 4])
  for f in (flow, ar):
    np.testing.assert_allclose(f.forward(x), x, atol=1e-6)
  a = tff.flows.nsf([4], num_layers=2, hidden_units=[8], seed=3, dtype=tf.float64)
  b = tff.flows.nsf([4], num_layers=2, hidden_units=[8], seed=3, dtype=tf.float64)
  for va, vb in zip(a.trainable_variables, b.trainable_variables):
    assert va.dtype == tf.float64
    np.testing.assert_array_equal(va.numpy(), vb.numpy())


@pytest.mark.parametrize("call,exc,match", [
    (lambda: tff.flows.nsf([4], num_bins=1), ValueError, "num_bins"),
    (lambda: tff.flows.nsf([4], bound=0.), ValueError, "bound"),
    (lambda: tff.flows.nsf([4], bound=float("inf")), ValueError, "bound"),
    (lambda: tff.flows.nsf([4], num_bins=8, min_bin_size=0.2), ValueError, "min_bin_size"),
    (lambda: tff.flows.nsf([4], min_derivative=1.5), ValueError, "min_derivative"),
    (lambda: tff.flows.nsf([1]), ValueError, "at least 2"),
    (lambda: tff.flows.nsf([4, 4, 1]), ValueError, r"\[D\]"),
    (lambda: tff.flows.nsf([4], autoregressive=True, permutation="random"), ValueError,
     "couplings only"),
    (lambda: tff.flows.nsf([4], permutation="shuffle"), ValueError, "permutation"),
    (lambda: tff.flows.nsf([4], net_init="he"), ValueError, "init"),
    (lambda: tff.flows.nsf([4], spline_direction="backward"), ValueError, "direction"),
    (lambda: tff.bijectors.Coupling(tff.masks.half(2), lambda x: x, transformer="cubic"),
     ValueError, "transformer"),
    (lambda: tff.bijectors.SplineCoupling(tff.masks.half(4), tff.nets.MLP(2, 2 * 22, [8])),
     ValueError, r"expected one tensor with last dim 46"),
])
def test_invalid_arguments_are_named(call, exc, match):
  with pytest.raises(exc, match=match):
    call()


def test_validate_args_catches_nan_through_the_builder():
  for autoregressive in (False, True):
    flow = tff.flows.nsf([3], num_layers=2, hidden_units=[8], num_bins=4,
                         autoregressive=autoregressive, validate_args=True)
    x = np.zeros([2, 3], np.float32)
    x[1, 1] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or inf"):
      tff.flows.distribution(flow, [3]).log_prob(x)


def test_parameters_rebuild_the_same_map_with_the_same_variables():
  mask = tff.masks.half(3)
  net = tff.nets.MLP(2, 11, [8], seed=0)
  bij = tff.bijectors.SplineCoupling(mask, net, num_bins=4, bound=2., name="s")
  tff.testing.randomize_variables(bij, scale=0.3, seed=1)
  x = tf.random.normal([5, 3])
  for other in (type(bij)(**bij.parameters), bij.copy()):
    assert other.conditioner is net and other.transformer == bij.transformer
    np.testing.assert_array_equal(other.forward(x), bij.forward(x))
  generic = tff.bijectors.Coupling(mask, net, bij.transformer)
  np.testing.assert_array_equal(generic.forward(x), bij.forward(x))
  made = tff.nets.MADE(3, 11, [8], seed=0)
  maf = tff.bijectors.MaskedAutoregressiveFlow(params_fn=made, transformer=bij.transformer)
  tff.testing.randomize_variables(maf, scale=0.3, seed=2)
  rebuilt = type(maf)(**maf.parameters)
  assert rebuilt.params_fn is made and set(maf.parameters) == set(rebuilt.parameters)
  np.testing.assert_array_equal(rebuilt.inverse(x), maf.inverse(x))


def test_nsf_transform_kept_builder_config_and_training():
  flow = tff.flows.nsf([2], num_layers=2, hidden_units=[8], num_bins=4, transform_kept=True)
  couplings = [b for b in flow.bijectors if isinstance(b, tff.bijectors.SplineCoupling)]
  assert all(c.kept_params.shape == [11, 1] for c in couplings)
  x = tf.random.normal([3, 2])
  np.testing.assert_allclose(flow.forward(x), x, atol=1e-6)  # starts at the identity
  # The option is part of the config; configs saved before it existed rebuild without it.
  config = tff.flows.get_config(flow)
  assert config["kwargs"]["transform_kept"] is True
  assert all(b.kept_params is not None for b in tff.flows.from_config(config).bijectors)
  del config["kwargs"]["transform_kept"]
  assert all(b.kept_params is None for b in tff.flows.from_config(config).bijectors)
  # FlowModel trains the kept parameters with the networks.
  data = tff.datasets.toy("6gaussians").sample(256, seed=0)
  model = tff.keras.FlowModel(tff.flows.distribution(flow, [2]))
  model.compile(keras.optimizers.Adam(1e-2))
  model.fit(data, batch_size=128, epochs=2, verbose=0)
  assert all(np.abs(c.kept_params.numpy()).max() > 1e-3 for c in couplings)


@pytest.mark.parametrize("autoregressive", [
    False, pytest.param(True, marks=pytest.mark.slow)], ids=["coupling", "autoregressive"])
def test_nsf_trains_in_flow_model(autoregressive):
  x = tff.datasets.toy("6gaussians").sample(512, seed=0)
  flow = tff.flows.nsf([2], num_layers=2, hidden_units=[16], autoregressive=autoregressive,
                       seed=0)
  model = tff.keras.FlowModel(tff.flows.distribution(flow, [2]))
  model.compile(keras.optimizers.Adam(1e-2))
  history = model.fit(x, batch_size=128, epochs=3, verbose=0).history["loss"]
  assert np.all(np.isfinite(history)) and history[-1] < history[0] - 0.3
  samples = model.sample(64, seed=1)
  assert samples.shape == (64, 2) and np.all(np.isfinite(samples))
