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
    log_scale: ``batch + event_shape`` (a batch of scalings): a tensor (used as given, so
      gradients reach whatever produced it), a ``tf.Variable`` or a ``DeferredTensor`` /
      ``TransformedVariable``; numpy arrays and lists become constant tensors. Default (None):
      a zero ``tf.Variable`` of the event shape (the identity).
    validate_args: check event shapes and finiteness of inputs at run time.
    dtype: float32 (default) or float64.
    name: name of the bijector.

  Batch shape: that of ``log_scale`` beyond the event shape, at ``len(event_shape)`` event
  dims; with more event dims its trailing batch dims join the event (TFP's rule, as for
  ``tfb.Scale``).
  """

  def __init__(self, event_shape, log_scale=None, validate_args=False, dtype=tf.float32,
               name="scaling"):
    parameters = dict(locals())
    with tf.name_scope(name) as scope:
      name = scope.rstrip("/")  # for messages; TFP strips it from the bijector's name too
      dtype = core.float_dtype(dtype)
      event_shape = core.as_event_shape(event_shape)
      log_scale = core.as_parameter(log_scale, dtype=dtype, event_shape=event_shape,
                                    default=lambda: np.zeros(event_shape), name=name,
                                    what="log_scale")
      parameters.update(log_scale=log_scale)
      self._event_shape = event_shape
      self._log_scale = log_scale
      super().__init__(forward_min_event_ndims=len(event_shape), is_constant_jacobian=True,
                       validate_args=validate_args, dtype=dtype, parameters=parameters,
                       name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    # log_scale has as many event dims as the bijector: len(event_shape) at the minimum, and
    # every extra event dim of x joins them.
    return dict(log_scale=core.ParameterProperties(
        event_ndims=lambda self, x_event_ndims: x_event_ndims))

  @property
  def event_shape(self):
    return self._event_shape

  @property
  def log_scale(self):
    return self._log_scale

  def _is_increasing(self):
    return True

  def _check(self, t, what):
    return core.check_input(t, self._event_shape, name=self.name,
                             validate_args=self.validate_args, what=what)

  def _forward(self, x):
    return self._check(x, "x") * tf.exp(tf.convert_to_tensor(self._log_scale))

  def _inverse(self, y):
    return self._check(y, "y") * tf.exp(-tf.convert_to_tensor(self._log_scale))

  def _forward_log_det_jacobian(self, x):
    axes = list(range(-len(self._event_shape), 0))
    return tf.reduce_sum(tf.convert_to_tensor(self._log_scale), axis=axes)

  def _inverse_log_det_jacobian(self, y):
    return -self._forward_log_det_jacobian(y)


class ActNorm(core.DtypeChecked, tfb.Bijector):
  """Per-channel ``y = x * exp(log_scale) + shift`` with data-dependent initialisation.

  Args:
    event_shape: shape of one event, ``[..., C]`` (e.g. ``[H, W, C]`` or ``[D]``); one scale
      and shift per entry of the last axis.
    data_init: initialise ``shift``/``log_scale`` from the first usable batch seen by
      ``inverse`` / ``inverse_log_det_jacobian`` (the data -> latent direction): at least 2
      entries per channel, all finite, with finite statistics (``core.data_init``: otherwise a
      ``ValueError``, and the layer stays uninitialised); fewer than 32 entries per channel
      initialise with a warning. With ``False`` the layer starts (and stays, until trained) at
      its current values: the identity by default.
    eps: added to the batch standard deviation at init.
    shift, log_scale: ``[C]``: tensors (used as given; ``data_init=False`` then), ``tf.Variable``s
      or ``DeferredTensor``s; default (None): zero variables.
    initialized: the boolean "initialised" ``tf.Variable`` (default: a new one, False iff
      ``data_init``). Passing it (as ``copy()`` and ``type(b)(**b.parameters)`` do) shares the
      initialisation state, so a copy is never re-initialised.
    validate_args: check event shapes and finiteness of inputs at run time.
    dtype: float32 (default) or float64.
    name: name of the bijector.

  Variables: ``shift`` and ``log_scale`` (trainable, shape ``[C]``) and ``initialized``
  (non-trainable bool). Batch shape: always ``[]``.
  """

  def __init__(self, event_shape, data_init=True, eps=1e-6, shift=None, log_scale=None,
               initialized=None, validate_args=False, dtype=tf.float32, name="actnorm"):
    parameters = dict(locals())
    with tf.name_scope(name) as scope:
      name = scope.rstrip("/")  # for messages; TFP strips it from the bijector's name too
      dtype = core.float_dtype(dtype)
      event_shape = core.as_event_shape(event_shape)
      if not 0 <= eps < np.inf:
        raise ValueError(f"{name}: eps must be finite and >= 0, got {eps}.")
      channels = event_shape[-1]
      zeros = lambda: np.zeros([channels])
      shift = core.as_parameter(shift, dtype=dtype, event_shape=(channels,), default=zeros,
                                name=name, what="shift")
      log_scale = core.as_parameter(log_scale, dtype=dtype, event_shape=(channels,),
                                    default=zeros, name=name, what="log_scale")
      for what, value in (("shift", shift), ("log_scale", log_scale)):
        if value.shape.rank != 1:
          raise ValueError(f"{name}: {what} must have shape [{channels}] (one per channel), "
                           f"got {value.shape.as_list()}.")
        if data_init and not isinstance(value, tf.Variable):
          raise ValueError(f"{name}: data_init assigns {what}, which is not a tf.Variable; "
                           "pass a variable or data_init=False.")
      initialized = core.as_init_flag(initialized, done=not data_init, name=name)
      parameters.update(shift=shift, log_scale=log_scale, initialized=initialized)
      self._event_shape = event_shape
      self._data_init = bool(data_init)
      self._eps = float(eps)
      self._per_channel = int(np.prod(event_shape[:-1]))
      self._shift = shift
      self._log_scale = log_scale
      self._initialized = initialized
      super().__init__(forward_min_event_ndims=len(event_shape), is_constant_jacobian=False,
                       validate_args=validate_args, dtype=dtype, parameters=parameters,
                       name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    # One value per channel, never batched: the parameters are the whole [C].
    event_ndims = lambda self, x_event_ndims: x_event_ndims - len(self._event_shape) + 1
    return dict(shift=core.ParameterProperties(event_ndims=event_ndims),
                log_scale=core.ParameterProperties(event_ndims=event_ndims))

  @property
  def event_shape(self):
    return self._event_shape

  @property
  def shift(self):
    return self._shift

  @property
  def log_scale(self):
    return self._log_scale

  @property
  def initialized(self):
    """The boolean variable recording that the data-dependent initialisation has run."""
    return core.init_state(self._initialized)

  def _check(self, t, what):
    return core.check_input(t, self._event_shape, name=self.name,
                             validate_args=self.validate_args, what=what)

  def initialize(self, y):
    """(Re)initialises ``shift``/``log_scale`` from data ``y`` and sets the flag.

    The same checks as the automatic initialisation (``ValueError`` for an unusable batch,
    nothing assigned). Eager only.
    """
    if not self._data_init:
      raise ValueError(f"{self.name} was built with data_init=False.")
    y = self._check(tf.convert_to_tensor(y, self.dtype), "y")
    before = bool(self._initialized.numpy())
    self._initialized.assign(False)
    try:
      self._maybe_init(y)
    except ValueError:
      self._initialized.assign(before)
      raise

  def _statistics(self, y):
    """(mean, std + eps) per channel, overflow-safe (deviations scaled by their maximum)."""
    flat, _ = core.flatten_batch(tf.stop_gradient(y), 1)  # [N * H * W, C]
    flat = tf.reshape(flat, [-1, self._event_shape[-1]])
    mean = tf.reduce_mean(flat, axis=0)
    dev = flat - mean
    m = tf.reduce_max(tf.abs(dev), axis=0)
    safe_m = tf.where(m > 0., m, tf.ones_like(m))
    std = safe_m * tf.sqrt(tf.reduce_mean(tf.square(dev / safe_m), axis=0))
    return mean, std + tf.constant(self._eps, self.dtype)

  def _maybe_init(self, y):
    """Initialises from ``y`` (data side) unless done; returns control dependencies."""
    if not self._data_init:
      return []

    def compute(t):
      mean, std = self._statistics(t)
      return [(self._shift, mean), (self._log_scale, tf.math.log(std))]

    # Statistics per channel come from N * prod(event_shape[:-1]) entries.
    flat_events = tf.reshape(y, [-1] + list(self._event_shape[-1:]))
    return core.data_init(self._initialized, flat_events, compute, name=self.name,
                          event_ndims=1, min_events=2, recommended_events=32,
                          what="entries per channel")

  def _batch_shape_of(self, t):
    return tf.shape(t)[:tf.rank(t) - len(self._event_shape)]

  def _log_det(self, t):
    ldj = self._per_channel * tf.reduce_sum(tf.convert_to_tensor(self._log_scale))
    return tf.broadcast_to(ldj, self._batch_shape_of(t))

  def _forward(self, x):
    x = self._check(x, "x")
    return x * tf.exp(tf.convert_to_tensor(self._log_scale)) + tf.convert_to_tensor(self._shift)

  def _inverse(self, y):
    y = self._check(y, "y")
    with tf.control_dependencies(self._maybe_init(y)):
      return ((y - tf.convert_to_tensor(self._shift)) *
              tf.exp(-tf.convert_to_tensor(self._log_scale)))

  def _forward_log_det_jacobian(self, x):
    return self._log_det(self._check(x, "x"))

  def _inverse_log_det_jacobian(self, y):
    y = self._check(y, "y")
    with tf.control_dependencies(self._maybe_init(y)):
      return -self._log_det(y)
