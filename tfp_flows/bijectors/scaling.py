"""NICE's diagonal scaling layer and Glow's activation normalisation (ActNorm).

Scaling (Dinh et al. 2014, section 3.3)::

    y = x * exp(s),    log|det J| = sum(s) over the event,

with one trainable ``s`` per event entry (initialised at 0, the identity). NICE puts it last in
the flow, so additive couplings (volume preserving) can still change the volume.

ActNorm (Kingma & Dhariwal 2018, section 3.1): one scale and shift per channel (last axis)::

    forward (latent -> data):   y = x * exp(s_c) + b_c
    inverse (data -> latent):   x = (y - b_c) * exp(-s_c)
    log|det J| = (number of entries per channel) * sum_c s_c     (H * W * sum_c s_c for images)

The scale is ``exp(s)``, positive for every value of ``s``. Data-dependent initialisation: the
first batch ``y`` seen in the data -> latent direction (``inverse``/``log_prob``) sets
``b = mean(y)`` and ``s = log(std(y) + eps)`` (statistics over all but the channel axis), so
that the inverse outputs have zero mean and unit variance per channel. The "initialised" flag is a
(non-trainable) variable, so the init runs once, eagerly, in ``tf.function`` and under XLA,
and is saved and restored with the weights (``tf.train.Checkpoint``, Keras).

#### Examples

    scaling = tff.bijectors.Scaling([2])
    flow = tfb.Chain([scaling, coupling_2, coupling_1])

    actnorm = tff.bijectors.ActNorm([8, 8, 3])
    dist = tff.flows.distribution(tfb.Chain([actnorm, ...]), [8, 8, 3])
    dist.log_prob(first_batch)     # initialises actnorm from first_batch, once

#### References

[1] Dinh, Krueger, Bengio. NICE: Non-linear Independent Components Estimation. 2014.
[2] Kingma, Dhariwal. Glow: Generative Flow with Invertible 1x1 Convolutions. NeurIPS 2018.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import core

tfb = tfp.bijectors

__all__ = ["Scaling", "ActNorm"]


class Scaling(core.DtypeChecked, tfb.Bijector):
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
      dtype = core.float_dtype(dtype)
      event_shape = core.as_event_shape(event_shape)
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
    return dict(log_scale=core.ParameterProperties(
        event_ndims=lambda self, x_event_ndims=None: len(self._event_shape)))

  @property
  def log_scale(self):
    return self._log_scale

  def _is_increasing(self):
    return True

  def _check(self, t, what):
    return core.check_input(t, self._event_shape, name=self.name,
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


class ActNorm(core.DtypeChecked, tfb.Bijector):
  """Per-channel ``y = x * exp(log_scale) + shift`` with data-dependent initialisation.

  Args:
    event_shape: shape of one event, ``[..., C]`` (e.g. ``[H, W, C]`` or ``[D]``); one scale
      and shift per entry of the last axis.
    data_init: initialise ``shift``/``log_scale`` from the first batch seen by ``inverse`` /
      ``inverse_log_det_jacobian`` (the data -> latent direction). With ``False`` the layer
      starts (and stays, until trained) at its current values: the identity.
    eps: added to the batch standard deviation at init.
    validate_args: check event shapes and finiteness of inputs at run time.
    dtype: float32 (default) or float64.
    name: name of the bijector.

  Variables: ``shift`` and ``log_scale`` (trainable, shape ``[C]``) and ``initialized``
  (non-trainable bool).
  """

  def __init__(self, event_shape, data_init=True, eps=1e-6, validate_args=False,
               dtype=tf.float32, name="actnorm"):
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      dtype = core.float_dtype(dtype)
      event_shape = core.as_event_shape(event_shape)
      if not eps >= 0:
        raise ValueError(f"{name}: eps must be >= 0, got {eps}.")
      channels = event_shape[-1]
      self._event_shape = event_shape
      self._eps = float(eps)
      self._per_channel = int(np.prod(event_shape[:-1]))
      self._shift = tf.Variable(tf.zeros([channels], dtype), name="shift")
      self._log_scale = tf.Variable(tf.zeros([channels], dtype), name="log_scale")
      self._initialized = core.init_flag(done=not data_init)
      super().__init__(forward_min_event_ndims=len(event_shape), is_constant_jacobian=False,
                       validate_args=validate_args, dtype=dtype, parameters=parameters,
                       name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict()

  @property
  def shift(self):
    return self._shift

  @property
  def log_scale(self):
    return self._log_scale

  @property
  def initialized(self):
    return self._initialized

  def _check(self, t, what):
    return core.check_input(t, self._event_shape, name=self.name,
                             validate_args=self.validate_args, what=what)

  def _maybe_init(self, y):
    """Initialises from ``y`` (data side) unless done; returns a control dependency."""
    def init():
      axes = tf.range(tf.rank(y) - 1)
      mean = tf.reduce_mean(y, axis=axes)
      std = tf.math.reduce_std(y, axis=axes) + tf.constant(self._eps, self.dtype)
      return [self._shift.assign(mean), self._log_scale.assign(tf.math.log(std))]
    return core.initialize_once(self._initialized, init)

  def _batch_shape_of(self, t):
    return tf.shape(t)[:tf.rank(t) - len(self._event_shape)]

  def _log_det(self, t):
    ldj = self._per_channel * tf.reduce_sum(self._log_scale)
    return tf.broadcast_to(ldj, self._batch_shape_of(t))

  def _forward(self, x):
    return self._check(x, "x") * tf.exp(self._log_scale) + self._shift

  def _inverse(self, y):
    y = self._check(y, "y")
    with tf.control_dependencies([self._maybe_init(y)]):
      return (y - self._shift) * tf.exp(-self._log_scale)

  def _forward_log_det_jacobian(self, x):
    return self._log_det(self._check(x, "x"))

  def _inverse_log_det_jacobian(self, y):
    y = self._check(y, "y")
    with tf.control_dependencies([self._maybe_init(y)]):
      return -self._log_det(y)
