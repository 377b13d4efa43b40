"""TFP's conventions over the whole contract registry, and the fail-safe rules of the ground floor.

``tff.testing.assert_tfp_conventions`` runs on every ``Case`` of ``tests/test_contract.py``
(parameters reconstruction, copies, equality/hash, batch shapes, event-shape methods with
leading dims, wrong event sizes behind unknown static shapes, tensor parameters with gradients
to their producer, slicing). The tests below it check, from the user's side, the amortised
(tensor-valued) parameters, data-dependent initialisation on unusable batches, overflow-safe
norms and the reports of iterative solves.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows as tff
from test_contract import REGISTRY, SLOW_CASES, SLOW_FLOAT32

tfb = tfp.bijectors
tfd = tfp.distributions

# Cases expected to fail a convention (strict: a fix shows up as an unexpected pass). None now.
KNOWN_FAILURES = {}


def _params(case):
  marks = []
  if case.name in KNOWN_FAILURES:
    marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[case.name]))
  # The registry's slowest cases run under -m slow here too, and so do the builder stacks whose
  # layers are checked one by one (SLOW_FLOAT32 minus the marginal Gaussianization, a layer).
  stacks = SLOW_FLOAT32 - {"marginal_gaussianization_1d"}
  if case.name in SLOW_CASES or case.name in stacks:
    marks.append(pytest.mark.slow)
  return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_params(c) for c in REGISTRY])
def test_tfp_conventions(case):
  dtype = tf.float64
  bijector = case.make(dtype)
  tff.testing.randomize_variables(bijector, scale=case.scale, seed=7)
  rng = np.random.default_rng(11)
  shape = (case.batch,) + tuple(case.event_shape)
  x = case.sample(rng, shape, dtype) if case.sample is not None else (
      case.input_scale * rng.standard_normal(shape))
  tff.testing.assert_tfp_conventions(bijector, tf.constant(x, dtype))


# --- amortised (tensor-valued) parameters ----------------------------------------------------


def _encoder(d, k, seed=0):
  """A linear 'encoder' (a variable matrix) producing per-example planar parameters."""
  rng = np.random.default_rng(seed)
  return tf.Variable(rng.normal(0., 0.5, (d, k * (2 * d + 1))))


def _amortised_posterior(encoder, x, k):
  """q(z | x): N(x, 0.5^2 I) through k planar layers whose u, w, b come from the encoder."""
  d = x.shape[-1]
  out = tf.reshape(tf.matmul(x, encoder), [-1, k, 2 * d + 1])
  layers = [tff.bijectors.Planar(d, u=out[:, i, :d], w=out[:, i, d:2 * d], b=out[:, i, 2 * d],
                                 dtype=x.dtype) for i in range(k)]
  base = tfd.MultivariateNormalDiag(x, tf.fill(tf.shape(x), tf.constant(0.5, x.dtype)))
  return tfd.TransformedDistribution(base, tfb.Chain(layers[::-1]))


def test_per_example_planar_parameters_from_an_encoder_get_gradients():
  """Rezende & Mohamed's amortised posterior: batch shape [N], gradients reach the encoder."""
  rng = np.random.default_rng(1)
  x = tf.constant(rng.normal(size=(5, 3)))
  encoder = _encoder(3, 2)
  with tf.GradientTape() as tape:
    q = _amortised_posterior(encoder, x, 2)
    z, log_q = q.experimental_sample_and_log_prob(4, seed=(1, 2))
    loss = tf.reduce_mean(log_q + 0.5 * tf.reduce_sum(tf.square(z), -1))
  assert q.batch_shape == [5] and z.shape == [4, 5, 3] and log_q.shape == [4, 5]
  grad = tape.gradient(loss, encoder)
  assert grad is not None and np.all(np.isfinite(grad)) and np.any(np.abs(grad) > 1e-6)
  # Each example has its own flow: example i of the batch is the flow built from row i alone.
  sample = tf.constant(np.array(z))
  for i in (0, 3):
    single = _amortised_posterior(encoder, x[i:i + 1], 2)
    np.testing.assert_allclose(single.log_prob(sample[:, i:i + 1])[:, 0],
                               q.log_prob(sample)[:, i], rtol=1e-10)
  # The gradient is the derivative of the loss: one entry against central differences.
  def loss_at(delta):
    e = tf.constant(encoder.numpy())
    e = tf.tensor_scatter_nd_add(e, [[1, 4]], [delta])
    q = _amortised_posterior(e, x, 2)
    z, log_q = q.experimental_sample_and_log_prob(4, seed=(1, 2))
    return float(tf.reduce_mean(log_q + 0.5 * tf.reduce_sum(tf.square(z), -1)))
  fd = (loss_at(1e-6) - loss_at(-1e-6)) / 2e-6
  np.testing.assert_allclose(grad[1, 4], fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("make", [
    lambda v: tff.bijectors.Planar(2, u=v[:2], w=v[2:], b=v[0], dtype=tf.float64),
    lambda v: tff.bijectors.Radial(2, z0=v[:2], alpha_raw=v[2], beta_raw=v[3],
                                   dtype=tf.float64),
    lambda v: tff.bijectors.Scaling([4], log_scale=v, dtype=tf.float64),
    lambda v: tff.bijectors.ActNorm([4], data_init=False, shift=v, log_scale=-v,
                                    dtype=tf.float64),
], ids=["planar", "radial", "scaling", "actnorm"])
def test_building_from_tensors_inside_tf_function_works_on_every_trace(make):
  x = tf.constant(np.random.default_rng(2).normal(size=(3, 4)))
  v0 = tf.constant([0.3, -0.2, 0.5, 0.1], tf.float64)

  @tf.function
  def run(v, k):
    del k  # a new Python value: a new trace
    with tf.GradientTape() as tape:
      tape.watch(v)
      b = make(v)
      t = x[:, :2] if b.name.startswith(("planar", "radial")) else x
      out = tf.reduce_sum(b.forward(t)) + tf.reduce_sum(b.inverse(t))
    return out, tape.gradient(out, v)

  first, grad1 = run(v0, 1)
  second, grad2 = run(v0, 2)
  third, _ = run(v0 + 0.1, 3)
  np.testing.assert_allclose(first, second)
  np.testing.assert_allclose(grad1, grad2)
  assert float(third) != float(first)  # the tensor is used as given, not frozen in a variable
  assert np.any(np.abs(grad1) > 0)
  assert not tf.Module().variables  # nothing was created


def test_deferred_tensor_and_transformed_variable_keep_their_link():
  raw = tf.Variable([0.1, -0.3], dtype=tf.float64)
  deferred = tfp.util.DeferredTensor(raw, lambda t: 2. * t)
  scale = tfp.util.TransformedVariable([0.5, 2.], tfb.Exp(), dtype=tf.float64)
  planar = tff.bijectors.Planar(2, u=deferred, w=tf.Variable([1., 0.5], dtype=tf.float64),
                                b=0.2, dtype=tf.float64)
  scaling = tff.bijectors.Scaling([2], log_scale=tfp.util.DeferredTensor(scale, tf.math.log),
                                  dtype=tf.float64)
  x = tf.constant([[0.3, -1.2]], tf.float64)
  before = planar.forward(x).numpy()
  raw.assign([0.4, 0.2])  # the bijector reads the variable at every call
  assert not np.allclose(planar.forward(tf.identity(x)), before)
  np.testing.assert_allclose(scaling.forward(x), x.numpy() * [0.5, 2.], rtol=1e-12)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(planar.forward(x)) + tf.reduce_sum(scaling.forward(x))
  grads = tape.gradient(loss, [raw] + list(scale.trainable_variables))
  assert all(g is not None and np.any(np.abs(g) > 0) for g in grads)
  # Copies keep the same objects (and so the link).
  assert planar.copy().parameters["u"] is deferred
  assert {id(v) for v in planar.copy().variables} == {id(v) for v in planar.variables}


def test_parameters_are_exactly_the_constructor_arguments():
  import inspect  # pylint: disable=g-import-not-at-top
  for b in (tff.bijectors.Planar(2), tff.bijectors.Radial(2), tff.bijectors.Scaling([2]),
            tff.bijectors.ActNorm([2]), tff.bijectors.MarginalGaussianization(2),
            tff.bijectors.HouseholderRotation(2, init="pca"), tff.bijectors.Squeeze(),
            tff.bijectors.Dequantize(4), tff.bijectors.Logit()):
    expected = set(inspect.signature(type(b).__init__).parameters) - {"self"}
    assert set(b.parameters) == expected, type(b).__name__


def test_data_initialised_copies_share_their_state():
  """A copy of an initialised layer is the same initialised layer, never re-initialised."""
  y = tf.constant(np.random.default_rng(3).normal(2., 3., size=(256, 2)), tf.float32)
  for layer in (tff.bijectors.ActNorm([2]), tff.bijectors.MarginalGaussianization(2),
                tff.bijectors.HouseholderRotation(2, init="pca")):
    layer.inverse(y)
    for copy in (layer.copy(), type(layer)(**layer.parameters)):
      assert copy.initialized is layer.initialized and bool(copy.initialized.numpy())
      np.testing.assert_array_equal(copy.inverse(y[:7] * 10.), layer.inverse(y[:7] * 10.))
      assert {id(v) for v in copy.variables} == {id(v) for v in layer.variables}


# --- shapes -------------------------------------------------------------------------------------


def test_scaling_batch_shape_follows_tfp_rules():
  log_scale = np.random.default_rng(4).normal(size=(2, 3))
  ours = tff.bijectors.Scaling([3], log_scale=tf.Variable(log_scale), dtype=tf.float64)
  ref = tfb.Scale(tf.Variable(np.exp(log_scale)))
  for nd in (1, 2):
    assert ours.experimental_batch_shape(x_event_ndims=nd) == \
        ref.experimental_batch_shape(x_event_ndims=nd)
  assert ours.experimental_batch_shape(x_event_ndims=2) == []
  dist = tfd.TransformedDistribution(
      tfd.Sample(tfd.Normal(tf.constant(0., tf.float64), 1.), [2, 3]), ours)
  x = tf.constant(np.random.default_rng(5).normal(size=(5, 2, 3)))
  assert dist.batch_shape == [] and dist.log_prob(x).shape == [5]


def test_wrong_event_size_behind_unknown_static_shape_is_an_error_naming_both():
  flow = tff.flows.planar([2], num_layers=2)
  dist = tff.flows.distribution(flow, [2])
  log_prob = tf.function(dist.log_prob, input_signature=[tf.TensorSpec([None, None])])
  ok = log_prob(tf.zeros([4, 2]))
  assert ok.shape == [4]
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected event shape \[2\]") as e:
    log_prob(tf.zeros([4, 3]))
  assert "[3]" in str(e.value) and "[2]" in str(e.value)


def test_saved_model_signature_rejects_a_wrong_event_size(tmp_path):
  flow = tff.flows.planar([2], num_layers=1)
  module = tf.Module()
  module.flow = flow
  module.log_prob = tf.function(tff.flows.distribution(flow, [2]).log_prob,
                                input_signature=[tf.TensorSpec([None, None], tf.float32)])
  tf.saved_model.save(module, str(tmp_path / "model"))
  loaded = tf.saved_model.load(str(tmp_path / "model"))
  assert loaded.log_prob(tf.zeros([3, 2])).shape == [3]
  with pytest.raises(tf.errors.InvalidArgumentError, match="event shape"):
    loaded.log_prob(tf.zeros([3, 3]))


# --- data-dependent initialisation: one rule for every data-initialised layer -----------------


_DATA_INIT_LAYERS = {
    "actnorm": lambda: tff.bijectors.ActNorm([3]),
    "marginal_gaussianization": lambda: tff.bijectors.MarginalGaussianization(3, 4),
    "householder_pca": lambda: tff.bijectors.HouseholderRotation(3, init="pca"),
}


def _good_batch(n=512, seed=6):
  return tf.constant(np.random.default_rng(seed).normal(1., 2., size=(n, 3)), tf.float32)


@pytest.mark.parametrize("layer", list(_DATA_INIT_LAYERS))
@pytest.mark.parametrize("bad,message", [
    (np.zeros((0, 3)), "at least 2"), (np.ones((1, 3)), "at least 2"),
    (np.array([[0., np.nan, 1.]] * 8), "NaN or inf"),
    (np.array([[0., 1., 2.], [3e38, -3e38, 1.]] * 4), "not finite")],
    ids=["empty", "one_row", "nan", "overflow"])
def test_unusable_first_batch_is_an_error_and_leaves_the_layer_uninitialised(layer, bad, message):
  bij = _DATA_INIT_LAYERS[layer]()
  with pytest.raises(ValueError, match=message):
    bij.inverse(tf.constant(bad, tf.float32))
  assert not bool(bij.initialized.numpy())
  assert tff.core.pending_data_init(bij) == [bij]
  good = _good_batch()
  z = bij.inverse(good)  # the next usable batch initialises
  assert bool(bij.initialized.numpy()) and np.all(np.isfinite(z))
  assert np.all(np.isfinite(bij.inverse_log_det_jacobian(good, 1)))


@pytest.mark.parametrize("layer", list(_DATA_INIT_LAYERS))
def test_unusable_batch_inside_tf_function_asserts_and_xla_skips_it(layer):
  bij = _DATA_INIT_LAYERS[layer]()
  fn = tf.function(lambda t: bij.inverse(t), input_signature=[tf.TensorSpec([None, 3])])
  with pytest.raises(tf.errors.InvalidArgumentError, match="at least 2"):
    fn(tf.zeros([0, 3]))
  assert not bool(bij.initialized.numpy())
  jit = tf.function(lambda t: bij.inverse(t), jit_compile=True)
  jit(tf.constant([[np.nan, 0., 1.]] * 4, tf.float32))  # XLA drops assertions: skipped instead
  assert not bool(bij.initialized.numpy())
  assert np.all(np.isfinite(fn(_good_batch())))
  assert bool(bij.initialized.numpy())


@pytest.mark.parametrize("layer", list(_DATA_INIT_LAYERS))
def test_small_first_batch_initialises_with_a_warning(layer):
  bij = _DATA_INIT_LAYERS[layer]()
  with pytest.warns(tff.core.DataInitWarning, match="recommended"):
    bij.inverse(_good_batch(n=4))
  assert bool(bij.initialized.numpy())


def test_actnorm_huge_but_finite_entries_give_finite_statistics():
  actnorm = tff.bijectors.ActNorm([2])
  y = np.random.default_rng(7).normal(size=(64, 2)).astype(np.float32)
  y[3, 0] = 1e30  # its square overflows float32
  actnorm.inverse(tf.constant(y))
  assert np.all(np.isfinite(actnorm.log_scale.numpy())) and np.all(np.isfinite(actnorm.shift))
  assert np.all(np.isfinite(actnorm.inverse_log_det_jacobian(tf.constant(y[:8]), 1)))


def test_rbig_on_an_unusable_batch_fails_clearly():
  with pytest.raises(ValueError, match="at least 2"):
    tff.flows.rbig(np.zeros((0, 2), np.float32), num_layers=2)
  with pytest.raises(ValueError, match="NaN"):
    tff.flows.rbig(np.array([[0., np.nan]] * 16, np.float32), num_layers=2)
  with pytest.raises(ValueError, match="batch_size"):
    tff.flows.rbig(np.zeros((8, 2), np.float32), num_layers=2, batch_size=-1)
