"""Glow's invertible 1x1 convolution, LU-parameterised so that it is invertible for every value.

A 1x1 convolution on ``[H, W, C]`` images multiplies every pixel's channel vector by one
``C x C`` matrix ``W``; as a bijector on the last axis (``forward_min_event_ndims = 1``)::

    forward(x) = W x,        inverse(y) = W^-1 y,        log|det J| = log|det W|  per pixel.

Glow (Kingma & Dhariwal 2018, section 3.2) parameterises ``W`` by its LU decomposition::

    W = P L (U + diag(sign * exp(log_diagonal)))

``P`` a fixed permutation, ``L`` unit lower triangular (trainable strictly lower part), ``U``
strictly upper triangular (trainable), ``sign`` a fixed vector of +-1 and ``log_diagonal``
trainable. Then ``log|det W| = sum(log_diagonal)`` exactly (O(C) instead of an O(C^3)
determinant), and ``det W = +-exp(sum(log_diagonal)) != 0`` for every value of the variables:
invertibility is a parameterisation, not a hope. (``tfb.ScaleMatvecLU`` keeps the diagonal of
``U`` free, so a training step can make it singular.) The inverse matrix
``W^-1 = (U + D)^-1 L^-1 P^T`` comes from two ``C x C`` triangular solves (no general matrix
inverse), so both directions are one matrix product over the pixels.

At initialisation ``W`` is a random rotation (``Q`` of the QR decomposition of a Gaussian
matrix, seeded), as in Glow: ``log|det W| = 0``.

#### Examples

    conv = tff.bijectors.InvertibleConv1x1(8)
    y = conv.forward(tf.random.normal([16, 4, 4, 8]))      # mixes the 8 channels per pixel
    conv.forward_log_det_jacobian(x, event_ndims=3)          # H * W * sum(log_diagonal)

#### References

[1] Kingma, Dhariwal. Glow: Generative Flow with Invertible 1x1 Convolutions. NeurIPS 2018.
"""

import numpy as np
import scipy.linalg
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import core

tfb = tfp.bijectors

__all__ = ["InvertibleConv1x1"]


def _rotation_lu(channels, seed):
  """(permutation, lower, upper, sign, log_diagonal) of a random rotation, numpy float64."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.standard_normal((channels, channels)))
  p, lower, upper = scipy.linalg.lu(q)  # q = p @ lower @ upper
  diagonal = np.diag(upper)
  perm = np.argmax(p, axis=0)  # p[:, j] = e_perm[j]: (p @ v)[perm[j]] = v[j]
  return (perm.astype(np.int32), np.tril(lower, -1), np.triu(upper, 1),
          np.sign(diagonal), np.log(np.abs(diagonal)))


class InvertibleConv1x1(core.DtypeChecked, tfb.Bijector):
  """Glow's invertible 1x1 convolution ``y = W x`` on the last axis, ``W`` LU-parameterised.

  Args:
    channels: ``C``, the size of the last axis.
    lower, upper, log_diagonal: the trainable factors (``[C, C]``, ``[C, C]``, ``[C]``; only
      the strictly lower / strictly upper parts of ``lower`` / ``upper`` are used), each a
      tensor, ``tf.Variable`` or ``DeferredTensor`` used as given; the ones not passed become
      variables holding a seeded random rotation's factors.
    permutation: ``[C]`` ints, ``P[:, j] = e_permutation[j]`` (fixed); default from the
      rotation.
    sign: ``[C]`` of +-1, the fixed signs of ``U``'s diagonal; default from the rotation.
    seed: seed of the random rotation.
    validate_args: check shapes and finiteness of inputs at run time.
    dtype: float32 (default) or float64.
    name: name of the bijector.
  """

  def __init__(self, channels, lower=None, upper=None, log_diagonal=None, permutation=None,
               sign=None, seed=0, validate_args=False, dtype=tf.float32,
               name="invertible_conv1x1"):
    given_name = name
    with tf.name_scope(name) as name:
      dtype = core.float_dtype(dtype)
      if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or (
          channels < 1):
        raise ValueError(f"{name}: channels must be a positive int, got {channels!r}.")
      c = int(channels)
      init = _rotation_lu(c, seed)
      if permutation is None:
        permutation = init[0]
      permutation = np.asarray(permutation)
      if (permutation.shape != (c,) or not np.issubdtype(permutation.dtype, np.integer)
          or sorted(permutation.tolist()) != list(range(c))):
        raise ValueError(f"{name}: permutation must be a permutation of range({c}), got "
                         f"{permutation!r}.")
      if sign is None:
        sign = init[3]
      sign = np.asarray(sign, np.float64)
      if sign.shape != (c,) or not np.all(np.abs(sign) == 1.):
        raise ValueError(f"{name}: sign must be {c} values of +1 or -1, got {sign!r}.")
      lower = self._parameter(lower, init[1], (c, c), dtype, name, "lower")
      upper = self._parameter(upper, init[2], (c, c), dtype, name, "upper")
      log_diagonal = self._parameter(log_diagonal, init[4], (c,), dtype, name, "log_diagonal")
      parameters = dict(locals())
      for local in ("init", "c", "given_name"):
        parameters.pop(local)
      parameters["name"] = given_name
      self._channels = c
      self._lower, self._upper, self._log_diagonal = lower, upper, log_diagonal
      self._permutation = permutation.astype(np.int32)
      self._sign = tf.constant(sign, dtype)
      self._lower_mask = tf.constant(np.tril(np.ones((c, c)), -1), dtype)
      self._upper_mask = tf.constant(np.triu(np.ones((c, c)), 1), dtype)
      self._perm_matrix = tf.constant(np.eye(c)[:, self._permutation], dtype)  # P
      super().__init__(forward_min_event_ndims=1, is_constant_jacobian=True,
                       validate_args=validate_args, dtype=dtype, parameters=parameters,
                       name=name)

  @staticmethod
  def _parameter(value, default, shape, dtype, name, what):
    if value is None:
      return tf.Variable(default, dtype=dtype, name=what)
    if not (isinstance(value, tf.Variable) or tf.is_tensor(value)
            or isinstance(value, tf.Module)):
      value = tf.convert_to_tensor(value, dtype)
    if tf.as_dtype(value.dtype) != dtype:
      raise TypeError(f"{name}: {what} has dtype {tf.as_dtype(value.dtype).name}, expected "
                      f"{dtype.name}.")
    if tf.TensorShape(value.shape) != shape:
      raise ValueError(f"{name}: {what} must have shape {list(shape)}, got "
                       f"{tf.TensorShape(value.shape)}.")
    return value

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict()  # one matrix per bijector: no batch of convolutions.

  @property
  def channels(self):
    return self._channels

  @property
  def lower(self):
    return self._lower

  @property
  def upper(self):
    return self._upper

  @property
  def log_diagonal(self):
    return self._log_diagonal

  @property
  def permutation(self):
    return self._permutation

  def _factors(self):
    eye = tf.eye(self._channels, dtype=self.dtype)
    lower = tf.convert_to_tensor(self._lower) * self._lower_mask + eye
    upper = (tf.convert_to_tensor(self._upper) * self._upper_mask
             + tf.linalg.diag(self._sign * tf.exp(self._log_diagonal)))
    return lower, upper

  def matrix(self):
    """``W = P L (U + diag(sign exp(log_diagonal)))``, ``[C, C]``."""
    lower, upper = self._factors()
    return tf.matmul(self._perm_matrix, tf.matmul(lower, upper))

  def inverse_matrix(self):
    """``W^-1 = (U + D)^-1 L^-1 P^T`` by two triangular solves, ``[C, C]``."""
    lower, upper = self._factors()
    t = tf.linalg.triangular_solve(lower, tf.transpose(self._perm_matrix), lower=True)
    return tf.linalg.triangular_solve(upper, t, lower=False)

  def _check(self, t, what):
    return core.check_input(t, (self._channels,), name=self.name,
                             validate_args=self.validate_args, what=what)

  @staticmethod
  def _apply(m, x):
    """``m x`` on the last axis, as one ``[N, C] x [C, C]`` matmul over all leading axes (a
    broadcast ``tf.linalg.matvec`` runs one tiny batched matmul per pixel, far slower)."""
    flat = tf.reshape(x, [-1, m.shape[-1]])
    out = tf.reshape(tf.matmul(flat, m, transpose_b=True), tf.shape(x))
    out.set_shape(x.shape)
    return out

  def _forward(self, x):
    return self._apply(self.matrix(), self._check(x, "x"))

  def _inverse(self, y):
    return self._apply(self.inverse_matrix(), self._check(y, "y"))

  def _forward_log_det_jacobian(self, x):
    return tf.reduce_sum(self._log_diagonal)

  def _inverse_log_det_jacobian(self, y):
    return -tf.reduce_sum(self._log_diagonal)
