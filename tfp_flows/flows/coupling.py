"""Coupling-flow builders: NICE (additive couplings) and RealNVP (affine couplings).

``realnvp`` on ``[H, W, C]`` events builds the multi-scale image flow (``flows/image.py``).
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import core
from tfp_flows import masks as masks_lib
from tfp_flows import nets
from tfp_flows.bijectors.coupling import AdditiveCoupling, AffineCoupling
from tfp_flows.bijectors.scaling import Scaling
from tfp_flows.flows import _common
from tfp_flows.flows.image import realnvp_image

tfb = tfp.bijectors

__all__ = ["nice", "realnvp"]


def _coupling_stack(event_shape, num_layers, hidden_units, dtype, seed, permutation,
                    conditional_shape, make_layer, family, name):
  d = _common.vector_size(event_shape, family)
  num_layers = _common.check_layers(num_layers)
  dtype = core.float_dtype(dtype)
  rng = np.random.default_rng(seed)
  cond_size = 0 if conditional_shape is None else int(np.prod(
      core.as_event_shape(conditional_shape)))
  mask = masks_lib.half(d)
  d_keep = int(mask.sum())
  layers = []
  for i in range(num_layers):
    if i:
      layers.append(_common.permutation(d, permutation, rng, dtype, f"{name}_permute_{i}"))
    layer = make_layer(i, mask, d_keep, d - d_keep, cond_size, int(rng.integers(2**31)))
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
    layers.append(Scaling(core.as_event_shape(event_shape), dtype=dtype,
                          name=f"{name}_scaling"))
  return tfb.Chain(layers, name=name)


def realnvp(event_shape, num_layers=None, hidden_units=None, activation="relu",
            log_scale_bound=3., permutation="reverse", conditional_shape=None,
            dtype=tf.float32, seed=0, name="realnvp", **image_kwargs):
  """RealNVP: affine couplings with bounded log-scales, permuted between layers.

  Args:
    event_shape: ``[D]`` (vectors) or ``[H, W, C]`` (the multi-scale image flow: see
      ``_realnvp_image`` for its extra arguments ``num_scales``, ``num_blocks``, ``actnorm``).
    num_layers: number of affine coupling layers (vectors, default 8); for images, couplings
      per mask block (default 3).
    hidden_units: hidden sizes of each coupling's MLP (``tff.nets.MLP``; default (256, 256));
      for images the channels of each ``tff.nets.ConvResNet`` (default 64).
    activation: activation of the networks.
    log_scale_bound: bound ``b`` of the soft-clamped log-scale (see ``AffineCoupling``).
    permutation: 'reverse' or 'random' (seeded) permutation between couplings (vectors).
    conditional_shape: shape of a conditional input fed to every coupling, or None.
    dtype, seed, name: dtype of all variables, seed of their initial values, name prefix.
  """
  shape = core.as_event_shape(event_shape)
  if len(shape) == 3:
    return realnvp_image(shape, num_layers=3 if num_layers is None else num_layers,
                          hidden_units=64 if hidden_units is None else hidden_units,
                          activation=activation, log_scale_bound=log_scale_bound,
                          conditional_shape=conditional_shape, dtype=dtype, seed=seed,
                          name=name, **image_kwargs)
  if image_kwargs:
    raise TypeError(f"unexpected arguments for vector RealNVP: {sorted(image_kwargs)}.")
  num_layers = 8 if num_layers is None else num_layers
  hidden_units = (256, 256) if hidden_units is None else hidden_units

  def make_layer(i, mask, d_keep, d_change, cond_size, layer_seed):
    net = nets.MLP(d_keep, 2 * d_change, hidden_units, activation, cond_size, dtype,
                   layer_seed, name=f"{name}_net_{i}")
    cond = None if not cond_size else [cond_size]
    return AffineCoupling(mask, net, log_scale_bound=log_scale_bound, conditional_shape=cond,
                          dtype=dtype, name=f"{name}_coupling_{i}")

  return tfb.Chain(_coupling_stack(shape, num_layers, hidden_units, dtype, seed, permutation,
                                   conditional_shape, make_layer, "realnvp", name), name=name)
