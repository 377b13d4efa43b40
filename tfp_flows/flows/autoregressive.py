"""Autoregressive builders: MAF and IAF from TFP's ``MaskedAutoregressiveFlow``."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import core
from tfp_flows.bijectors.autoregressive import MaskedAutoregressiveFlow
from tfp_flows.flows import _common

tfb = tfp.bijectors

__all__ = ["maf", "iaf"]


def _made_stack(event_shape, num_layers, hidden_units, activation, conditional_shape,
                dtype, seed, name, invert):
  d = _common.vector_size(event_shape, "maf" if not invert else "iaf")
  num_layers = _common.check_layers(num_layers)
  dtype = core.float_dtype(dtype)
  tf_keras_seed = int(seed) if seed is not None else None
  layers = []
  for i in range(num_layers):
    if i:
      layers.append(tfb.Permute(np.arange(d)[::-1].astype(np.int32), name=f"{name}_permute_{i}"))
    kwargs = {}
    if conditional_shape is not None:
      kwargs = dict(conditional=True,
                    conditional_event_shape=list(core.as_event_shape(conditional_shape)))
    made = tfb.AutoregressiveNetwork(
        params=2, event_shape=[d], hidden_units=list(hidden_units), activation=activation,
        kernel_initializer=_tf_keras_glorot(tf_keras_seed, i), dtype=dtype,
        name=f"{name}_made_{i}", **kwargs)
    # Build now: the network's variables must exist on return.
    probe = tf.zeros([1, d], dtype)
    if conditional_shape is not None:
      made(probe, conditional_input=tf.zeros(
          [1] + list(core.as_event_shape(conditional_shape)), dtype))
    else:
      made(probe)
    layer = MaskedAutoregressiveFlow(made, conditional_shape=conditional_shape,
                                     name=f"{name}_maf_{i}")
    if invert:
      layer = tfb.Invert(layer, name=f"{name}_iaf_{i}")
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
