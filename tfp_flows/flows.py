"""Builders: one function per flow family, each returning a ready ``tfb.Bijector``.

Every builder takes ``event_shape`` first and accepts ``num_layers``, ``hidden_units`` (where a
network exists), ``dtype`` and ``seed``; trainable variables exist on return (no lazy build).
Put the result in a ``TransformedDistribution`` over a standard normal of the same event
shape (``tff.flows.distribution`` does exactly that)::

    flow = tff.flows.realnvp([2], num_layers=8, hidden_units=[128, 128])
    dist = tff.flows.distribution(flow, [2])
    dist.log_prob(x); dist.sample(5, seed=1)

Conditional flows: builders with ``conditional_shape`` make every layer take a
``conditional_input``; ``conditional_kwargs(flow, c)`` builds the nested ``bijector_kwargs``
that ``TransformedDistribution.log_prob/sample`` need for it.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import masks as masks_lib
from tfp_flows import nets
from tfp_flows.bijectors import _base
from tfp_flows.bijectors.coupling import AdditiveCoupling, AffineCoupling
from tfp_flows.bijectors.scaling import Scaling

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["distribution", "conditional_kwargs", "nice", "realnvp", "maf", "iaf"]

# Attribute set on every layer that takes a ``conditional_input`` (read by conditional_kwargs).
_CONDITIONAL = "_tff_conditional"


def distribution(bijector, event_shape, dtype=None):
  """``TransformedDistribution`` of a standard normal on ``event_shape`` through ``bijector``."""
  dtype = _base.float_dtype(dtype or bijector.dtype or tf.float32)
  shape = list(_base.as_event_shape(event_shape))
  base = tfd.Sample(tfd.Normal(tf.constant(0., dtype), tf.constant(1., dtype)), shape)
  return tfd.TransformedDistribution(base, bijector)


def conditional_kwargs(bijector, conditional_input):
  """Nested ``bijector_kwargs`` routing ``conditional_input`` to every conditional layer."""
  if isinstance(bijector, tfb.Chain):
    out = {}
    for b in bijector.bijectors:
      sub = conditional_kwargs(b, conditional_input)
      if sub:
        out[b.name] = sub
    return out
  if isinstance(bijector, tfb.Invert):
    return conditional_kwargs(bijector.bijector, conditional_input)
  if getattr(bijector, _CONDITIONAL, False):
    return {"conditional_input": conditional_input}
  return {}


def _vector_size(event_shape, family):
  shape = _base.as_event_shape(event_shape)
  if len(shape) != 1:
    raise ValueError(f"{family} on vectors needs event_shape [D], got {list(shape)}.")
  if shape[0] < 2:
    raise ValueError(f"{family} needs an event size of at least 2, got {shape[0]}.")
  return shape[0]


def _check_layers(num_layers):
  if int(num_layers) < 1:
    raise ValueError(f"num_layers must be >= 1, got {num_layers}.")
  return int(num_layers)


def _permutation(d, kind, rng, dtype, name):
  if kind == "reverse":
    perm = np.arange(d)[::-1]
  elif kind == "random":
    perm = rng.permutation(d)
  else:
    raise ValueError(f"permutation must be 'reverse' or 'random', got {kind!r}.")
  return tfb.Permute(perm.astype(np.int32), name=name)


def _coupling_stack(event_shape, num_layers, hidden_units, dtype, seed, permutation,
                    conditional_shape, make_layer, family, name):
  d = _vector_size(event_shape, family)
  num_layers = _check_layers(num_layers)
  dtype = _base.float_dtype(dtype)
  rng = np.random.default_rng(seed)
  cond_size = 0 if conditional_shape is None else int(np.prod(
      _base.as_event_shape(conditional_shape)))
  mask = masks_lib.half(d)
  d_keep = int(mask.sum())
  layers = []
  for i in range(num_layers):
    if i:
      layers.append(_permutation(d, permutation, rng, dtype, f"{name}_permute_{i}"))
    layer = make_layer(i, mask, d_keep, d - d_keep, cond_size, int(rng.integers(2**31)))
    setattr(layer, _CONDITIONAL, cond_size > 0)
    layers.append(layer)
  # tfb.Chain applies the last bijector first: list them data-side first.
  return layers[::-1]


def nice(event_shape, num_layers=4, hidden_units=(256, 256), activation="relu",
         scaling=True, permutation="reverse", conditional_shape=None, dtype=tf.float32,
         seed=0, name="nice"):
  """NICE: additive couplings (half masks, permuted between layers) and a diagonal scaling.

  Args:
    event_shape: ``[D]`` with D >= 2.
    num_layers: number of additive coupling layers.
    hidden_units: hidden sizes of each coupling's MLP (``tff.nets.MLP``).
    activation: activation of the MLPs.
    scaling: append NICE's ``Scaling`` layer (log-det sum(s)); without it the flow is
      volume preserving.
    permutation: 'reverse' or 'random' (seeded) permutation between couplings.
    conditional_shape: shape of a conditional input fed to every coupling, or None.
    dtype, seed, name: dtype of all variables, seed of their initial values, name prefix.
  """
  def make_layer(i, mask, d_keep, d_change, cond_size, layer_seed):
    net = nets.MLP(d_keep, d_change, hidden_units, activation, cond_size, dtype, layer_seed,
                   name=f"{name}_net_{i}")
    cond = None if not cond_size else [cond_size]
    return AdditiveCoupling(mask, net, conditional_shape=cond, dtype=dtype,
                            name=f"{name}_coupling_{i}")

  layers = _coupling_stack(event_shape, num_layers, hidden_units, dtype, seed, permutation,
                           conditional_shape, make_layer, "nice", name)
  if scaling:
    layers.append(Scaling(_base.as_event_shape(event_shape), dtype=dtype,
                          name=f"{name}_scaling"))
  return tfb.Chain(layers, name=name)


def realnvp(event_shape, num_layers=8, hidden_units=(256, 256), activation="relu",
            log_scale_bound=3., permutation="reverse", conditional_shape=None,
            dtype=tf.float32, seed=0, name="realnvp", **image_kwargs):
  """RealNVP: affine couplings with bounded log-scales, permuted between layers.

  Args:
    event_shape: ``[D]`` (vectors) or ``[H, W, C]`` (the multi-scale image flow).
    num_layers: number of affine coupling layers.
    hidden_units: hidden sizes of each coupling's MLP (``tff.nets.MLP``).
    activation: activation of the MLPs.
    log_scale_bound: bound ``b`` of the soft-clamped log-scale (see ``AffineCoupling``).
    permutation: 'reverse' or 'random' (seeded) permutation between couplings.
    conditional_shape: shape of a conditional input fed to every coupling, or None.
    dtype, seed, name: dtype of all variables, seed of their initial values, name prefix.
  """
  shape = _base.as_event_shape(event_shape)
  if len(shape) == 3:
    return _realnvp_image(shape, num_layers=num_layers, hidden_units=hidden_units,
                          dtype=dtype, seed=seed, name=name, **image_kwargs)
  if image_kwargs:
    raise TypeError(f"unexpected arguments for vector RealNVP: {sorted(image_kwargs)}.")

  def make_layer(i, mask, d_keep, d_change, cond_size, layer_seed):
    net = nets.MLP(d_keep, 2 * d_change, hidden_units, activation, cond_size, dtype,
                   layer_seed, name=f"{name}_net_{i}")
    cond = None if not cond_size else [cond_size]
    return AffineCoupling(mask, net, log_scale_bound=log_scale_bound, conditional_shape=cond,
                          dtype=dtype, name=f"{name}_coupling_{i}")

  return tfb.Chain(_coupling_stack(shape, num_layers, hidden_units, dtype, seed, permutation,
                                   conditional_shape, make_layer, "realnvp", name), name=name)


def _realnvp_image(event_shape, **kwargs):
  # TODO(issue 5): multi-scale image RealNVP (Squeeze, checkerboard/channel masks, ActNorm).
  raise NotImplementedError("image RealNVP is not built yet (issue 5).")


def _made_stack(event_shape, num_layers, hidden_units, activation, conditional_shape,
                dtype, seed, name, invert):
  d = _vector_size(event_shape, "maf" if not invert else "iaf")
  num_layers = _check_layers(num_layers)
  dtype = _base.float_dtype(dtype)
  tf_keras_seed = int(seed) if seed is not None else None
  layers = []
  for i in range(num_layers):
    if i:
      layers.append(tfb.Permute(np.arange(d)[::-1].astype(np.int32), name=f"{name}_permute_{i}"))
    kwargs = {}
    if conditional_shape is not None:
      kwargs = dict(conditional=True,
                    conditional_event_shape=list(_base.as_event_shape(conditional_shape)))
    made = tfb.AutoregressiveNetwork(
        params=2, event_shape=[d], hidden_units=list(hidden_units), activation=activation,
        kernel_initializer=_tf_keras_glorot(tf_keras_seed, i), dtype=dtype,
        name=f"{name}_made_{i}", **kwargs)
    # Build now: the network's variables must exist on return.
    probe = tf.zeros([1, d], dtype)
    if conditional_shape is not None:
      made(probe, conditional_input=tf.zeros(
          [1] + list(_base.as_event_shape(conditional_shape)), dtype))
    else:
      made(probe)
    layer = tfb.MaskedAutoregressiveFlow(made, name=f"{name}_maf_{i}")
    if invert:
      layer = tfb.Invert(layer, name=f"{name}_iaf_{i}")
    setattr(layer, _CONDITIONAL, conditional_shape is not None)
    layers.append(layer)
  return tfb.Chain(layers[::-1], name=name)


def _tf_keras_glorot(seed, i):
  import tf_keras  # TFP's AutoregressiveNetwork is a tf_keras layer.
  return tf_keras.initializers.GlorotUniform(seed=None if seed is None else seed * 1000 + i)


def maf(event_shape, num_layers=4, hidden_units=(256, 256), activation="relu",
        conditional_shape=None, dtype=tf.float32, seed=0, name="maf"):
  """TFP's ``MaskedAutoregressiveFlow`` layers (MADE networks built now), reversed between.

  Density evaluation is one pass; sampling is sequential (D passes per layer).
  """
  return _made_stack(event_shape, num_layers, hidden_units, activation, conditional_shape,
                     dtype, seed, name, invert=False)


def iaf(event_shape, num_layers=4, hidden_units=(256, 256), activation="relu",
        conditional_shape=None, dtype=tf.float32, seed=0, name="iaf"):
  """Inverse autoregressive flow: ``tfb.Invert(MaskedAutoregressiveFlow)`` layers.

  Sampling is one pass; density evaluation of external data is sequential.
  """
  return _made_stack(event_shape, num_layers, hidden_units, activation, conditional_shape,
                     dtype, seed, name, invert=True)
