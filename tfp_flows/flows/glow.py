"""The Glow builder: multi-scale ActNorm -> invertible 1x1 convolution -> coupling steps.

``glow(event_shape)`` assembles Glow (Kingma & Dhariwal 2018) from this library's parts. Data ->
latent (the ``inverse``, the direction ``log_prob`` runs), for each of ``num_levels`` levels on
an ``[h, w, c]`` input::

    Squeeze                               [h, w, c] -> [h/2, w/2, 4c]
    num_steps x ( ActNorm                 per-channel scale and shift, data-dependent init
                  InvertibleConv1x1       W = P L (U + diag(sign exp(s))): exact inverse and
                                          log-det, invertible for every value
                  coupling )              affine (Glow's sigmoid scale) or additive, on half
                                          the channels, zero-initialised ConvResNet conditioner
    split prior (not on the last level)   an affine coupling of the 2c channels that leave
                                          given the 2c that stay (Glow's learned prior of the
                                          factored-out latents; ``split_prior=False``: none)
    FactorOut(next level)                 the first 2c channels leave, the next level
                                          transforms the other 2c
    un-Squeeze                            the latent keeps the image's shape

so the whole flow is one ``tfb.Bijector`` on ``[H, W, C]`` events whose latent has the image's
shape (``tff.flows.distribution(flow, [H, W, C])``). ``log|det J|`` is the sum of the parts'
exact log-dets.

#### Examples

    flow = tff.flows.glow([28, 28, 1], num_levels=2, num_steps=4, hidden_units=64)
    chain = tfb.Chain([tff.bijectors.Dequantize(256), tff.bijectors.Logit(0.05), flow])
    dist = tff.flows.distribution(chain, [28, 28, 1])
    dist.log_prob(u)        # u = dequantised pixels in [0, 256); the first call initialises
                            # the ActNorms from this batch

#### References

[1] Kingma, Dhariwal. Glow: Generative Flow with Invertible 1x1 Convolutions. NeurIPS 2018.
[2] Dinh, Sohl-Dickstein, Bengio. Density estimation using Real NVP. ICLR 2017.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import core
from tfp_flows import masks as masks_lib
from tfp_flows import nets
from tfp_flows.bijectors.coupling import AdditiveCoupling, AffineCoupling
from tfp_flows.bijectors.glow import InvertibleConv1x1
from tfp_flows.bijectors.reshape import FactorOut, Squeeze
from tfp_flows.bijectors.scaling import ActNorm
from tfp_flows.flows import _common
from tfp_flows.flows import _config

tfb = tfp.bijectors

__all__ = ["glow"]

_COUPLINGS = ("affine", "additive")
_SCALES = ("sigmoid", "tanh")


@_config.builder
def glow(event_shape, num_levels=2, num_steps=4, hidden_units=64, num_blocks=1,
         coupling="affine", scale="sigmoid", log_scale_bound=3., split_prior=True,
         actnorm=True, activation="relu", conditional_shape=None, validate_args=False,
         dtype=tf.float32, seed=0, name="glow"):
  """Glow on ``[H, W, C]`` images: ``num_levels`` levels of ``num_steps`` flow steps each.

  Args:
    event_shape: ``[H, W, C]`` with ``H`` and ``W`` divisible by ``2^num_levels``.
    num_levels: levels (Glow's ``L``); each squeezes, and all but the last factor out half.
    num_steps: steps per level (Glow's ``K``): ActNorm, 1x1 convolution, coupling.
    hidden_units: channels of the coupling networks (``tff.nets.ConvResNet``: a 3x3
      convolution, ``num_blocks`` residual blocks of two 1x1 convolutions, a zero-initialised
      3x3 output convolution -- Glow's 3x3 / 1x1 / 3x3 network with a residual middle).
    num_blocks: residual blocks per coupling network (0: 3x3 -> 3x3).
    coupling: ``"affine"`` (default) or ``"additive"`` (volume preserving, as Glow's
      additive variant).
    scale: the affine couplings' scale: ``"sigmoid"`` (Glow's bounded ``sigmoid(r + 2)``,
      ``tff.nets.SigmoidScale``; default) or ``"tanh"`` (RealNVP's log-scale bounded by
      ``log_scale_bound``).
    log_scale_bound: the bound of ``"tanh"``.
    split_prior: learn the factored-out channels' prior given the remaining ones (an affine
      coupling with a one-hidden-layer network before each ``FactorOut``).
    actnorm: an ``ActNorm`` at the start (data side) of every step.
    activation: activation of the networks.
    conditional_shape: ``[K]``: every coupling takes a ``conditional_input`` of that shape.
    validate_args: input checks (shapes, finiteness) in every layer.
    dtype, seed, name: dtype of all variables, seed of their initial values, name prefix.
  """
  h, w, c = core.as_event_shape(event_shape)
  num_levels = int(num_levels)
  num_steps = _common.check_layers(num_steps)
  dtype = core.float_dtype(dtype)
  if num_levels < 1:
    raise ValueError(f"glow: num_levels must be >= 1, got {num_levels}.")
  if coupling not in _COUPLINGS:
    raise ValueError(f"glow: coupling must be one of {_COUPLINGS}, got {coupling!r}.")
  if scale not in _SCALES:
    raise ValueError(f"glow: scale must be one of {_SCALES}, got {scale!r}.")
  f = 2 ** num_levels
  if h % f or w % f:
    raise ValueError(f"glow: num_levels={num_levels} needs H and W divisible by {f}; got "
                     f"event shape {[h, w, c]}.")
  cond_size = 0 if conditional_shape is None else int(np.prod(
      core.as_event_shape(conditional_shape)))
  cond = [cond_size] if cond_size else None
  rng = np.random.default_rng(seed)
  common = dict(validate_args=validate_args, dtype=dtype)

  def affine(mask, shape, label, blocks):
    """An affine coupling of the mask-0 channels of ``shape`` (data -> latent)."""
    c_in, channels = _common.coupling_channels(mask)
    net = nets.ConvResNet(c_in, 2 * channels, hidden_units, blocks, hidden_kernel_size=1,
                          activation=activation, conditional_size=cond_size, dtype=dtype,
                          seed=int(rng.integers(2**31)), name=f"{label}_net")
    bound = log_scale_bound
    if scale == "sigmoid":
      net, bound = nets.SigmoidScale(net, channels, name=f"{label}_conditioner"), None
    return AffineCoupling(mask, net, log_scale_bound=bound, conditional_shape=cond,
                          name=label, **common)

  def step(shape, i, label):
    layers = []
    if actnorm:
      layers.append(ActNorm(shape, name=f"{label}_actnorm", **common))
    layers.append(InvertibleConv1x1(shape[-1], seed=int(rng.integers(2**31)),
                                    name=f"{label}_conv1x1", **common))
    mask = masks_lib.channel(shape, invert=i % 2 == 1)
    if coupling == "affine":
      layers.append(affine(mask, shape, f"{label}_coupling", num_blocks))
    else:
      net = nets.ConvResNet(*_common.coupling_channels(mask), hidden_units, num_blocks,
                            hidden_kernel_size=1, activation=activation,
                            conditional_size=cond_size, dtype=dtype,
                            seed=int(rng.integers(2**31)), name=f"{label}_coupling_net")
      layers.append(AdditiveCoupling(mask, net, conditional_shape=cond,
                                     name=f"{label}_coupling", **common))
    return layers

  def level(shape, index):
    prefix = f"{name}_l{index}"
    hh, ww, cc = shape
    sq = [hh // 2, ww // 2, 4 * cc]
    layers = [tfb.Invert(Squeeze(name=f"{prefix}_squeeze", **common),
                         validate_args=validate_args, name=f"{prefix}_squeeze_inv")]
    for i in range(num_steps):
      layers += step(sq, i, f"{prefix}_step{i}")
    if index < num_levels - 1:
      if split_prior:  # the first 2c channels (which leave) given the other 2c
        layers.append(affine(masks_lib.channel(sq, invert=True), sq, f"{prefix}_prior", 0))
      inner = level([hh // 2, ww // 2, 2 * cc], index + 1)
      layers.append(FactorOut(inner, sq, 2 * cc, name=f"{prefix}_factor_out", **common))
    layers.append(Squeeze(name=f"{prefix}_unsqueeze", **common))
    return tfb.Chain(layers, validate_args=validate_args, name=prefix if index else name)

  return level([h, w, c], 0)
