"""Planar and radial flow builders (Rezende & Mohamed 2015)."""

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import core
from tfp_flows.bijectors.planar import Planar, Radial
from tfp_flows.flows import _common
from tfp_flows.flows import _config

tfb = tfp.bijectors

__all__ = ["planar", "radial"]


def _vector_layers(event_shape, num_layers, family):
  """(D, num_layers) for a flow on vectors; errors name the family."""
  shape = core.as_event_shape(event_shape)
  if len(shape) != 1:
    raise ValueError(f"{family} needs vector events, event_shape [D]; got {list(shape)}.")
  return shape[0], _common.check_layers(num_layers)


@_config.builder
def planar(event_shape, num_layers=8, activation="tanh", negative_slope=0.2, batch_shape=(),
           tolerance=None, max_iterations=100, validate_args=False, dtype=tf.float32, seed=0,
           name="planar"):
  """A stack of ``num_layers`` ``Planar`` layers (Rezende & Mohamed 2015).

  Args:
    event_shape: ``[D]``.
    num_layers: number of planar layers K.
    activation: ``"tanh"`` (inverse by bracketed root finding) or ``"leaky_relu"`` (closed
      form), with ``negative_slope`` for the latter.
    batch_shape: batch shape of every layer's parameters (a batch of independent flows).
    tolerance, max_iterations: of the tanh inverse (see ``Planar``).
    validate_args, dtype, seed, name: input/convergence checks, dtype of all variables, seed of
      their initial values (each layer starts as the identity with a random direction w), name
      prefix.
  """
  d, num_layers = _vector_layers(event_shape, num_layers, "planar")
  dtype = core.float_dtype(dtype)
  seeds = core.child_seeds(seed, num_layers)
  layers = [Planar(d, activation=activation, negative_slope=negative_slope,
                   batch_shape=batch_shape, tolerance=tolerance, max_iterations=max_iterations,
                   validate_args=validate_args, dtype=dtype, seed=seeds[i],
                   name=f"{name}_{i}") for i in range(num_layers)]
  return tfb.Chain(layers[::-1], name=name)


@_config.builder
def radial(event_shape, num_layers=8, batch_shape=(), validate_args=False, dtype=tf.float32,
           seed=0, name="radial"):
  """A stack of ``num_layers`` ``Radial`` layers (Rezende & Mohamed 2015).

  Args:
    event_shape: ``[D]``.
    num_layers: number of radial layers K.
    batch_shape: batch shape of every layer's parameters (a batch of independent flows).
    validate_args, dtype, seed, name: input checks, dtype of all variables, seed of the
      initial centres z0 (N(0, I); every layer starts as the identity), name prefix.
  """
  d, num_layers = _vector_layers(event_shape, num_layers, "radial")
  dtype = core.float_dtype(dtype)
  seeds = core.child_seeds(seed, num_layers)
  layers = [Radial(d, batch_shape=batch_shape, validate_args=validate_args, dtype=dtype,
                   seed=seeds[i], name=f"{name}_{i}") for i in range(num_layers)]
  return tfb.Chain(layers[::-1], name=name)
