"""Image-flow builders: the multi-scale RealNVP and the MintNet-style masked-convolution flow."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import core
from tfp_flows import masks as masks_lib
from tfp_flows import nets
from tfp_flows import numerics
from tfp_flows.bijectors.coupling import AffineCoupling
from tfp_flows.bijectors.masked_conv import LinearMaskedConv2D, MaskedConv2D
from tfp_flows.bijectors.reshape import FactorOut, Squeeze
from tfp_flows.bijectors.scaling import ActNorm
from tfp_flows.flows import _common

tfb = tfp.bijectors

__all__ = ["realnvp_image", "masked_conv"]


def realnvp_image(event_shape, num_layers=3, hidden_units=64, num_scales=2, num_blocks=2,
                   activation="relu", log_scale_bound=3., actnorm=True, conditional_shape=None,
                   dtype=tf.float32, seed=0, name="realnvp"):
  """Multi-scale RealNVP on ``[H, W, C]`` images (Dinh et al. 2017, section 3.6).

  Data -> latent (the ``inverse``), for each of the first ``num_scales - 1`` scales on an
  ``[h, w, c]`` input: ``num_layers`` checkerboard couplings (alternating masks), ``Squeeze``
  to ``[h/2, w/2, 4c]``, ``num_layers`` channel couplings, then ``FactorOut``: the first
  ``2c`` channels leave, the next scale transforms the other ``2c``; the scale ends with an
  un-squeeze so the latent has the image's shape. The last scale has ``num_layers + 1``
  checkerboard couplings. With ``actnorm`` every coupling is preceded (data side) by an
  ``ActNorm`` (data-dependent init on the first ``log_prob`` batch; RealNVP used batch norm).
  Conditioners are ``tff.nets.ConvResNet``s (``hidden_units`` channels, ``num_blocks``
  residual blocks, zero output: the flow starts at ActNorm's map).

  Args:
    event_shape: ``[H, W, C]``; ``H`` and ``W`` divisible by ``2^(num_scales - 1)`` and the
      last scale at least 2 pixels.
    num_layers: couplings per mask block (3 in the paper).
    hidden_units: channels of the ConvResNets (an int).
    num_scales: number of scales (1 = checkerboard couplings only, no squeeze).
    num_blocks: residual blocks per ConvResNet.
    activation, log_scale_bound: as in ``realnvp``.
    actnorm: put an ``ActNorm`` before every coupling.
    conditional_shape: ``[K]``: every coupling takes a ``conditional_input`` of that shape.
    dtype, seed, name: dtype of all variables, seed of their initial values, name prefix.
  """
  h, w, c = core.as_event_shape(event_shape)
  num_layers = _common.check_layers(num_layers)
  num_scales = int(num_scales)
  dtype = core.float_dtype(dtype)
  if num_scales < 1:
    raise ValueError(f"num_scales must be >= 1, got {num_scales}.")
  f = 2 ** (num_scales - 1)
  if h % f or w % f or (h // f) * (w // f) < 2:
    raise ValueError(f"realnvp: num_scales={num_scales} needs H and W divisible by {f} and at "
                     f"least 2 pixels at the last scale; got event shape {[h, w, c]}.")
  cond_size = 0 if conditional_shape is None else int(np.prod(
      core.as_event_shape(conditional_shape)))
  rng = np.random.default_rng(seed)

  def step(shape, mask, label):
    """[ActNorm, AffineCoupling] in data -> latent order."""
    layers = []
    if actnorm:
      layers.append(ActNorm(shape, dtype=dtype, name=f"{label}_actnorm"))
    net = nets.ConvResNet(shape[-1], 2 * shape[-1], hidden_units, num_blocks,
                          activation=activation, conditional_size=cond_size, dtype=dtype,
                          seed=int(rng.integers(2**31)), name=f"{label}_net")
    coupling = AffineCoupling(mask, net, log_scale_bound=log_scale_bound,
                              conditional_shape=[cond_size] if cond_size else None,
                              dtype=dtype, name=label)
    return layers + [coupling]

  def scale(shape, level):
    prefix = f"{name}_s{level}"
    last = level == num_scales - 1
    layers = []  # data -> latent order: Chain.inverse applies the first one first.
    for i in range(num_layers + 1 if last else num_layers):
      layers += step(shape, masks_lib.checkerboard(shape, invert=i % 2 == 1), f"{prefix}_cb{i}")
    if not last:
      hh, ww, cc = shape[0] // 2, shape[1] // 2, 4 * shape[2]
      layers.append(tfb.Invert(Squeeze(dtype=dtype, name=f"{prefix}_squeeze"),
                               name=f"{prefix}_squeeze_inv"))
      for i in range(num_layers):
        layers += step([hh, ww, cc], masks_lib.channel([hh, ww, cc], invert=i % 2 == 1),
                       f"{prefix}_ch{i}")
      inner = scale([hh, ww, cc // 2], level + 1)
      layers.append(FactorOut(inner, [hh, ww, cc], cc // 2, dtype=dtype,
                              name=f"{prefix}_factor_out"))
      layers.append(Squeeze(dtype=dtype, name=f"{prefix}_unsqueeze"))
    return tfb.Chain(layers, name=prefix if level else name)

  return scale([h, w, c], 0)


def masked_conv(event_shape, num_layers=4, hidden_units=None, activation="elu", linear=True,
                solver="newton", tolerance=None, max_iterations=None, init_scale=0.1,
                validate_args=False, dtype=tf.float32, seed=0, name="masked_conv"):
  """MintNet-style image flow: masked-convolution blocks in alternating raster orders.

  Layer ``i`` (data side first) is an optional ``LinearMaskedConv2D`` followed by a
  ``MaskedConv2D`` block, both in raster order for even ``i`` and reverse raster order for odd
  ``i``, so information flows both ways (the receptive field grows by a pixel per masked
  convolution). Density evaluation (``log_prob``, training) is explicit, one pass of masked convolutions per block;
  sampling solves each block by fixed-point iteration and each linear layer by a triangular
  solve (see ``tff.bijectors.MaskedConv2D``).

  Args:
    event_shape: ``[H, W, C]``.
    num_layers: number of (linear +) non-linear block pairs.
    hidden_units: hidden channels of every block, a positive multiple of C (default: the
      smallest multiple of C that is >= 32 and >= 8 C).
    activation: ``"elu"``, ``"softplus"`` or ``"tanh"``.
    linear: insert a ``LinearMaskedConv2D`` (exact inverse, constant log-det) before each block.
    solver, tolerance, max_iterations: the blocks' fixed-point solve (defaults: ``"newton"``,
      ``numerics.default_tolerance(dtype)``, ``numerics.DEFAULT_FIXED_POINT_ITERATIONS``).
    init_scale: scale of the initial weights (small: every layer starts near the identity).
    validate_args: input checks, and raise when a sampling solve does not converge.
    dtype, seed, name: dtype of all variables, seed of their initial values, name prefix.
  """
  shape = core.as_event_shape(event_shape)
  if len(shape) != 3:
    raise ValueError(f"masked_conv needs an image event_shape [H, W, C], got {list(shape)}.")
  num_layers = _common.check_layers(num_layers)
  dtype = core.float_dtype(dtype)
  rng = np.random.default_rng(seed)
  max_iterations = max_iterations or numerics.DEFAULT_FIXED_POINT_ITERATIONS
  layers = []
  for i in range(num_layers):
    order = "forward" if i % 2 == 0 else "reverse"
    if linear:
      layers.append(LinearMaskedConv2D(shape, order=order, init_scale=init_scale,
                                       seed=int(rng.integers(2**31)),
                                       validate_args=validate_args, dtype=dtype,
                                       name=f"{name}_linear_{i}"))
    layers.append(MaskedConv2D(shape, hidden_channels=hidden_units, order=order,
                               activation=activation, solver=solver, tolerance=tolerance,
                               max_iterations=max_iterations, init_scale=init_scale,
                               seed=int(rng.integers(2**31)), validate_args=validate_args,
                               dtype=dtype, name=f"{name}_block_{i}"))
  # Listed data side first: log_prob runs layers[0] first; sampling runs it last.
  return tfb.Chain(layers, name=name)
