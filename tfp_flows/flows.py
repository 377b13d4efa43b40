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
from tfp_flows import core
from tfp_flows.bijectors.coupling import AdditiveCoupling, AffineCoupling
from tfp_flows.bijectors.planar import Planar, Radial
from tfp_flows.bijectors.reshape import FactorOut, Squeeze
from tfp_flows.bijectors.scaling import ActNorm, Scaling
from tfp_flows.bijectors.gaussianization import HouseholderRotation, MarginalGaussianization

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["distribution", "conditional_kwargs", "nice", "realnvp", "maf", "iaf",
           "planar", "radial", "masked_conv", "gaussianization", "rbig"]

# Attribute set on every layer that takes a ``conditional_input`` (read by conditional_kwargs).
_CONDITIONAL = "_tff_conditional"


def distribution(bijector, event_shape, dtype=None):
  """``TransformedDistribution`` of a standard normal on ``event_shape`` through ``bijector``.

  The base dtype is ``dtype`` if given, else the bijector's, else (for a Chain of
  dtype-agnostic parts, whose ``dtype`` is None) that of its floating variables, else float32.
  """
  if dtype is None:
    dtype = bijector.dtype
  if dtype is None:
    float_dtypes = {v.dtype for v in bijector.variables if v.dtype.is_floating}
    if len(float_dtypes) > 1:
      raise TypeError(f"{bijector.name} mixes variable dtypes {sorted(d.name for d in float_dtypes)}"
                      "; pass dtype= explicitly.")
    dtype = float_dtypes.pop() if float_dtypes else tf.float32
  dtype = core.float_dtype(dtype)
  shape = list(core.as_event_shape(event_shape))
  base = tfd.Sample(tfd.Normal(tf.constant(0., dtype), tf.constant(1., dtype)), shape)
  return tfd.TransformedDistribution(base, bijector)


def conditional_kwargs(bijector, conditional_input):
  """Nested ``bijector_kwargs`` routing ``conditional_input`` to every conditional layer."""
  # tfb.Chain(...) and tfb.Invert(...) build private base classes when their parts are not
  # composite tensors, so test against those (Composition routes kwargs by part name).
  if isinstance(bijector, tfb.Composition):
    out = {}
    for b in bijector.bijectors:
      sub = conditional_kwargs(b, conditional_input)
      if sub:
        out[b.name] = sub
    return out
  if isinstance(bijector, core.INVERT_TYPES):
    if getattr(bijector, _CONDITIONAL, False):  # e.g. iaf layers: Invert passes kwargs on
      return {"conditional_input": conditional_input}
    return conditional_kwargs(bijector.bijector, conditional_input)
  if isinstance(bijector, FactorOut):  # passes its kwargs on to its inner flow
    return conditional_kwargs(bijector.inner, conditional_input)
  if getattr(bijector, _CONDITIONAL, False):
    return {"conditional_input": conditional_input}
  return {}


def _vector_size(event_shape, family):
  shape = core.as_event_shape(event_shape)
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
  dtype = core.float_dtype(dtype)
  rng = np.random.default_rng(seed)
  cond_size = 0 if conditional_shape is None else int(np.prod(
      core.as_event_shape(conditional_shape)))
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
    return _realnvp_image(shape, num_layers=3 if num_layers is None else num_layers,
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


def _realnvp_image(event_shape, num_layers=3, hidden_units=64, num_scales=2, num_blocks=2,
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
  num_layers = _check_layers(num_layers)
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
    setattr(coupling, _CONDITIONAL, cond_size > 0)
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


def _made_stack(event_shape, num_layers, hidden_units, activation, conditional_shape,
                dtype, seed, name, invert):
  d = _vector_size(event_shape, "maf" if not invert else "iaf")
  num_layers = _check_layers(num_layers)
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

def _vector_layers(event_shape, num_layers, family):
  shape = core.as_event_shape(event_shape)
  if len(shape) != 1:
    raise ValueError(f"{family} needs vector events, event_shape [D]; got {list(shape)}.")
  return shape[0], _check_layers(num_layers)


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
  rng = np.random.default_rng(seed)
  layers = [Planar(d, activation=activation, negative_slope=negative_slope,
                   batch_shape=batch_shape, tolerance=tolerance, max_iterations=max_iterations,
                   validate_args=validate_args, dtype=dtype, seed=int(rng.integers(2**31)),
                   name=f"{name}_{i}") for i in range(num_layers)]
  return tfb.Chain(layers[::-1], name=name)


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
  rng = np.random.default_rng(seed)
  layers = [Radial(d, batch_shape=batch_shape, validate_args=validate_args, dtype=dtype,
                   seed=int(rng.integers(2**31)), name=f"{name}_{i}")
            for i in range(num_layers)]
  return tfb.Chain(layers[::-1], name=name)


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
  from tfp_flows.bijectors.masked_conv import LinearMaskedConv2D, MaskedConv2D
  from tfp_flows import numerics

  shape = core.as_event_shape(event_shape)
  if len(shape) != 3:
    raise ValueError(f"masked_conv needs an image event_shape [H, W, C], got {list(shape)}.")
  num_layers = _check_layers(num_layers)
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


_ROTATIONS = ("householder", "pca", "random")


def gaussianization(event_shape, num_layers=4, num_components=16, rotation="householder",
                    num_reflections=None, data_init=True, bandwidth_factor=1.,
                    validate_args=False, dtype=tf.float32, seed=0, name="gaussianization"):
  """Gaussianization flow (Meng et al. 2020): marginal Gaussianizations and rotations.

  Data side first: ``[marginal_0, rotation_0, marginal_1, ..., rotation_{L-2}, marginal_{L-1}]``
  (``tff.bijectors.MarginalGaussianization`` / ``HouseholderRotation``), so ``log_prob`` makes
  the marginals Gaussian, rotates, and repeats; one layer is a marginal Gaussianization.

  Args:
    event_shape: ``[D]``.
    num_layers: number of marginal Gaussianization layers L (L - 1 rotations between them).
    num_components: logistics per dimension in each marginal layer.
    rotation: ``"householder"`` (trained; loaded with the principal axes of the data when
      ``data_init``, random otherwise), ``"pca"`` (fixed PCA rotations, need ``data_init``)
      or ``"random"`` (fixed random orthogonal).
    num_reflections: reflections per trained rotation (default D).
    data_init: initialise every layer from the first batch passed through ``log_prob`` /
      ``inverse`` (each layer from the previous layer's output); state is kept in variables.
    bandwidth_factor: scales the rule-of-thumb bandwidths of the data-dependent init.
    validate_args, dtype, seed, name: as for every builder.

  Returns:
    A ``tfb.Chain``; its variables exist on return.
  """
  shape = core.as_event_shape(event_shape)
  if len(shape) != 1:
    raise ValueError(f"gaussianization needs event_shape [D], got {list(shape)}.")
  d = shape[0]
  num_layers = _check_layers(num_layers)
  dtype = core.float_dtype(dtype)
  if rotation not in _ROTATIONS:
    raise ValueError(f"rotation must be one of {_ROTATIONS}, got {rotation!r}.")
  if rotation == "pca" and not data_init:
    raise ValueError("rotation='pca' sets the rotations from data: it needs data_init=True.")
  rng = np.random.default_rng(seed)
  layers = []
  for i in range(num_layers):
    if i:
      pca = rotation == "pca" or (rotation == "householder" and data_init)
      layers.append(HouseholderRotation(
          d, num_reflections=None if pca else num_reflections, init="pca" if pca else "random",
          trainable=rotation == "householder", validate_args=validate_args, dtype=dtype,
          seed=int(rng.integers(2**31)), name=f"{name}_rotation_{i}"))
    layers.append(MarginalGaussianization(
        d, num_components=num_components, data_init=data_init,
        bandwidth_factor=bandwidth_factor, validate_args=validate_args, dtype=dtype,
        name=f"{name}_marginal_{i}"))
  # Listed data side first: log_prob runs layers[0] first; sampling runs it last.
  return tfb.Chain(layers, name=name)


def rbig(x, num_layers=8, num_components=32, rotation="householder", batch_size=None, **kwargs):
  """Training-free fit: iterative Gaussianization (RBIG, Laparra et al. 2011) of data ``x``.

  Builds ``gaussianization(x.shape[-1:], num_layers, num_components, rotation, ...)`` and
  passes ``x`` through it once in the density direction: each marginal layer takes its
  anchors from the quantiles of its input (bandwidths by Silverman's rule) and each rotation
  the principal axes of its input, so the flow Gaussianizes ``x`` with no gradient step. The
  result is an ordinary flow whose variables can then be refined by maximum likelihood
  (``rotation="householder"`` keeps the rotations trainable too).

  Args:
    x: data ``[N, D]`` (numpy or tensor); its dtype is the flow's unless ``dtype`` is given.
    num_layers, num_components, rotation: as for ``gaussianization`` (``"pca"`` or the
      PCA-initialised ``"householder"``; ``"random"`` rotations are the other classic RBIG).
    batch_size: use only the first ``batch_size`` rows for the fit (None: all of ``x``).
    **kwargs: further arguments of ``gaussianization`` (``bandwidth_factor``, ``seed``,
      ``name``, ``dtype``, ``validate_args``).

  Returns:
    The fitted ``tfb.Chain`` (every "initialised" flag set).
  """
  dtype = core.float_dtype(kwargs.pop("dtype", getattr(x, "dtype", tf.float32)))
  x = tf.convert_to_tensor(x, dtype)
  if x.shape.rank != 2:
    raise ValueError(f"rbig needs data of shape [N, D], got {x.shape.as_list()}.")
  if batch_size is not None:
    x = x[:int(batch_size)]
  if kwargs.pop("data_init", True) is not True:
    raise ValueError("rbig fits from data: data_init cannot be turned off.")
  flow = gaussianization([int(x.shape[-1])], num_layers=num_layers,
                         num_components=num_components, rotation=rotation, data_init=True,
                         dtype=dtype, **kwargs)
  flow.inverse(x)  # initialises every layer, data side first
  return flow
