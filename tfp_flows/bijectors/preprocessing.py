"""Image preprocessing with exact log-dets: uniform dequantisation and the RealNVP logit.

Discrete pixels ``x in {0, ..., K}`` (``num_bins = K + 1`` values; 256 for 8-bit images, 17 for
scikit-learn's digits) have no density. Uniform dequantisation (Theis et al. 2016) trains a
continuous density ``p`` on ``u = x + v``, ``v ~ U[0, 1)^D``; since every bin has unit width,
``E_v[log p(x + v)] <= log P(x)`` for the discrete model ``P(x) = int_bin p``, so

    bits/dim = -log p(u) / (D ln 2),      u in [0, num_bins)^D (pixel units, bin width 1),

is an upper bound on the discrete negative log-likelihood in bits per dimension. This is the
number the papers report (they scale pixels to [0, 1) and add ``D log2(256)``: the same).

A bijector cannot add noise, so dequantisation has two parts:

* ``dequantize(x, num_bins, seed)``: a data transform (not a bijector) returning ``x + v``;
* ``Dequantize(num_bins)``: the bijector between the unit cube (base side) and the dequantised
  pixel space ``[0, num_bins)`` (data side): ``forward(t) = num_bins * t``,
  ``log|det J| = D log(num_bins)``. Putting it at the data end of a flow makes ``log_prob`` a
  density in pixel units, so ``bits_per_dim(log_prob, D)`` is the figure above.

``Logit(alpha)`` is RealNVP's logit preprocessing (Dinh et al. 2017, section 4.1) between R
(base side) and the unit interval (data side). Its inverse, applied to data, is::

    inverse(t) = logit(p),   p = alpha + (1 - 2 alpha) t,     t in [0, 1)
    inverse log|det J| = sum[log(1 - 2 alpha) - log p - log(1 - p)]

(``alpha = 0.05`` in RealNVP keeps the logit away from the interval's ends); ``forward(z) =
(sigmoid(z) - alpha) / (1 - 2 alpha)`` maps R onto ``(-alpha/(1-2alpha), 1 + alpha/(1-2alpha))``,
an interval slightly wider than [0, 1]. Both bijectors are element-wise.

#### Examples

    x_train, x_test = tff.datasets.digits()                    # ints 0..16, [N, 8, 8, 1]
    u = tff.bijectors.dequantize(x_train, num_bins=17, seed=0) # float32 in [0, 17)
    flow = tfb.Chain([tff.bijectors.Dequantize(17), tff.bijectors.Logit(0.05),
                      tff.flows.realnvp([8, 8, 1], num_scales=2)])
    dist = tff.flows.distribution(flow, [8, 8, 1])
    bpd = tff.bijectors.bits_per_dim(dist.log_prob(u), 64)

#### References

[1] Dinh, Sohl-Dickstein, Bengio. Density estimation using Real NVP. ICLR 2017.
[2] Theis, van den Oord, Bethge. A note on the evaluation of generative models. ICLR 2016.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import core

tfb = tfp.bijectors

__all__ = ["Dequantize", "Logit", "dequantize", "bits_per_dim"]


def _check_bins(num_bins, name):
  if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 2:
    raise ValueError(f"{name}: num_bins must be an int >= 2, got {num_bins!r}.")
  return int(num_bins)


def dequantize(x, num_bins, seed=None, dtype=tf.float32):
  """Uniform dequantisation ``x + v``, ``v ~ U[0, 1)``, of integer pixels ``x in {0..num_bins-1}``.

  Args:
    x: integer-valued array or tensor (any int or float dtype holding whole numbers).
    num_bins: number of pixel values (``K + 1`` for pixels 0..K).
    seed: int or ``(int, int)`` stateless seed; the same seed gives the same noise.
    dtype: float dtype of the result.

  Returns:
    A ``dtype`` tensor of ``x``'s shape with values in ``[0, num_bins)``.

  Raises:
    ValueError: (eagerly) if ``x`` has values that are not integers in ``[0, num_bins)``.
  """
  num_bins = _check_bins(num_bins, "dequantize")
  dtype = core.float_dtype(dtype)
  x = tf.convert_to_tensor(x)
  xf = tf.cast(x, tf.float64)
  if tf.executing_eagerly():
    values = xf.numpy()
    if np.any(values != np.round(values)) or np.any(values < 0) or np.any(values >= num_bins):
      raise ValueError(f"dequantize: x must hold integers in [0, {num_bins - 1}], got values in "
                       f"[{values.min()}, {values.max()}].")
  if seed is None:
    seed = np.random.default_rng().integers(2**31, size=2)
  elif isinstance(seed, (int, np.integer)):
    seed = (int(seed), 0)
  noise = tf.random.stateless_uniform(tf.shape(x), seed=tf.cast(seed, tf.int32), dtype=dtype)
  return tf.cast(xf, dtype) + noise


def bits_per_dim(log_prob, num_dims):
  """``-log_prob / (num_dims ln 2)``: bits per dimension of a density in pixel units."""
  if int(num_dims) < 1:
    raise ValueError(f"num_dims must be >= 1, got {num_dims}.")
  return -log_prob / (float(num_dims) * np.log(2.))


class Dequantize(core.DtypeChecked, tfb.Bijector):
  """Unit cube (base side) <-> dequantised pixels ``[0, num_bins)``: ``forward(t) = num_bins t``.

  Element-wise, ``log|det J| = log(num_bins)`` per element. See the module docstring for the
  noise (``dequantize``) and ``bits_per_dim``.

  Args:
    num_bins: number of pixel values (``K + 1`` for pixels 0..K).
    validate_args: check finiteness, and that ``inverse`` inputs lie in ``[0, num_bins]``.
    dtype: float32 (default) or float64.
    name: name of the bijector.
  """

  def __init__(self, num_bins, validate_args=False, dtype=tf.float32, name="dequantize"):
    parameters = dict(locals())
    self._num_bins = _check_bins(num_bins, "Dequantize")
    with tf.name_scope(name) as name:
      super().__init__(forward_min_event_ndims=0, is_constant_jacobian=True,
                       validate_args=validate_args, dtype=core.float_dtype(dtype),
                       parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict()

  @property
  def num_bins(self):
    return self._num_bins

  def _is_increasing(self):
    return True

  def _forward(self, x):
    x = core.check_input(x, (), name=self.name, validate_args=self.validate_args)
    return x * tf.constant(self._num_bins, self.dtype)

  def _inverse(self, y):
    y = core.check_input(y, (), name=self.name, validate_args=self.validate_args, what="y")
    if self.validate_args:
      with tf.control_dependencies([
          tf.debugging.assert_greater_equal(y, tf.zeros([], self.dtype), message=(
              f"{self.name}: dequantised pixels must be >= 0.")),
          tf.debugging.assert_less_equal(y, tf.constant(self._num_bins, self.dtype), message=(
              f"{self.name}: dequantised pixels must be <= num_bins = {self._num_bins}."))]):
        y = tf.identity(y)
    return y / tf.constant(self._num_bins, self.dtype)

  def _forward_log_det_jacobian(self, x):
    return tf.constant(np.log(self._num_bins), self.dtype)

  def _inverse_log_det_jacobian(self, y):
    return tf.constant(-np.log(self._num_bins), self.dtype)


class Logit(core.DtypeChecked, tfb.Bijector):
  """RealNVP's logit: ``inverse(t) = logit(alpha + (1 - 2 alpha) t)`` for data ``t in [0, 1)``.

  Forward (R -> data): ``(sigmoid(z) - alpha) / (1 - 2 alpha)``; element-wise, exact log-dets
  computed with log-sigmoids (finite for large ``|z|``).

  Args:
    alpha: ``0 <= alpha < 0.5``; 0.05 as in RealNVP (0 is the plain logit).
    validate_args: check finiteness, and that ``inverse`` inputs give ``0 < p < 1``.
    dtype: float32 (default) or float64.
    name: name of the bijector.
  """

  def __init__(self, alpha=0.05, validate_args=False, dtype=tf.float32, name="logit"):
    parameters = dict(locals())
    if not 0. <= float(alpha) < 0.5:
      raise ValueError(f"Logit: alpha must be in [0, 0.5), got {alpha!r}.")
    self._alpha = float(alpha)
    with tf.name_scope(name) as name:
      super().__init__(forward_min_event_ndims=0, is_constant_jacobian=False,
                       validate_args=validate_args, dtype=core.float_dtype(dtype),
                       parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict()

  @property
  def alpha(self):
    return self._alpha

  def _is_increasing(self):
    return True

  def _width(self):
    return tf.constant(1. - 2. * self._alpha, self.dtype)

  def _p(self, t):
    t = core.check_input(t, (), name=self.name, validate_args=self.validate_args, what="y")
    p = tf.constant(self._alpha, self.dtype) + self._width() * t
    if self.validate_args:
      with tf.control_dependencies([
          tf.debugging.assert_positive(p, message=(
              f"{self.name}: inputs must satisfy alpha + (1 - 2 alpha) y > 0.")),
          tf.debugging.assert_less(p, tf.ones([], self.dtype), message=(
              f"{self.name}: inputs must satisfy alpha + (1 - 2 alpha) y < 1."))]):
        p = tf.identity(p)
    return p

  def _forward(self, x):
    x = core.check_input(x, (), name=self.name, validate_args=self.validate_args)
    return (tf.math.sigmoid(x) - tf.constant(self._alpha, self.dtype)) / self._width()

  def _inverse(self, y):
    p = self._p(y)
    return tf.math.log(p) - tf.math.log1p(-p)

  def _forward_log_det_jacobian(self, x):
    x = core.check_input(x, (), name=self.name, validate_args=self.validate_args)
    return tf.math.log_sigmoid(x) + tf.math.log_sigmoid(-x) - tf.math.log(self._width())

  def _inverse_log_det_jacobian(self, y):
    p = self._p(y)
    return tf.math.log(self._width()) - tf.math.log(p) - tf.math.log1p(-p)
