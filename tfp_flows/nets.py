"""Conditioner networks: good defaults for the parameter networks of coupling layers.

Bijector files hold the math; the networks that produce their parameters live here. Every
network is a ``tf.Module`` built eagerly (its variables exist on return), so tf.Module
traversal, ``tf.train.Checkpoint``, ``tfp.vi`` and our Keras wrapper all find them.

A conditioner is any callable ``net(x, conditional_input=None) -> tensor``. The output layer
starts at zero, so a flow built from these starts at the identity map.

``conditioner_variables(fn)`` collects the ``tf.Variable``s behind any callable, including
Keras 3 layers (whose ``keras.Variable``s are invisible to tf.Module traversal).
"""

import numpy as np
import tensorflow as tf

from tfp_flows.bijectors._base import float_dtype

__all__ = ["MLP", "ResidualMLP", "conditioner_variables", "as_variable_list"]

_ACTIVATIONS = {"relu": tf.nn.relu, "tanh": tf.math.tanh, "elu": tf.nn.elu,
                "gelu": tf.nn.gelu, "silu": tf.nn.silu, "swish": tf.nn.silu}


def _activation(activation):
  if callable(activation):
    return activation
  if activation not in _ACTIVATIONS:
    raise ValueError(f"unknown activation {activation!r}; expected a callable or one of "
                     f"{sorted(_ACTIVATIONS)}.")
  return _ACTIVATIONS[activation]


def _glorot(rng, fan_in, fan_out, dtype):
  limit = np.sqrt(6. / (fan_in + fan_out))
  return tf.Variable(rng.uniform(-limit, limit, (fan_in, fan_out)), dtype=dtype, name="kernel")


def _check_units(hidden_units):
  units = [hidden_units] if isinstance(hidden_units, (int, np.integer)) else list(hidden_units)
  if not units or any(int(u) <= 0 for u in units):
    raise ValueError(f"hidden_units must be positive ints, got {hidden_units!r}.")
  return [int(u) for u in units]


class _Dense(tf.Module):
  """y = x W + b on the last axis (any number of leading axes)."""

  def __init__(self, fan_in, fan_out, rng, dtype, zero=False, name=None):
    super().__init__(name=name)
    self.kernel = (tf.Variable(tf.zeros([fan_in, fan_out], dtype), name="kernel") if zero
                   else _glorot(rng, fan_in, fan_out, dtype))
    self.bias = tf.Variable(tf.zeros([fan_out], dtype), name="bias")

  def __call__(self, x):
    return tf.matmul(x, self.kernel) + self.bias


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
    if self.conditional_size:
      if conditional_input is None:
        raise ValueError(f"{self.name} was built with conditional_size="
                         f"{self.conditional_size} and needs a conditional_input.")
      c = tf.convert_to_tensor(conditional_input, self.dtype)
      if c.shape[-1] is not None and c.shape[-1] != self.conditional_size:
        raise ValueError(f"{self.name}: conditional_input must have last dim "
                         f"{self.conditional_size}, got shape {c.shape.as_list()}.")
      c = tf.broadcast_to(c, tf.concat([lead, [self.conditional_size]], 0))
      h = tf.concat([h, tf.reshape(c, [-1, self.conditional_size])], -1)
    elif conditional_input is not None:
      raise ValueError(f"{self.name} got a conditional_input but was built with "
                       "conditional_size=0.")
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
  """

  def __init__(self, input_size, output_size, hidden_units=(256, 256), activation="relu",
               conditional_size=0, dtype=tf.float32, seed=None, name="mlp"):
    super().__init__(input_size, output_size, conditional_size, dtype, name)
    rng = np.random.default_rng(seed)
    self.activation = _activation(activation)
    sizes = [self.input_size + self.conditional_size] + _check_units(hidden_units)
    with self.name_scope:
      self.hidden = [_Dense(a, b, rng, self.dtype) for a, b in zip(sizes[:-1], sizes[1:])]
      self.out = _Dense(sizes[-1], self.output_size, rng, self.dtype, zero=True)

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
