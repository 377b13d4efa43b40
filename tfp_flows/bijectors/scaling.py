"""NICE's diagonal scaling layer (and, for images, ActNorm).

Scaling (Dinh et al. 2014, section 3.3)::

    y = x * exp(s),    log|det J| = sum(s) over the event,

with one trainable ``s`` per event entry (initialised at 0, the identity). NICE puts it last in
the flow, so additive couplings (volume preserving) can still change the volume.

#### Examples

    scaling = tff.bijectors.Scaling([2])
    flow = tfb.Chain([scaling, coupling_2, coupling_1])

#### References

[1] Dinh, Krueger, Bengio. NICE: Non-linear Independent Components Estimation. 2014.
"""

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import parameter_properties

from tfp_flows.bijectors import _base

tfb = tfp.bijectors

__all__ = ["Scaling"]


class Scaling(tfb.Bijector):
  """Element-wise ``y = x * exp(log_scale)`` with a trainable ``log_scale`` per entry.

  Args:
    event_shape: shape of one event, e.g. ``[D]`` or ``[H, W, C]``.
    log_scale: optional initial value or ``tf.Variable`` of shape ``batch + event_shape``
      (a batch of scalings); defaults to a zero variable of the event shape.
    validate_args: check event shapes and finiteness of inputs at run time.
    dtype: float32 (default) or float64.
    name: name of the bijector.
  """

  def __init__(self, event_shape, log_scale=None, validate_args=False, dtype=tf.float32,
               name="scaling"):
    with tf.name_scope(name) as name:
      dtype = _base.float_dtype(dtype)
      event_shape = _base.as_event_shape(event_shape)
      if log_scale is None:
        log_scale = tf.Variable(tf.zeros(event_shape, dtype), name="log_scale")
      elif not isinstance(log_scale, tf.Variable):
        log_scale = tf.Variable(tf.convert_to_tensor(log_scale, dtype), name="log_scale")
      if log_scale.dtype != dtype:
        raise TypeError(f"{name}: log_scale has dtype {log_scale.dtype.name}, expected "
                        f"{dtype.name}.")
      if log_scale.shape[log_scale.shape.rank - len(event_shape):] != event_shape:
        raise ValueError(f"{name}: log_scale shape {log_scale.shape.as_list()} must end with "
                         f"the event shape {list(event_shape)}.")
      parameters = dict(locals())
      self._event_shape = event_shape
      self._log_scale = log_scale
      super().__init__(forward_min_event_ndims=len(event_shape), is_constant_jacobian=True,
                       validate_args=validate_args, dtype=dtype, parameters=parameters,
                       name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict(log_scale=parameter_properties.ParameterProperties(
        event_ndims=lambda self, x_event_ndims=None: len(self._event_shape)))

  @property
  def log_scale(self):
    return self._log_scale

  def _is_increasing(self):
    return True

  def _check(self, t, what):
    return _base.check_input(t, self._event_shape, name=self.name,
                             validate_args=self.validate_args, what=what)

  def _forward(self, x):
    return self._check(x, "x") * tf.exp(self._log_scale)

  def _inverse(self, y):
    return self._check(y, "y") * tf.exp(-self._log_scale)

  def _forward_log_det_jacobian(self, x):
    axes = list(range(-len(self._event_shape), 0))
    return tf.reduce_sum(self._log_scale, axis=axes)

  def _inverse_log_det_jacobian(self, y):
    return -self._forward_log_det_jacobian(y)
