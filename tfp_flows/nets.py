"""Conditioner networks: good defaults for the parameter networks of coupling layers.

Bijector files hold the math; the networks that produce their parameters live here. Every
network is a ``tf.Module`` built eagerly (its variables exist on return), so tf.Module
traversal, ``tf.train.Checkpoint``, ``tfp.vi`` and our Keras wrapper all find them.

A conditioner is any callable ``net(x, conditional_input=None) -> tensor``. By default the
output layer starts at zero, so a flow built from these starts at the identity map
(``init="random"`` draws it too).

``conditioner_variables(fn)`` collects the ``tf.Variable``s behind any callable, including
Keras 3 layers (whose ``keras.Variable``s are invisible to tf.Module traversal).
"""

import numpy as np
import tensorflow as tf

from tfp_flows.core import float_dtype

__all__ = ["MLP", "ResidualMLP", "MADE", "ConvResNet", "SigmoidScale", "conditioner_variables",
           "as_variable_list"]

_ACTIVATIONS = {"relu": tf.nn.relu, "tanh": tf.math.tanh, "elu": tf.nn.elu,
                "gelu": tf.nn.gelu, "silu": tf.nn.silu, "swish": tf.nn.silu}


def _activation(activation):
  if callable(activation):
    return activation
  if activation not in _ACTIVATIONS:
    raise ValueError(f"unknown activation {activation!r}; expected a callable or one of "
                     f"{sorted(_ACTIVATIONS)}.")
  return _ACTIVATIONS[activation]


def _check_units(hidden_units):
  units = [hidden_units] if isinstance(hidden_units, (int, np.integer)) else list(hidden_units)
  if not units or any(int(u) <= 0 for u in units):
    raise ValueError(f"hidden_units must be positive ints, got {hidden_units!r}.")
  return [int(u) for u in units]


_INITS = ("uniform", "glorot", "random")
def _check_init(init):
  if init not in _INITS:
    raise ValueError(f"init must be one of {_INITS}, got {init!r}.")
  return init


def _init_values(rng, fan_in, fan_out, init, output, fan_in_per_unit=None):
  """(kernel, bias) numpy initial values of one dense layer (``init`` as in ``MLP``)."""
  if output and init != "random":
    return np.zeros((fan_in, fan_out)), np.zeros(fan_out)
  if init == "glorot":
    limit = np.sqrt(6. / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out)), np.zeros(fan_out)
  limit = 1. / np.sqrt(fan_in if fan_in_per_unit is None else fan_in_per_unit)
  return rng.uniform(-1., 1., (fan_in, fan_out)) * limit, rng.uniform(-1., 1., fan_out) * limit


class _Dense(tf.Module):
  """y = x W + b on the last axis (any number of leading axes); ``init`` as in ``MLP``."""

  def __init__(self, fan_in, fan_out, rng, dtype, zero=False, init="glorot", name=None):
    super().__init__(name=name)
    kernel, bias = _init_values(rng, fan_in, fan_out, init, output=zero)
    self.kernel = tf.Variable(kernel, dtype=dtype, name="kernel")
    self.bias = tf.Variable(bias, dtype=dtype, name="bias")

  def __call__(self, x):
    return tf.nn.bias_add(tf.matmul(x, self.kernel), self.bias)  # fuses with the matmul


def _flat_context(net, conditional_input, lead):
  """The conditional input broadcast over the leading axes ``lead`` and flattened to [N, k].

  None for an unconditional network; errors name the network when the input is missing,
  unexpected or of the wrong size.
  """
  if not net.conditional_size:
    if conditional_input is not None:
      raise ValueError(f"{net.name} got a conditional_input but was built with "
                       "conditional_size=0.")
    return None
  if conditional_input is None:
    raise ValueError(f"{net.name} was built with conditional_size={net.conditional_size} and "
                     "needs a conditional_input.")
  c = tf.convert_to_tensor(conditional_input, net.dtype)
  if c.shape[-1] is not None and c.shape[-1] != net.conditional_size:
    raise ValueError(f"{net.name}: conditional_input must have last dim "
                     f"{net.conditional_size}, got shape {c.shape.as_list()}.")
  c = tf.broadcast_to(c, tf.concat([lead, [net.conditional_size]], 0))
  return tf.reshape(c, [-1, net.conditional_size])


class _Network(tf.Module):
  """Shared input handling: flattening leading axes and the conditional input."""

  def __init__(self, input_size, output_size, conditional_size, dtype, name):
    super().__init__(name=name)
    self.input_size = int(input_size)
    self.output_size = int(output_size)
    self.conditional_size = int(conditional_size or 0)
    self.dtype = float_dtype(dtype)

  def __call__(self, x, conditional_input=None):
    x = tf.convert_to_tensor(x, self.dtype)
    lead = tf.shape(x)[:-1]
    h = tf.reshape(x, [-1, self.input_size])
    c = _flat_context(self, conditional_input, lead)
    if c is not None:
      h = tf.concat([h, c], -1)
    out = self._net(h)
    return tf.reshape(out, tf.concat([lead, [self.output_size]], 0))


class MLP(_Network):
  """Fully connected network ``input -> hidden_units -> output`` with a zero output layer.

  Args:
    input_size, output_size: sizes of the last axis of input and output.
    hidden_units: int or list of ints.
    activation: name ('relu', 'tanh', 'elu', 'gelu', 'silu') or callable.
    conditional_size: size of an optional conditional input concatenated to the input.
    dtype: float32 or float64.
    seed: int seed of the initial weights.
    init: ``"uniform"`` (default: hidden kernels and biases ``U(+-1/sqrt(fan_in))``,
      PyTorch's default, and a zero output layer, so a flow starts at the identity),
      ``"glorot"`` (Glorot-uniform hidden kernels, zero biases, zero output layer) or
      ``"random"`` (every layer ``U(+-1/sqrt(fan_in))``, the output too: zuko's networks; a
      flow starts at a random map).
  """

  def __init__(self, input_size, output_size, hidden_units=(256, 256), activation="relu",
               conditional_size=0, dtype=tf.float32, seed=None, name="mlp", init="uniform"):
    super().__init__(input_size, output_size, conditional_size, dtype, name)
    rng = np.random.default_rng(seed)
    self.activation = _activation(activation)
    init = _check_init(init)
    sizes = [self.input_size + self.conditional_size] + _check_units(hidden_units)
    with self.name_scope:
      self.hidden = [_Dense(a, b, rng, self.dtype, init=init)
                     for a, b in zip(sizes[:-1], sizes[1:])]
      self.out = _Dense(sizes[-1], self.output_size, rng, self.dtype, zero=True, init=init)

  def _net(self, h):
    for layer in self.hidden:
      h = self.activation(layer(h))
    return self.out(h)


class ResidualMLP(_Network):
  """``input -> Dense(width) -> num_blocks x [h + Dense(act(Dense(act(h))))] -> act -> out``.

  The output layer starts at zero. Args as ``MLP``, with ``hidden_units`` the block width
  (an int) and ``num_blocks`` residual blocks.
  """

  def __init__(self, input_size, output_size, hidden_units=256, num_blocks=2,
               activation="relu", conditional_size=0, dtype=tf.float32, seed=None,
               name="residual_mlp"):
    super().__init__(input_size, output_size, conditional_size, dtype, name)
    units = _check_units(hidden_units)
    if len(set(units)) != 1:
      raise ValueError(f"ResidualMLP needs one width, got hidden_units={hidden_units!r}.")
    if int(num_blocks) < 1:
      raise ValueError(f"num_blocks must be >= 1, got {num_blocks}.")
    width = units[0]
    rng = np.random.default_rng(seed)
    self.activation = _activation(activation)
    with self.name_scope:
      self.inp = _Dense(self.input_size + self.conditional_size, width, rng, self.dtype)
      self.blocks = [(_Dense(width, width, rng, self.dtype), _Dense(width, width, rng, self.dtype))
                     for _ in range(int(num_blocks))]
      self.out = _Dense(width, self.output_size, rng, self.dtype, zero=True)

  def _net(self, h):
    h = self.inp(h)
    for first, second in self.blocks:
      h = h + second(self.activation(first(self.activation(h))))
    return self.out(self.activation(h))


def made_degrees(event_size, hidden_units, order=None):
  """MADE degrees (Germain et al. 2015): inputs, then each hidden layer.

  Input ``i`` gets degree ``order[i]`` (a permutation of ``1..D``; default ``1..D``); hidden
  units cycle through ``1..D-1`` so every degree is represented equally (a layer of fewer than
  ``D - 1`` units spreads its degrees evenly over ``1..D-1`` instead). A unit of degree
  ``m`` sees inputs of degree ``<= m``; the outputs of input ``i`` see hidden units of degree
  ``< order[i]``, so they depend only on the inputs before ``i`` in the order.
  """
  d = int(event_size)
  order = np.arange(1, d + 1) if order is None else np.asarray(order, np.int64)
  if sorted(order.tolist()) != list(range(1, d + 1)):
    raise ValueError(f"order must be a permutation of 1..{d}, got {order.tolist()}.")
  top = max(d - 1, 1)

  def hidden(u):
    if u >= top:
      return 1 + np.arange(u) % top
    return 1 + (np.arange(u) * top) // u  # evenly spread over 1..D-1

  return [order] + [hidden(u) for u in hidden_units]


class MADE(_Network):
  """Masked autoregressive network: the parameters of entry ``i`` depend only on entries < i.

  ``x [..., D] -> [..., num_params * D]``, parameter-major (block ``j`` holds parameter ``j``
  of every entry: the layout ``tff.bijectors`` transformers expect). The autoregressive masks
  are constants multiplied into the kernels in every call (so no optimizer has to re-apply
  them, and they can never be trained away); every layer computes in the network's dtype
  (float64 stays float64). A ``conditional_input`` of size ``conditional_size`` feeds every
  unit of the first hidden layer.

  Args:
    event_size: ``D`` (>= 2).
    num_params: parameters per entry (2 for an affine MAF, ``3K - 1`` for a spline).
    hidden_units: ints (layers of at least ``D - 1`` units give every degree a unit).
    activation: name or callable.
    conditional_size: size of an optional context vector (0: none).
    order: the autoregressive order as a permutation of ``1..D`` (default ``1..D``).
    init: ``"uniform"`` (default: hidden kernels and biases ``U(+-1/sqrt(fan_in))``,
      PyTorch's default up to the fan-in below, and a zero output layer, so a flow starts
      at the identity),
      ``"glorot"`` (Glorot-uniform hidden kernels, zero biases, zero output layer) or
      ``"random"`` (every layer ``U(+-1/sqrt(fan_in))``, the output too: zuko's networks; a
      flow starts at a random map).
      The fan-in of a unit counts its unmasked inputs only (PyTorch's ``Linear``, and so
      zuko's ``MaskedLinear``, counts every input of the layer: in a 2-D MAF that lowered
      the mean KL on one density and raised it on three; docs/coupling.md, "MAF on
      2spirals").
    dtype: float32 or float64.
    seed: int seed of the initial weights.

  #### References

  [1] Germain, Gregor, Murray, Larochelle. MADE: Masked Autoencoder for Distribution
      Estimation. ICML 2015.
  """

  def __init__(self, event_size, num_params, hidden_units=(64, 64), activation="relu",
               conditional_size=0, order=None, init="uniform", dtype=tf.float32, seed=None,
               name="made"):
    d = int(event_size)
    if d < 2:
      raise ValueError(f"MADE needs an event size of at least 2, got {event_size}.")
    if int(num_params) < 1:
      raise ValueError(f"num_params must be >= 1, got {num_params}.")
    super().__init__(d, int(num_params) * d, conditional_size, dtype, name)
    units = _check_units(hidden_units)
    self.event_size, self.num_params = d, int(num_params)
    self.activation = _activation(activation)
    degrees = made_degrees(d, units, order)
    self.order = degrees[0]
    masks = [(a[:, None] <= b[None, :]) for a, b in zip(degrees[:-1], degrees[1:])]
    out_mask = degrees[-1][:, None] < degrees[0][None, :]          # [H, D]
    masks.append(np.tile(out_mask, [1, self.num_params]))         # parameter-major columns
    if self.conditional_size:
      masks[0] = np.concatenate([masks[0], np.ones([self.conditional_size, units[0]], bool)])
    self._masks = [m.astype(np.float64) for m in masks]
    rng = np.random.default_rng(seed)
    init = _check_init(init)
    with self.name_scope:
      self.layers = [_MaskedDense(m, rng, self.dtype, init, last=i == len(masks) - 1)
                     for i, m in enumerate(self._masks)]

  def _net(self, h):
    for layer in self.layers[:-1]:
      h = self.activation(layer(h))
    return self.layers[-1](h)


class _MaskedDense(tf.Module):
  """``x (W * M) + b`` with a constant 0/1 mask ``M``."""

  def __init__(self, mask, rng, dtype, init, last):
    super().__init__()
    kernel, bias = _init_values(rng, mask.shape[0], mask.shape[1], init, output=last,
                                fan_in_per_unit=np.maximum(mask.sum(0), 1.))
    self.mask = tf.constant(mask, dtype)
    self.kernel = tf.Variable(kernel * mask, dtype=dtype, name="kernel")
    self.bias = tf.Variable(bias, dtype=dtype, name="bias")

  def __call__(self, x):
    return tf.nn.bias_add(tf.matmul(x, self.kernel * self.mask), self.bias)


class _Conv(tf.Module):
  """``SAME``-padded stride-1 2-D convolution with bias on ``[N, H, W, C]`` inputs."""

  def __init__(self, size, fan_in, fan_out, rng, dtype, zero=False, name=None):
    super().__init__(name=name)
    shape = (size, size, fan_in, fan_out)
    init = (np.zeros(shape) if zero
            else rng.normal(0., np.sqrt(2. / (size * size * fan_in)), shape))  # He normal
    self.kernel = tf.Variable(init, dtype=dtype, name="kernel")
    self.bias = tf.Variable(tf.zeros([fan_out], dtype), name="bias")

  def __call__(self, x):
    # bias_add (not +): the convolution, its bias and their gradients fuse into one kernel.
    return tf.nn.bias_add(tf.nn.conv2d(x, self.kernel, strides=1, padding="SAME"), self.bias)


class ConvResNet(tf.Module):
  """Convolutional residual network for image couplings, ``[..., H, W, C_in] -> C_out``.

  ``conv(k) -> num_blocks x [h + conv(m)(act(conv(m)(act(h))))] -> act -> conv(k)``, all
  ``SAME``-padded with ``hidden_units`` channels (``k = kernel_size``, ``m =
  hidden_kernel_size``: 1 gives Glow's 3x3 -> 1x1 -> 3x3 shape at a ninth of the cost of the
  hidden 3x3 convolutions); the output convolution starts at zero, so a coupling using it
  starts at the identity. A ``conditional_input`` of shape
  ``[..., conditional_size]`` is broadcast over the pixels and concatenated to the input
  channels.

  Args:
    input_channels, output_channels: channels of input and output (for an affine image
      coupling with a channel mask: the kept and twice the changed channels; with a spatial
      mask: C and 2C; ``tff.bijectors.Coupling``).
    hidden_units: channels of the hidden layers (an int).
    num_blocks: residual blocks (>= 0).
    kernel_size: odd size of the square kernels of the input and output convolutions.
    hidden_kernel_size: odd size of the kernels inside the residual blocks (default:
      ``kernel_size``).
    activation: name ('relu', 'tanh', 'elu', 'gelu', 'silu') or callable.
    conditional_size: size of an optional conditional vector input (0: none).
    dtype: float32 or float64.
    seed: int seed of the initial weights.
  """

  def __init__(self, input_channels, output_channels, hidden_units=64, num_blocks=2,
               kernel_size=3, activation="relu", conditional_size=0, dtype=tf.float32,
               seed=None, hidden_kernel_size=None, name="conv_resnet"):
    super().__init__(name=name)
    width = _check_units(hidden_units)
    if len(width) != 1:
      raise ValueError(f"ConvResNet needs one width, got hidden_units={hidden_units!r}.")
    if int(num_blocks) < 0:
      raise ValueError(f"num_blocks must be >= 0, got {num_blocks}.")
    hidden_kernel_size = kernel_size if hidden_kernel_size is None else hidden_kernel_size
    for what, size in (("kernel_size", kernel_size), ("hidden_kernel_size", hidden_kernel_size)):
      if int(size) < 1 or int(size) % 2 == 0:
        raise ValueError(f"{what} must be a positive odd int, got {size}.")
    if int(input_channels) < 1 or int(output_channels) < 1:
      raise ValueError(f"channels must be positive, got {input_channels}, {output_channels}.")
    self.input_channels = int(input_channels)
    self.output_channels = int(output_channels)
    self.conditional_size = int(conditional_size or 0)
    self.dtype = float_dtype(dtype)
    self.activation = _activation(activation)
    width, k, m = width[0], int(kernel_size), int(hidden_kernel_size)
    rng = np.random.default_rng(seed)
    with self.name_scope:
      self.inp = _Conv(k, self.input_channels + self.conditional_size, width, rng, self.dtype)
      self.blocks = [(_Conv(m, width, width, rng, self.dtype),
                      _Conv(m, width, width, rng, self.dtype)) for _ in range(int(num_blocks))]
      self.out = _Conv(k, width, self.output_channels, rng, self.dtype, zero=True)

  def __call__(self, x, conditional_input=None):
    x = tf.convert_to_tensor(x, self.dtype)
    if x.shape.rank is not None and (x.shape.rank < 4 or x.shape[-1] != self.input_channels):
      raise ValueError(f"{self.name}: expected input [..., H, W, {self.input_channels}], got "
                       f"shape {x.shape.as_list()}.")
    lead = tf.shape(x)[:-3]
    h = tf.reshape(x, tf.concat([[-1], tf.shape(x)[-3:]], 0))
    c = _flat_context(self, conditional_input, lead)
    if c is not None:  # the context vector becomes extra constant channels
      c = tf.reshape(c, [-1, 1, 1, self.conditional_size])
      h = tf.concat([h, tf.broadcast_to(
          c, tf.concat([tf.shape(h)[:3], [self.conditional_size]], 0))], -1)
    h = self.inp(h)
    for first, second in self.blocks:
      h = h + second(self.activation(first(self.activation(h))))
    out = self.out(self.activation(h))
    return tf.reshape(out, tf.concat([tf.shape(x)[:-1], [self.output_channels]], 0))


class SigmoidScale(tf.Module):
  """Glow's bounded coupling scale: ``net``'s ``2C`` outputs -> ``(shift, log_scale)``.

  The network's first ``C`` output channels (last axis) are the shift, the last ``C`` a raw
  value ``r`` that becomes the ``AffineCoupling`` log-scale ``s`` (forward
  ``y = x exp(s) + t``; the data -> latent direction multiplies by ``exp(-s)``)::

      exp(-s) = sigmoid(r + a) / sigmoid(a)      in (0, 1 / sigmoid(a)),  = 1 at r = 0

  i.e. Glow's ``sigmoid(r + 2)`` scale (``a = offset = 2``) normalised so that a
  zero-initialised network is the identity. A coupling can then contract the data -> latent
  direction freely but expand it by at most ``1 / sigmoid(a)`` (13.5 % for ``a = 2``): no
  stack of conditional expansions can blow up an input its networks did not expect
  (RealNVP's ``tanh``-bounded log-scale allows ``e^3`` per coupling). Use it with
  ``AffineCoupling(..., log_scale_bound=None)``.

  With ``latent_shift`` the shift output ``t'`` is in latent units: the coupling's shift is
  ``t = t' exp(s)``, so ``y = (x + t') exp(s)`` and the data -> latent direction is
  ``z = y exp(-s) - t'``. The same family (``t' = t exp(-s)``); what changes is the
  conditioning of training: with the shift in data units (``z = (y - t) exp(-s)``) an error
  of the predicted shift is amplified by the expansion ``exp(-s)``, and so are the gradient
  and the curvature of the loss in the shift (by ``exp(-2s)``), which a fixed learning rate
  turns into loss spikes once couplings expand (docs/images.md).

  Args:
    net: a callable ``net(x, conditional_input=None) -> [..., 2C]`` (e.g. ``ConvResNet``).
    channels: ``C``.
    offset: ``a`` (Glow: 2); larger is more conservative.
    latent_shift: the shift in latent units (see above); default False (Glow's form).
  """

  def __init__(self, net, channels, offset=2., latent_shift=False, name="scale_conditioner"):
    super().__init__(name=name)
    self.net = net
    self.channels = int(channels)
    self.offset = float(offset)
    self.latent_shift = bool(latent_shift)
    self._log_norm = float(np.logaddexp(0., -self.offset))  # softplus(-a): s = 0 at r = 0

  @property
  def conditional_size(self):
    return getattr(self.net, "conditional_size", 0)

  def __call__(self, x, conditional_input=None):
    kwargs = {} if conditional_input is None else {"conditional_input": conditional_input}
    out = self.net(x, **kwargs)
    # tf.split, not slices: a slice's gradient (StridedSliceGrad) is a slow kernel on CPU.
    shift, raw = tf.split(out, [self.channels, self.channels], axis=-1)
    # exp(-s) = sigmoid(r + a) / sigmoid(a)  <=>  s = softplus(-(r + a)) - softplus(-a).
    log_scale = (tf.math.softplus(-(raw + tf.constant(self.offset, raw.dtype)))
                 - tf.constant(self._log_norm, raw.dtype))
    if self.latent_shift:
      shift = shift * tf.exp(log_scale)
    return shift, log_scale


def as_variable_list(variables):
  """``tf.Variable``s behind a list of tf or Keras 3 variables (Keras wraps a tf.Variable)."""
  out = []
  for v in variables:
    inner = getattr(v, "value", None) if not isinstance(v, tf.Variable) else v
    if not isinstance(inner, tf.Variable):
      raise TypeError(f"cannot find the tf.Variable behind {v!r}.")
    out.append(inner)
  return out


def conditioner_variables(fn):
  """The ``tf.Variable``s of a (built) conditioner, whatever made it.

  tf.Modules (our nets, tf_keras layers) are found by traversal already; Keras 3 layers and
  models expose ``keras.Variable``s, which are unwrapped here so that a bijector can hold
  them in an attribute that tf.Module traversal sees.
  """
  if isinstance(fn, tf.Module):
    return list(fn.variables)
  weights = getattr(fn, "weights", None)
  if weights is not None:
    return as_variable_list(weights)
  return []
