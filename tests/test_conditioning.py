"""The conditioning protocol: hand-built, nested and inverted flows find and route their context."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows as tff

tfb = tfp.bijectors


def _coupling(mask, context, seed, dtype=tf.float32, name=None):
  d_keep, d_change = int(mask.sum()), int((1 - mask).sum())
  net = tff.nets.MLP(d_keep, 2 * d_change, [8], conditional_size=context, dtype=dtype,
                     seed=seed)
  tff.testing.randomize_variables(net, seed=seed)
  return tff.bijectors.AffineCoupling(mask, net, conditional_shape=[context], dtype=dtype,
                                      name=name or f"coupling_{seed}")


def _hand_built():
  """Nested chains, an Invert and an unconditional part, all built by hand."""
  inner = tfb.Chain([_coupling(tff.masks.half(3), 2, 1),
                     tfb.Permute([2, 0, 1]),
                     _coupling(tff.masks.half(3, invert=True), 2, 2)], name="inner")
  return tfb.Chain([tfb.Invert(_coupling(tff.masks.alternating(3), 2, 3, name="inv_part"),
                               name="inverted"),
                    inner, tff.bijectors.Scaling([3])], name="outer")


def test_hand_built_chain_exposes_and_routes_its_context():
  flow = _hand_built()
  assert tff.flows.conditional_shape(flow) == (2,)
  c1, c2 = tf.constant([[1., 0.]] * 4), tf.constant([[0., 1.]] * 4)
  kw = tff.flows.conditional_kwargs(flow, c1)
  assert set(kw) == {"inverted", "inner"} and set(kw["inner"]) == {"coupling_1", "coupling_2"}
  assert kw["inverted"] == {"conditional_input": c1}
  dist = tff.flows.distribution(flow, [3])
  x = tf.constant(np.random.default_rng(0).normal(size=(4, 3)), tf.float32)
  lp1 = dist.log_prob(x, bijector_kwargs=kw)
  lp2 = dist.log_prob(x, bijector_kwargs=tff.flows.conditional_kwargs(flow, c2))
  assert np.all(np.isfinite(lp1)) and np.max(np.abs(lp1 - lp2)) > 1e-4


def test_flow_model_reads_the_context_of_a_hand_built_flow():
  model = tff.keras.FlowModel(tff.flows.distribution(_hand_built(), [3]))
  assert model.context_shape == (2,)
  x = np.random.default_rng(1).normal(size=(32, 3)).astype(np.float32)
  c = np.eye(2, dtype=np.float32)[np.arange(32) % 2]
  model.compile("adam")
  model.fit(x, c, epochs=1, batch_size=16, verbose=0)
  assert model.log_prob(x, context=c).shape == (32,)
  with pytest.raises(ValueError, match="context_shape"):
    tff.keras.FlowModel(tff.flows.distribution(_hand_built(), [3]), context_shape=[5])


def test_unconditional_flow_has_no_context():
  flow = tff.flows.realnvp([2], num_layers=2, hidden_units=[8])
  assert tff.flows.conditional_shape(flow) is None
  assert tff.flows.conditional_kwargs(flow, 0.) == {}
  with pytest.raises(ValueError, match="no layer"):
    tff.keras.FlowModel(tff.flows.distribution(flow, [2]), context_shape=[2])


def test_parts_with_different_context_shapes_are_an_error():
  flow = tfb.Chain([_coupling(tff.masks.half(2), 2, 1), _coupling(tff.masks.half(2), 3, 2)])
  with pytest.raises(ValueError, match="different shapes"):
    tff.flows.conditional_shape(flow)


@pytest.mark.parametrize("builder", ["maf", "iaf"])
def test_autoregressive_builders_state_their_context(builder):
  flow = getattr(tff.flows, builder)([2], num_layers=2, hidden_units=[8], conditional_shape=[3])
  assert tff.flows.conditional_shape(flow) == (3,)
  layers = [b for b in flow.bijectors if not isinstance(b, tfb.Permute)]
  for layer in layers:
    maf = layer.bijector if builder == "iaf" else layer
    assert isinstance(maf, tfb.MaskedAutoregressiveFlow)
    assert maf.conditional_shape == (3,)
    rebuilt = type(maf)(**maf.parameters)
    assert rebuilt.conditional_shape == (3,)


def test_factor_out_passes_the_context_to_its_inner_flow():
  flow = tff.flows.realnvp([4, 4, 1], num_layers=1, hidden_units=4, num_blocks=0,
                           num_scales=2, actnorm=False, conditional_shape=[2])
  assert tff.flows.conditional_shape(flow) == (2,)
  factor = [b for b in flow.bijectors if isinstance(b, tff.bijectors.FactorOut)]
  assert factor and factor[0].conditional_shape == (2,)
