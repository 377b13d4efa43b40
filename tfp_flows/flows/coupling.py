"""Coupling-flow builders: NICE (additive couplings) and RealNVP (affine couplings).

``realnvp`` on ``[H, W, C]`` events builds the multi-scale image flow (``flows/image.py``).
``coupling_stack`` is the shared vector-event stack (also used by ``nsf``): ``num_layers``
couplings on alternating (default) or half masks, consecutive layers transforming the other
entries.
"""

import inspect

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import core
from tfp_flows import masks as masks_lib
from tfp_flows import nets
from tfp_flows.bijectors import transformers as transformers_lib
from tfp_flows.bijectors.coupling import AdditiveCoupling, AffineCoupling, Coupling
from tfp_flows.bijectors.scaling import Scaling
from tfp_flows.flows import _common
from tfp_flows.flows import _config
from tfp_flows.flows.image import realnvp_image

tfb = tfp.bijectors

__all__ = ["nice", "realnvp"]

PERMUTATIONS = ("alternate", "reverse", "random")
MASKS = ("half", "alternating")
MASK_ANCHORS = ("data", "latent")


def check_mask_anchor(mask_anchor):
  """``mask_anchor`` if it is one of ``MASK_ANCHORS``, else a ValueError naming it."""
  if mask_anchor not in MASK_ANCHORS:
    raise ValueError(f"mask_anchor must be one of {MASK_ANCHORS}, got {mask_anchor!r}.")
  return mask_anchor


def coupling_stack(event_shape, num_layers, hidden_units, activation, transformer,
                   permutation, conditional_shape, net_init, validate_args, dtype, seed,
                   family, name, make_coupling=None, mask="alternating", mask_anchor="data"):
  """Data-side-first list of ``num_layers`` couplings on ``[D]`` events (and permutations).

  ``mask``: ``"alternating"`` (default: even indices condition odd ones, as zuko's couplings;
  on a flattened image the neighbouring columns) or ``"half"`` (the first ``ceil(D/2)``
  entries condition the rest). On 8x8 digits (64-D, bench_density.py, test bits/dim
  early-stopped on a validation split) alternating masks reached 2.203 for RealNVP against
  2.249 with half masks (seeds 0-2), and 2.022 for NSF against 2.083 (seeds 0-1); for D = 2
  the two are the same.
  ``permutation``: ``"alternate"`` (consecutive layers use complementary masks: no
  permutation op), ``"reverse"`` (a ``tfb.Permute`` reversing the
  entries between layers; the same family of maps) or ``"random"`` (a seeded random
  ``tfb.Permute`` between layers).
  ``mask_anchor`` (with ``permutation="alternate"``): ``"data"`` (default: the coupling
  applied first to the data keeps the even entries, or the first half, as zuko's first
  coupling does) or ``"latent"`` (the coupling next to the base distribution does: the
  default before 2026-11-30, so with an even number of layers the data-side coupling kept the
  odd entries). The two are mirror images of each other, not the same flow: on 2spirals,
  zuko's NICE trained to 0.538 nats with its own orientation and to 0.634 with ours of
  then (paired, 5 of 5 seeds; benchmarks/README.md).
  ``make_coupling(mask, net, cond, layer_name)`` builds one layer (default: ``Coupling`` with
  ``transformer``).
  """
  d = _common.vector_size(event_shape, family)
  num_layers = _common.check_layers(num_layers)
  dtype = core.float_dtype(dtype)
  if permutation not in PERMUTATIONS:
    raise ValueError(f"permutation must be one of {PERMUTATIONS}, got {permutation!r}.")
  if mask not in MASKS:
    raise ValueError(f"mask must be one of {MASKS}, got {mask!r}.")
  check_mask_anchor(mask_anchor)
  transformer = transformers_lib.get(transformer)
  rng = np.random.default_rng(seed)
  cond_size = 0 if conditional_shape is None else int(np.prod(
      core.as_event_shape(conditional_shape)))
  cond = None if not cond_size else [cond_size]
  if make_coupling is None:
    def make_coupling(mask, net, cond, layer_name):
      return Coupling(mask, net, transformer, conditional_shape=cond,
                      validate_args=validate_args, dtype=dtype, name=layer_name)
  # Alternating masks in consecutive layers are half masks in the basis that lists the even
  # entries first: one permutation at each end of the stack instead of a gather per layer
  # (the same map, the same conditioner inputs; per-layer gathers or strided slices cost an
  # NSF step at D = 64 about 20 % under XLA).
  regroup = mask == "alternating" and permutation == "alternate" and d > 2
  order = np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2)]).astype(np.int32)
  layers = [_common.CheckedPermute(order, validate_args=validate_args,
                                   name=f"{name}_interleave")] if regroup else []
  for i in range(num_layers):  # i = 0: the coupling next to the base distribution
    from_anchor = num_layers - 1 - i if mask_anchor == "data" else i
    layer_mask = masks_lib.make("half" if regroup else mask, d,
                                invert=permutation == "alternate" and from_anchor % 2 == 1)
    if i and permutation != "alternate":
      layers.append(_common.permutation(d, permutation, rng, dtype, f"{name}_permute_{i}",
                                        validate_args))
    d_keep = int(layer_mask.sum())
    net = nets.MLP(d_keep, transformer.num_params * (d - d_keep), hidden_units, activation,
                   cond_size, dtype, int(rng.integers(2**31)), name=f"{name}_net_{i}",
                   init=net_init)
    layers.append(make_coupling(layer_mask, net, cond, f"{name}_coupling_{i}"))
  if regroup:  # data side: data -> latent lists the even entries first
    layers.append(_common.CheckedPermute(np.argsort(order).astype(np.int32),
                                         validate_args=validate_args,
                                         name=f"{name}_evens_first"))
  # tfb.Chain applies the last bijector first: list them data-side first.
  return layers[::-1]


@_config.builder
def nice(event_shape, num_layers=4, hidden_units=(256, 256), activation="relu",
         scaling=True, permutation="alternate", conditional_shape=None, net_init="random",
         validate_args=False, dtype=tf.float32, seed=0, name="nice", mask="alternating",
         mask_anchor="data"):
  """NICE: additive couplings on alternating masks and a diagonal scaling.

  Args:
    event_shape: ``[D]`` with D >= 2.
    num_layers: number of additive coupling layers.
    hidden_units: hidden sizes of each coupling's MLP (``tff.nets.MLP``).
    activation: activation of the MLPs.
    scaling: append NICE's ``Scaling`` layer (log-det sum(s)); without it the flow is
      volume preserving.
    permutation: ``'alternate'`` (complementary masks), ``'reverse'`` or ``'random'``
      (seeded) permutation between couplings; see ``coupling_stack``.
    conditional_shape: shape of a conditional input fed to every coupling, or None.
    net_init: initialisation of the MLPs (``tff.nets.MLP``'s ``init``). Default
      ``"random"`` (zuko's networks: every layer drawn, the output layer too), so NICE starts
      at a random volume-preserving map, not the identity; ``"uniform"`` starts at the
      identity (the default before 2026-11-30). Measured with the data-side mask orientation
      (docs/coupling.md, "Which end the masks start from"): 2spirals KL 0.574 against 0.631
      with ``"uniform"`` (seeds 0-4, lower in 3; single runs spread by +-0.1); on 8x8 digits
      2.296 bits/dim early-stopped, against 2.306 for the defaults before (``"uniform"``,
      ``mask_anchor="latent"``; lower in 4 of 5 seeds).
    validate_args: check event shapes and finiteness of inputs in every layer.
    dtype, seed, name: dtype of all variables, seed of their initial values, name prefix.
    mask: ``'alternating'`` (default) or ``'half'`` coupling masks (``coupling_stack``).
    mask_anchor: with ``permutation='alternate'``: ``'data'`` (default: the coupling applied
      first to the data keeps the even entries, as zuko's) or ``'latent'`` (the orientation
      before 2026-11-30; the two differ for an even ``num_layers``); ``coupling_stack``.
  """
  def make_coupling(mask, net, cond, layer_name):
    return AdditiveCoupling(mask, net, conditional_shape=cond, validate_args=validate_args,
                            dtype=dtype, name=layer_name)

  layers = coupling_stack(event_shape, num_layers, hidden_units, activation, "additive",
                          permutation, conditional_shape, net_init, validate_args, dtype, seed,
                          "nice", name, make_coupling, mask, mask_anchor)
  if scaling:
    layers.append(Scaling(core.as_event_shape(event_shape), validate_args=validate_args,
                          dtype=dtype, name=f"{name}_scaling"))
  return tfb.Chain(layers, validate_args=validate_args, name=name)


@_config.builder
def realnvp(event_shape, num_layers=None, hidden_units=None, activation="relu",
            log_scale_bound=3., permutation="alternate", conditional_shape=None,
            net_init="uniform", validate_args=False, dtype=tf.float32, seed=0, name="realnvp",
            mask="alternating", log_scale_clamp="tanh", affine_direction="inverse",
            mask_anchor="data",
            **image_kwargs):
  """RealNVP: affine couplings with bounded log-scales on alternating masks.

  Args:
    event_shape: ``[D]`` (vectors) or ``[H, W, C]`` (the multi-scale image flow: see
      ``flows.image.realnvp_image`` for its extra arguments ``num_scales``, ``num_blocks``,
      ``actnorm``).
    num_layers: number of affine coupling layers (vectors, default 8); for images, couplings
      per mask block (default 3).
    hidden_units: hidden sizes of each coupling's MLP (``tff.nets.MLP``; default (256, 256));
      for images the channels of each ``tff.nets.ConvResNet`` (default 64).
    activation: activation of the networks.
    log_scale_bound: bound ``b`` of the soft-clamped log-scale (see ``AffineCoupling``).
    permutation: ``'alternate'`` (complementary masks), ``'reverse'`` or ``'random'``
      (seeded) permutation between couplings (vectors; see ``coupling_stack``).
    conditional_shape: shape of a conditional input fed to every coupling, or None.
    net_init: initialisation of the MLPs (vectors; ``tff.nets.MLP``'s ``init``).
    validate_args: check event shapes and finiteness of inputs in every layer.
    dtype, seed, name: dtype of all variables, seed of their initial values, name prefix.
    mask: vectors: ``'alternating'`` (default) or ``'half'`` coupling masks
      (``coupling_stack``).
    mask_anchor: vectors with ``permutation='alternate'``: ``'data'`` (default: the coupling
      applied first to the data keeps the even entries, as zuko's) or ``'latent'`` (the
      orientation before 2026-11-30; the two differ for an even ``num_layers``);
      ``coupling_stack``. Image flows check the value and keep their own masks.
    log_scale_clamp: vectors: ``"tanh"`` (default) or ``"softsign"`` (zuko's clamp; see
      ``transformers.Affine``).
    affine_direction: vectors: ``"inverse"`` (default: the density direction data -> latent
      is ``z_B = x_B exp(s(x_A)) + t(x_A)``, as in zuko) or ``"forward"`` (sampling is
      ``x_B = z_B exp(s(z_A)) + t(z_A)``, TFP's RealNVP; the default before this argument
      existed, and what configs saved then rebuild). Image flows accept either and keep
      their own map. Measured (docs/coupling.md, benchmarks/README.md): "inverse" reached a
      lower mean KL than "forward" on the four 2-D densities (ten seeds; by more than one
      standard error on 6gaussians and 2spirals at five) and, early-stopped on 8x8 digits,
      2.210 against 2.228 bits/dim (lower in 5 of 5 seeds; both with
      ``mask_anchor="latent"``, the default then).
  """
  shape = core.as_event_shape(event_shape)
  if len(shape) == 3:
    check_mask_anchor(mask_anchor)  # vectors: coupling_stack checks it
    _common.affine("realnvp", log_scale_bound, log_scale_clamp, affine_direction, image=True)
    if validate_args:
      if "validate_args" not in inspect.signature(realnvp_image).parameters:
        raise ValueError("realnvp: validate_args=True is not available for image flows yet.")
      image_kwargs["validate_args"] = True
    return realnvp_image(shape, num_layers=3 if num_layers is None else num_layers,
                         hidden_units=64 if hidden_units is None else hidden_units,
                         activation=activation, log_scale_bound=log_scale_bound,
                         conditional_shape=conditional_shape, dtype=dtype, seed=seed,
                         name=name, **image_kwargs)
  if image_kwargs:
    raise TypeError(f"unexpected arguments for vector RealNVP: {sorted(image_kwargs)}.")
  transformer = _common.affine("realnvp", log_scale_bound, log_scale_clamp, affine_direction)

  def make_coupling(mask, net, cond, layer_name):
    return AffineCoupling(mask, net, log_scale_bound=log_scale_bound, conditional_shape=cond,
                          validate_args=validate_args, dtype=dtype, name=layer_name,
                          log_scale_clamp=log_scale_clamp, affine_direction=affine_direction)

  layers = coupling_stack(
      shape, 8 if num_layers is None else num_layers,
      (256, 256) if hidden_units is None else hidden_units, activation, transformer,
      permutation, conditional_shape, net_init, validate_args, dtype, seed, "realnvp", name,
      make_coupling, mask, mask_anchor)
  return tfb.Chain(layers, validate_args=validate_args, name=name)
