"""Coupling layers: NICE additive coupling and RealNVP affine coupling.

A binary ``mask`` splits the event into entries that are kept (mask 1) and entries that are
transformed (mask 0). The transformed entries move by a function of the kept ones::

    additive (NICE):   y_B = x_B + t(x_A)                       log|det J| = 0
    affine (RealNVP):  y_B = x_B * exp(s(x_A)) + t(x_A)         log|det J| = sum s(x_A)
                       y_A = x_A

so the Jacobian is triangular and the inverse is explicit: ``x_B = (y_B - t(y_A)) exp(-s)``.

Conditioners: any callable ``net(x_kept) -> params`` (or ``net(x_kept, conditional_input=c)``
when a ``conditional_input`` is passed through ``bijector_kwargs``), e.g. ``tff.nets.MLP``, a
Keras 3 layer, a tf_keras layer or a plain function.

* Vector events (``mask`` of shape ``[D]``): the conditioner sees the ``d_A`` kept entries,
  shape ``[..., d_A]``, and returns ``[..., d_B]`` (additive) or ``[..., 2 d_B]`` / a pair
  ``(shift, log_scale)`` of ``[..., d_B]`` (affine). No compute is spent on masked zeros.
* Image events (``mask`` of shape ``[H, W, C]``): the conditioner sees ``x * mask``, shape
  ``[..., H, W, C]``, and returns ``[..., H, W, C]`` (additive) or ``[..., H, W, 2C]`` / a pair
  (affine); outputs at kept positions are ignored.

Bounded log-scale (affine): ``s = b * tanh(s_raw / b)`` with ``b = log_scale_bound`` (3 by
default). It equals ``s_raw`` near zero (so a zero-initialised network is the identity) and
keeps every layer's scale within ``[e^-b, e^b]`` so training cannot overflow; pass ``None``
for the unbounded RealNVP map.

#### Examples

    mask = tff.masks.half(4)
    net = tff.nets.MLP(input_size=2, output_size=4, hidden_units=[64, 64])
    bij = tff.bijectors.AffineCoupling(mask, net)
    dist = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0., 1.), [4]), bij)

#### References

[1] Dinh, Krueger, Bengio. NICE: Non-linear Independent Components Estimation. 2014.
[2] Dinh, Sohl-Dickstein, Bengio. Density estimation using Real NVP. ICLR 2017.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import masks as masks_lib
from tfp_flows import nets
from tfp_flows import core

tfb = tfp.bijectors

__all__ = ["AdditiveCoupling", "AffineCoupling"]


def _as_slice_or_indices(indices):
  if np.all(np.diff(indices) == 1):
    return slice(int(indices[0]), int(indices[-1]) + 1)
  return indices


def _take(x, where):
  """Entries of the last axis: a slice or a gather."""
  if isinstance(where, slice):
    return x[..., where]
  return tf.gather(x, where, axis=-1)


class _Coupling(core.DtypeChecked, tfb.Bijector):
  """Mask bookkeeping, conditioner calls and checks shared by both couplings."""

  _num_params = None  # 1 (shift) or 2 (shift, log-scale)

  def __init__(self, mask, conditioner, *, conditional_shape, is_constant_jacobian,
               validate_args, dtype, name, parameters):
    with tf.name_scope(name) as name:
      if not callable(conditioner):
        raise TypeError(f"{name}: conditioner must be callable, got {type(conditioner).__name__}.")
      mask = masks_lib.validate_mask(mask)
      self._mask_np = mask
      self._event_shape = tuple(mask.shape)
      self._image = mask.ndim > 1
      self._conditioner = conditioner
      self._conditional_shape = (None if conditional_shape is None
                                 else core.as_event_shape(conditional_shape))
      dtype = core.float_dtype(dtype)
      if self._image:
        self._mask = tf.constant(mask, dtype)
        self._in_size = self._out_size = None
      else:
        keep, change = np.flatnonzero(mask == 1), np.flatnonzero(mask == 0)
        order = np.concatenate([keep, change])
        # Contiguous index sets are sliced (cheaper than a gather), others gathered.
        self._keep, self._change = _as_slice_or_indices(keep), _as_slice_or_indices(change)
        self._in_size, self._out_size = len(keep), len(change)
        # Re-assembly: concat([x_keep, y_change]) gathered back into the event order.
        self._restore = None if np.all(order == np.arange(len(order))) else np.argsort(order)
      super().__init__(forward_min_event_ndims=mask.ndim,
                       is_constant_jacobian=is_constant_jacobian,
                       validate_args=validate_args, dtype=dtype,
                       parameters=parameters, name=name)
      self._build_conditioner()

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict()  # no batch-shaped parameters: the conditioner is a callable.

  @property
  def mask(self):
    return self._mask_np

  @property
  def conditioner(self):
    return self._conditioner

  @property
  def conditional_shape(self):
    """Shape of the ``conditional_input`` the conditioner takes, or None (the protocol in
    ``tff.core``)."""
    return self._conditional_shape

  def _build_conditioner(self):
    """Calls the conditioner once so lazily built layers own their variables now."""
    if self._image:
      probe = tf.zeros((1,) + self._event_shape, self.dtype)
    else:
      probe = tf.zeros([1, self._in_size], self.dtype)
    kwargs = {}
    if self._conditional_shape is not None:
      kwargs["conditional_input"] = tf.zeros((1,) + self._conditional_shape, self.dtype)
    try:
      self._params(probe, kwargs)
    except (TypeError, ValueError, tf.errors.InvalidArgumentError) as e:
      raise (TypeError if isinstance(e, TypeError) else ValueError)(
          f"{self.name}: the conditioner fails on an input of shape "
          f"{probe.shape.as_list()} and dtype {self.dtype.name} (the kept part of "
          f"the mask's event): {e}") from e
    # Keras 3 variables are not tf.Module-visible: hold the tf.Variables behind them.
    self._conditioner_variables = nets.conditioner_variables(self._conditioner)

  def _params(self, x_keep, kwargs):
    """Conditioner output split into ``_num_params`` tensors shaped like the changed part."""
    # Conditioners always see one batch axis: [N, d_A] or [N, H, W, C].
    event_rank = 3 if self._image else 1
    lead = tf.shape(x_keep)[:tf.rank(x_keep) - event_rank]
    flat = tf.reshape(x_keep, tf.concat([[-1], tf.shape(x_keep)[-event_rank:]], 0))
    if "conditional_input" in kwargs:
      c = tf.convert_to_tensor(kwargs["conditional_input"], self.dtype)
      c_shape = (tf.shape(c)[-len(self._conditional_shape):] if self._conditional_shape
                 else tf.shape(c)[-1:])
      c = tf.broadcast_to(c, tf.concat([lead, c_shape], 0))
      kwargs = dict(kwargs, conditional_input=tf.reshape(c, tf.concat([[-1], c_shape], 0)))
    out = self._conditioner(flat, **kwargs)
    static_lead = (x_keep.shape[:x_keep.shape.rank - event_rank] if x_keep.shape.rank is not None
                   else tf.TensorShape(None))

    def unflatten(t):
      t = tf.convert_to_tensor(t)
      r = tf.reshape(t, tf.concat([lead, tf.shape(t)[1:]], 0))
      r.set_shape(static_lead.concatenate(t.shape[1:]))
      return r

    out = [unflatten(o) for o in out] if isinstance(out, (tuple, list)) else unflatten(out)
    k = self._num_params
    expected = self._event_shape[-1] if self._image else self._out_size
    if isinstance(out, (tuple, list)):
      parts = [tf.convert_to_tensor(o) for o in out]
      sizes = [p.shape[-1] for p in parts]
    else:
      out = tf.convert_to_tensor(out)
      sizes = [out.shape[-1]]
      parts = tf.split(out, k, axis=-1) if out.shape[-1] == k * expected else None
    if parts is None or len(parts) != k or any(p.shape[-1] != expected for p in parts):
      raise ValueError(
          f"{self.name}: conditioner output has last dim(s) {sizes}; expected one tensor "
          f"with last dim {k * expected} or {k} tensors with last dim {expected}.")
    for p in parts:
      if p.dtype != self.dtype:
        raise TypeError(f"{self.name}: conditioner returned dtype {p.dtype.name}, expected "
                        f"{self.dtype.name}.")
    return parts

  def _split(self, x, kwargs):
    """(kept part, changed part, conditioner params) of an input."""
    if self._image:
      x_keep = x * self._mask
      return x_keep, x, self._params(x_keep, kwargs)
    x_keep, x_change = _take(x, self._keep), _take(x, self._change)
    return x_keep, x_change, self._params(x_keep, kwargs)

  def _merge(self, x_keep, y_change):
    if self._image:
      return x_keep + (1. - self._mask) * y_change
    y = tf.concat([x_keep, y_change], axis=-1)
    return y if self._restore is None else tf.gather(y, self._restore, axis=-1)

  def _reduce_event(self, t):
    """Sums log-scales over the changed entries of one event."""
    if self._image:
      return tf.reduce_sum((1. - self._mask) * t, axis=[-3, -2, -1])
    return tf.reduce_sum(t, axis=-1)

  def _check(self, x, what):
    return core.check_input(x, self._event_shape, name=self.name,
                             validate_args=self.validate_args, what=what)

  def _cond_kwargs(self, conditional_input):
    return {} if conditional_input is None else {"conditional_input": conditional_input}


class AdditiveCoupling(_Coupling):
  """NICE additive coupling ``y_B = x_B + t(x_A)``, volume preserving (log-det 0).

  Args:
    mask: 0/1 array of the event shape (``tff.masks``); 1 = kept, conditions the rest.
    conditioner: callable ``x_kept -> shift`` (see the module docstring for shapes).
    conditional_shape: shape of the ``conditional_input`` the conditioner takes, if any.
    validate_args: check event shapes and finiteness of inputs at run time.
    dtype: float32 (default) or float64.
    name: name of the bijector (used as the key of its ``bijector_kwargs`` in a Chain).
  """

  _num_params = 1

  def __init__(self, mask, conditioner, conditional_shape=None, validate_args=False,
               dtype=tf.float32, name="additive_coupling"):
    parameters = dict(locals())
    super().__init__(mask, conditioner, conditional_shape=conditional_shape,
                     is_constant_jacobian=True, validate_args=validate_args, dtype=dtype,
                     name=name, parameters=parameters)

  def _forward(self, x, conditional_input=None):
    x_keep, x_change, (shift,) = self._split(self._check(x, "x"),
                                             self._cond_kwargs(conditional_input))
    return self._merge(x_keep, x_change + shift)

  def _inverse(self, y, conditional_input=None):
    y_keep, y_change, (shift,) = self._split(self._check(y, "y"),
                                             self._cond_kwargs(conditional_input))
    return self._merge(y_keep, y_change - shift)

  def _forward_log_det_jacobian(self, x, conditional_input=None):
    return tf.zeros([], self.dtype)

  def _inverse_log_det_jacobian(self, y, conditional_input=None):
    return tf.zeros([], self.dtype)


class AffineCoupling(_Coupling):
  """RealNVP affine coupling ``y_B = x_B * exp(s(x_A)) + t(x_A)`` with a bounded log-scale.

  Args:
    mask: 0/1 array of the event shape (``tff.masks``); 1 = kept, conditions the rest.
    conditioner: callable ``x_kept -> (shift, raw_log_scale)`` as one tensor with twice the
      changed size on the last axis (shift first) or a pair.
    log_scale_bound: ``b`` in ``s = b tanh(s_raw / b)``; ``None`` leaves ``s`` unbounded.
    conditional_shape: shape of the ``conditional_input`` the conditioner takes, if any.
    validate_args: check event shapes and finiteness of inputs at run time.
    dtype: float32 (default) or float64.
    name: name of the bijector (used as the key of its ``bijector_kwargs`` in a Chain).
  """

  _num_params = 2

  def __init__(self, mask, conditioner, log_scale_bound=3., conditional_shape=None,
               validate_args=False, dtype=tf.float32, name="affine_coupling"):
    parameters = dict(locals())
    if log_scale_bound is not None and not log_scale_bound > 0:
      raise ValueError(f"log_scale_bound must be positive or None, got {log_scale_bound}.")
    self._log_scale_bound = log_scale_bound
    super().__init__(mask, conditioner, conditional_shape=conditional_shape,
                     is_constant_jacobian=False, validate_args=validate_args, dtype=dtype,
                     name=name, parameters=parameters)

  def _shift_log_scale(self, params):
    shift, raw = params
    b = self._log_scale_bound
    log_scale = raw if b is None else b * tf.math.tanh(raw / b)
    return shift, log_scale

  # One conditioner call gives both the output and the log-det: TFP's greedy-attribute cache
  # stores the log-det with the (x, y) pair, so log_prob's inverse + inverse_log_det_jacobian
  # evaluate each conditioner once (as tfb.FFJORD does).
  _cache = core.BijectorCacheWithGreedyAttrs(
      forward_name="_augmented_forward", inverse_name="_augmented_inverse")

  def _augmented_forward(self, x, conditional_input=None):
    x_keep, x_change, params = self._split(self._check(x, "x"),
                                           self._cond_kwargs(conditional_input))
    shift, log_scale = self._shift_log_scale(params)
    fldj = self._reduce_event(log_scale)
    return self._merge(x_keep, x_change * tf.exp(log_scale) + shift), {"fldj": fldj,
                                                                        "ildj": -fldj}

  def _augmented_inverse(self, y, conditional_input=None):
    y_keep, y_change, params = self._split(self._check(y, "y"),
                                           self._cond_kwargs(conditional_input))
    shift, log_scale = self._shift_log_scale(params)
    ildj = -self._reduce_event(log_scale)
    return self._merge(y_keep, (y_change - shift) * tf.exp(-log_scale)), {"ildj": ildj,
                                                                           "fldj": -ildj}

  def _forward(self, x, conditional_input=None):
    return self._augmented_forward(x, conditional_input)[0]

  def _inverse(self, y, conditional_input=None):
    return self._augmented_inverse(y, conditional_input)[0]

  def _forward_log_det_jacobian(self, x, conditional_input=None):
    kwargs = self._cond_kwargs(conditional_input)
    cached = self._cache.forward_attributes(x, **kwargs)
    if "fldj" not in cached:
      cached.update(self._augmented_forward(x, conditional_input)[1])
    return cached["fldj"]

  def _inverse_log_det_jacobian(self, y, conditional_input=None):
    kwargs = self._cond_kwargs(conditional_input)
    cached = self._cache.inverse_attributes(y, **kwargs)
    if "ildj" not in cached:
      cached.update(self._augmented_inverse(y, conditional_input)[1])
    return cached["ildj"]
