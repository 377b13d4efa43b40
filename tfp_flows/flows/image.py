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
from tfp_flows.flows import _config

tfb = tfp.bijectors

__all__ = ["realnvp_image", "masked_conv"]


def _space_to_depth(mask):
  """A numpy ``[H, W, C]`` mask in ``Squeeze``'s ``[H/2, W/2, 4C]`` layout."""
  h, w, c = mask.shape
  t = mask.reshape(h // 2, 2, w // 2, 2, c).transpose(0, 2, 1, 3, 4)
  return t.reshape(h // 2, w // 2, 4 * c)


_SCALES = ("sigmoid", "tanh")


@_config.builder
def realnvp_image(event_shape, num_layers=3, hidden_units=64, num_scales=2, num_blocks=1,
                   hidden_kernel_size=1, activation="relu", scale="sigmoid", log_scale_bound=3.,
                   scale_offset=-1., latent_shift=False, actnorm=True, squeezed_checkerboard=True,
                   conditional_shape=None, validate_args=False, dtype=tf.float32, seed=0,
                   name="realnvp"):
  """Multi-scale RealNVP on ``[H, W, C]`` images (Dinh et al. 2017, section 3.6).

  Data -> latent (the ``inverse``), for each of the first ``num_scales - 1`` scales on an
  ``[h, w, c]`` input: ``num_layers`` checkerboard couplings (alternating masks), ``Squeeze``
  to ``[h/2, w/2, 4c]``, ``num_layers`` channel couplings, then ``FactorOut``: the first
  ``2c`` channels leave, the next scale transforms the other ``2c``; the scale ends with an
  un-squeeze so the latent has the image's shape. The last scale has ``num_layers + 1``
  checkerboard couplings. With ``actnorm`` every coupling is preceded (data side) by an
  ``ActNorm`` (data-dependent init on the first ``log_prob`` batch; RealNVP used batch norm).
  Conditioners are ``tff.nets.ConvResNet``s (``hidden_units`` channels, ``num_blocks``
  residual blocks of ``hidden_kernel_size`` convolutions -- by default Glow's 3x3 / 1x1 /
  3x3 shape --, zero output: every coupling starts at the identity).

  Checkerboard couplings on an even-sized ``[h, w, c]`` run, with ``squeezed_checkerboard``
  (default), in ``Squeeze``'s ``[h/2, w/2, 4c]`` layout: the same checkerboard mask written
  in space-to-depth order is a channel mask there, so the conditioner works on a quarter of
  the pixels (4x fewer convolution FLOPs) and the scale squeezes once, before its first
  coupling. The flow is the same family (the same entries condition the same entries); only
  the networks' layout differs. Odd-sized last scales use full-resolution masks.

  The coupling scale (``scale``) is by default ``"sigmoid"`` with ``scale_offset=-1``
  (``tff.nets.SigmoidScale``): one coupling expands the data -> latent direction by at most
  ``1 / sigmoid(-1) = 3.7x`` and contracts it freely. On 256-level images with a flat
  background (MNIST under ``Logit(0.05)``) a 1-level bin is ~0.07 wide in logit space, so a
  good density needs large expansions; the largest expansion a coupling may apply sets both
  the bits/dim reachable in a given number of steps and how far an image the networks did not
  expect is thrown (a loss spike). Measured (``benchmarks/study_realnvp_stability.py``; 28x28
  MNIST, 2 scales, 32 channels, Adam 1e-3, batch 64, 300 steps, gradients clipped to global
  norm 10; largest rise of the training loss above its running minimum / test
  bits/dim; seed 0, then seed 1 where given):

      sigmoid, a = 0  (cap 2x)     0.77 / 3.29
      sigmoid, a = -1 (cap 3.7x)   1.05 / 3.01,  1.29 / 2.81      <- default
      sigmoid, a = -2 (cap 8.4x)   6.62 / 2.67
      tanh, bound 2   (cap 7.4x)   1.46 / 2.79,  127 / 2.65
      tanh, bound 3   (cap 20x)    3.16 / 2.62   (over 400 steps, 3 seeds: spikes 3 to 1e5)

  Without clipping the larger caps spiked by 1.7-28 bits/dim (a = -2: 27.8 with seed 1). No
  setting tried removed the trade-off (warm-up and a shift in latent units made it worse;
  docs/images.md); for the best bits/dim at a fixed budget take ``scale="tanh"`` and
  expect spikes.

  Args:
    event_shape: ``[H, W, C]``; ``H`` and ``W`` divisible by ``2^(num_scales - 1)`` and the
      last scale at least 2 pixels.
    num_layers: couplings per mask block (3 in the paper).
    hidden_units: channels of the ConvResNets (an int).
    num_scales: number of scales (1 = checkerboard couplings only, no factor-out).
    num_blocks: residual blocks per ConvResNet.
    hidden_kernel_size: kernel size inside the residual blocks (1: Glow's 3x3 / 1x1 / 3x3
      network shape, a ninth of the cost of the hidden 3x3 convolutions).
    activation: activation of the networks.
    scale: ``"sigmoid"`` (Glow's bounded scale, default) or ``"tanh"`` (RealNVP's log-scale
      soft-clamped to ``[-log_scale_bound, log_scale_bound]``).
    log_scale_bound: the bound of ``"tanh"``.
    scale_offset: ``a`` of ``"sigmoid"``: one coupling expands the data -> latent direction
      by at most ``1 / sigmoid(a)`` (-1: 3.7x, the default; -2: 8.4x; 0: 2x; Glow's 2:
      13.5 %).
    latent_shift: with ``"sigmoid"``, the conditioners' shift in latent units
      (``tff.nets.SigmoidScale``): ``z = x exp(-s) - t`` instead of ``(x - t) exp(-s)``.
    actnorm: put an ``ActNorm`` before every coupling.
    squeezed_checkerboard: run checkerboard couplings in the squeezed layout (see above).
    conditional_shape: ``[K]``: every coupling takes a ``conditional_input`` of that shape.
    validate_args: input checks (shapes, finiteness) in every layer.
    dtype, seed, name: dtype of all variables, seed of their initial values, name prefix.
  """
  h, w, c = core.as_event_shape(event_shape)
  num_layers = _common.check_layers(num_layers)
  num_scales = int(num_scales)
  dtype = core.float_dtype(dtype)
  if num_scales < 1:
    raise ValueError(f"num_scales must be >= 1, got {num_scales}.")
  if scale not in _SCALES:
    raise ValueError(f"realnvp: scale must be one of {_SCALES}, got {scale!r}.")
  f = 2 ** (num_scales - 1)
  if h % f or w % f or (h // f) * (w // f) < 2:
    raise ValueError(f"realnvp: num_scales={num_scales} needs H and W divisible by {f} and at "
                     f"least 2 pixels at the last scale; got event shape {[h, w, c]}.")
  cond_size = 0 if conditional_shape is None else int(np.prod(
      core.as_event_shape(conditional_shape)))
  rng = np.random.default_rng(seed)
  common = dict(validate_args=validate_args, dtype=dtype)

  def step(shape, mask, label):
    """[ActNorm, AffineCoupling] in data -> latent order."""
    layers = []
    if actnorm:
      layers.append(ActNorm(shape, name=f"{label}_actnorm", **common))
    c_in, c_out = _common.coupling_channels(mask)
    net = nets.ConvResNet(c_in, 2 * c_out, hidden_units, num_blocks,
                          hidden_kernel_size=hidden_kernel_size, activation=activation,
                          conditional_size=cond_size, dtype=dtype,
                          seed=int(rng.integers(2**31)), name=f"{label}_net")
    bound = log_scale_bound
    if scale == "sigmoid":
      net, bound = nets.SigmoidScale(net, c_out, scale_offset, latent_shift=latent_shift,
                                     name=f"{label}_conditioner"), None
    coupling = AffineCoupling(mask, net, log_scale_bound=bound,
                              conditional_shape=[cond_size] if cond_size else None,
                              name=label, **common)
    return layers + [coupling]

  def squeeze(label):  # data -> latent: [h, w, c] -> [h/2, w/2, 4c]
    return tfb.Invert(Squeeze(name=f"{label}_squeeze", **common), validate_args=validate_args,
                      name=f"{label}_squeeze_inv")

  def unsqueeze(label):
    return Squeeze(name=f"{label}_unsqueeze", **common)

  def scale_level(shape, level):
    prefix = f"{name}_s{level}"
    last = level == num_scales - 1
    hh, ww, cc = shape
    even = hh % 2 == 0 and ww % 2 == 0
    layers = []  # data -> latent order: Chain.inverse applies the first one first.
    n_cb = num_layers + 1 if last else num_layers
    if squeezed_checkerboard and even:
      sq = [hh // 2, ww // 2, 4 * cc]
      layers.append(squeeze(prefix))
      for i in range(n_cb):
        mask = _space_to_depth(masks_lib.checkerboard(shape, invert=i % 2 == 1))
        layers += step(sq, mask, f"{prefix}_cb{i}")
      if last:
        layers.append(unsqueeze(prefix))
    else:
      for i in range(n_cb):
        layers += step(shape, masks_lib.checkerboard(shape, invert=i % 2 == 1),
                       f"{prefix}_cb{i}")
      if not last:
        layers.append(squeeze(prefix))
    if not last:
      sq = [hh // 2, ww // 2, 4 * cc]
      for i in range(num_layers):
        layers += step(sq, masks_lib.channel(sq, invert=i % 2 == 1), f"{prefix}_ch{i}")
      inner = scale_level([hh // 2, ww // 2, 2 * cc], level + 1)
      layers.append(FactorOut(inner, sq, 2 * cc, name=f"{prefix}_factor_out", **common))
      layers.append(unsqueeze(prefix))
    return tfb.Chain(layers, validate_args=validate_args, name=prefix if level else name)

  return scale_level([h, w, c], 0)


@_config.builder
def masked_conv(event_shape, num_layers=4, hidden_units=None, activation="elu", linear=True,
                solver="auto", tolerance=None, max_iterations=None, init_scale=0.1,
                validate_args=False, dtype=tf.float32, seed=0, name="masked_conv"):
  """MintNet-style image flow: masked-convolution blocks in alternating raster orders.

  Layer ``i`` (data side first) is an optional ``LinearMaskedConv2D`` followed by a
  ``MaskedConv2D`` block, both in raster order for even ``i`` and reverse raster order for odd
  ``i``, so information flows both ways (the receptive field grows by a pixel per masked
  convolution). Density evaluation (``log_prob``, training) is explicit, one pass of masked
  convolutions per block; sampling solves each block by fixed-point iteration and each linear
  layer by back-substitution (see ``tff.bijectors.MaskedConv2D``, docs/images.md).

  Args:
    event_shape: ``[H, W, C]``.
    num_layers: number of (linear +) non-linear block pairs.
    hidden_units: hidden channels of every block, a positive multiple of C (default: the
      smallest multiple of C that is >= 32 and >= 8 C).
    activation: ``"elu"``, ``"softplus"`` or ``"tanh"``.
    linear: insert a ``LinearMaskedConv2D`` (exact inverse, constant log-det) before each block.
    solver, tolerance, max_iterations: the blocks' fixed-point solve (defaults: ``"auto"``,
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
  return tfb.Chain(layers, validate_args=validate_args, name=name)
