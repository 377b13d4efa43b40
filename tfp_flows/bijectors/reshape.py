"""Image reshaping for multi-scale flows: ``Squeeze`` and the factor-out bijector ``FactorOut``.

Squeeze (Dinh et al. 2017, section 3.6) trades space for channels: every ``f x f`` spatial
block of an ``[H, W, C]`` event becomes one pixel with ``f^2 C`` channels::

    y[i, j, (a f + b) C + c] = x[f i + a, f j + b, c],   0 <= a, b < f,

the ``tf.nn.space_to_depth`` ordering. It is a permutation of the entries, so
``log|det J| = 0``; ``forward`` squeezes (``[H, W, C] -> [H/f, W/f, f^2 C]``) and ``inverse``
un-squeezes. A flow that squeezes in the data -> latent direction holds ``tfb.Invert(Squeeze())``
(forward = latent -> data in this library).

FactorOut (multi-scale architecture, ibid.) lets half of the channels leave the flow while an
inner flow keeps transforming the other half. As a single bijector on ``[H, W, C]`` events::

    forward(x) = concat([x[..., :k], inner.forward(x[..., k:])], axis=-1)
    log|det J|  = log|det J_inner|(x[..., k:])

i.e. block-diagonal: the first ``k`` channels (the factored-out latents) pass through and
``inner`` (any bijector on ``[H, W, C - k]`` events that keeps that shape, usually the next
scales of the flow, which squeeze and un-squeeze internally) acts on the rest. Nesting
``FactorOut`` inside the inner flow gives the whole RealNVP/Glow hierarchy as one
``tfb.Bijector`` on image events whose latent has the image's shape.

#### Examples

    squeeze = tff.bijectors.Squeeze(factor=2)           # [8, 8, 1] -> [4, 4, 4]
    squeeze.forward(tf.zeros([5, 8, 8, 1])).shape       # [5, 4, 4, 4]

    inner = tff.bijectors.ActNorm([4, 4, 2])
    level = tfb.Chain([tfb.Invert(tff.bijectors.Squeeze()),
                       tff.bijectors.FactorOut(inner, [4, 4, 4]),
                       tff.bijectors.Squeeze()])       # a bijector on [8, 8, 1] events

#### References

[1] Dinh, Sohl-Dickstein, Bengio. Density estimation using Real NVP. ICLR 2017.
[2] Kingma, Dhariwal. Glow: Generative Flow with Invertible 1x1 Convolutions. NeurIPS 2018.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import core

tfb = tfp.bijectors

__all__ = ["Squeeze", "FactorOut"]


def _image_event(shape, name, what):
  """``(leading dims, [H, W, C])`` of a static shape ``batch + [H, W, C]``."""
  shape = tf.TensorShape(shape)
  if shape.rank is None:
    return tf.TensorShape(None), tf.TensorShape([None] * 3)
  if shape.rank < 3:
    raise ValueError(f"{name}: {what} must end with an [H, W, C] image shape, got {shape}.")
  return shape[:-3], shape[-3:]


class Squeeze(core.DtypeChecked, tfb.Bijector):
  """Space-to-depth ``[H, W, C] -> [H/f, W/f, f^2 C]`` (forward); log-det 0.

  Args:
    factor: block size ``f`` (int >= 2); ``H`` and ``W`` must be multiples of it.
    validate_args: check shapes and finiteness of inputs at run time.
    dtype: float32 (default) or float64; inputs of another dtype are rejected.
    name: name of the bijector.
  """

  def __init__(self, factor=2, validate_args=False, dtype=tf.float32, name="squeeze"):
    parameters = dict(locals())
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 2:
      raise ValueError(f"Squeeze factor must be an int >= 2, got {factor!r}.")
    self._factor = int(factor)
    with tf.name_scope(name) as name:
      super().__init__(forward_min_event_ndims=3, is_constant_jacobian=True,
                       validate_args=validate_args, dtype=core.float_dtype(dtype),
                       parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict()

  @property
  def factor(self):
    return self._factor

  # Event shapes.
  def _squeezed(self, shape, what):
    h, w, c = shape
    f = self._factor
    if h % f or w % f:
      raise ValueError(f"{self.name}: {what} height and width must be multiples of the factor "
                       f"{f}, got event shape {[h, w, c]}.")
    return [h // f, w // f, c * f * f]

  def _unsqueezed(self, shape, what):
    h, w, c = shape
    f = self._factor
    if c % (f * f):
      raise ValueError(f"{self.name}: {what} channels must be a multiple of factor^2 = {f * f}, "
                       f"got event shape {[h, w, c]}.")
    return [h * f, w * f, c // (f * f)]

  # Event shapes: ``batch + [H, W, C]`` (leading dims are kept, as TFP's shape methods allow).
  def _forward_event_shape(self, input_shape):
    lead, event = _image_event(input_shape, self.name, "input shape")
    if not event.is_fully_defined():
      f = self._factor
      h, w, c = event.as_list()
      return lead.concatenate([None if h is None else h // f, None if w is None else w // f,
                               None if c is None else c * f * f])
    return lead.concatenate(self._squeezed(event.as_list(), "input"))

  def _inverse_event_shape(self, output_shape):
    lead, event = _image_event(output_shape, self.name, "output shape")
    if not event.is_fully_defined():
      f = self._factor
      h, w, c = event.as_list()
      return lead.concatenate([None if h is None else h * f, None if w is None else w * f,
                               None if c is None else c // (f * f)])
    return lead.concatenate(self._unsqueezed(event.as_list(), "output"))

  def _shape_tensor(self, shape, squeeze):
    shape = tf.convert_to_tensor(shape, tf.int32)
    f = self._factor
    lead, (h, w, c) = shape[:-3], tf.unstack(shape[-3:])
    if squeeze:
      event = tf.stack([h // f, w // f, c * f * f])
    else:
      event = tf.stack([h * f, w * f, c // (f * f)])
    return tf.concat([lead, event], 0)

  def _forward_event_shape_tensor(self, input_shape):
    return self._shape_tensor(input_shape, squeeze=True)

  def _inverse_event_shape_tensor(self, output_shape):
    return self._shape_tensor(output_shape, squeeze=False)

  # Transforms.
  def _static_event(self, t, what):
    if t.shape.rank is None or t.shape.rank < 3 or not t.shape[-3:].is_fully_defined():
      raise ValueError(f"{self.name}: {what} needs a statically known [H, W, C] event shape, "
                       f"got {t.shape}.")
    event = t.shape[-3:].as_list()
    return core.check_input(t, event, name=self.name, validate_args=self.validate_args,
                             what=what), event

  def _forward(self, x):
    x, (h, w, c) = self._static_event(x, "x")
    hh, ww, cc = self._squeezed([h, w, c], "x")
    f = self._factor
    flat, restore = core.flatten_batch(x, 3)
    # One kernel; the same order as reshape [hh, f, ww, f, c] -> transpose -> [hh, ww, f f c].
    return restore(tf.nn.space_to_depth(flat, f))

  def _inverse(self, y):
    y, (hh, ww, cc) = self._static_event(y, "y")
    h, w, c = self._unsqueezed([hh, ww, cc], "y")
    f = self._factor
    flat, restore = core.flatten_batch(y, 3)
    return restore(tf.nn.depth_to_space(flat, f))

  def _forward_log_det_jacobian(self, x):
    return tf.zeros([], self.dtype)

  def _inverse_log_det_jacobian(self, y):
    return tf.zeros([], self.dtype)


class FactorOut(core.DtypeChecked, tfb.Bijector):
  """Channels ``[:k]`` pass through, ``inner`` transforms channels ``[k:]`` (multi-scale).

  Args:
    inner: a ``tfb.Bijector`` on ``[H, W, C - k]`` events that keeps that event shape (e.g.
      the next scales of a flow). If ``inner`` takes a context (``tff.core.conditional_shape``),
      so does this bijector: its ``conditional_input`` is routed to every conditional part of
      ``inner``.
    event_shape: ``[H, W, C]`` of this bijector's events.
    num_factored: channels ``k`` that leave the flow here (default ``C // 2``); ``0 < k < C``.
    validate_args: check shapes and finiteness of inputs at run time.
    dtype: float dtype of the events; by default ``inner``'s (``tfb.Chain`` reports none:
      then ``inner.forward_dtype()``).
    name: name of the bijector.
  """

  def __init__(self, inner, event_shape, num_factored=None, validate_args=False, dtype=None,
               name="factor_out"):
    parameters = dict(locals())
    if not isinstance(inner, tfb.Bijector):
      raise TypeError(f"FactorOut: inner must be a tfb.Bijector, got {type(inner).__name__}.")
    event_shape = core.as_event_shape(event_shape)
    if len(event_shape) != 3:
      raise ValueError(f"FactorOut needs an [H, W, C] event shape, got {list(event_shape)}.")
    h, w, c = event_shape
    k = c // 2 if num_factored is None else int(num_factored)
    if not 0 < k < c:
      raise ValueError(f"FactorOut: num_factored must be in (0, C={c}), got {num_factored!r}.")
    inner_shape = [h, w, c - k]
    nd = inner.forward_min_event_ndims
    if not isinstance(nd, (int, np.integer)) or nd > 3:
      raise ValueError("FactorOut: inner must act on single tensors with at most 3 event dims.")
    out_shape = inner.forward_event_shape(inner_shape)
    if out_shape.as_list() != inner_shape:
      raise ValueError(f"FactorOut: inner must keep its event shape {inner_shape}, but maps it "
                       f"to {out_shape}.")
    if dtype is None:
      dtype = inner.dtype
      if dtype is None and isinstance(inner.forward_dtype(), tf.DType):
        dtype = inner.forward_dtype()
    self._inner = inner
    self._event_shape = event_shape
    self._k = k
    with tf.name_scope(name) as name:
      super().__init__(forward_min_event_ndims=3, is_constant_jacobian=inner.is_constant_jacobian,
                       validate_args=validate_args,
                       dtype=None if dtype is None else core.float_dtype(dtype),
                       parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict()

  @property
  def inner(self):
    return self._inner

  @property
  def num_factored(self):
    return self._k

  @property
  def conditional_shape(self):
    """The context shape of ``inner`` (None if it takes none)."""
    return core.conditional_shape(self._inner)

  def _inner_kwargs(self, conditional_input):
    if conditional_input is None:
      return {}
    return core.conditional_kwargs(self._inner, conditional_input)

  def _split(self, t, what):
    t = core.check_input(t, self._event_shape, name=self.name,
                          validate_args=self.validate_args, what=what)
    return t[..., :self._k], t[..., self._k:]

  # The inner flow's output and log-det come from one call on one sliced tensor, stored with
  # the (x, y) pair in TFP's greedy-attribute cache (as ``Coupling`` does): a separate log-det
  # call would slice a new tensor, miss the inner flow's cache and evaluate it again.
  _cache = core.BijectorCacheWithGreedyAttrs(
      forward_name="_augmented_forward", inverse_name="_augmented_inverse")

  def _augmented_forward(self, x, conditional_input=None):
    kept, rest = self._split(x, "x")
    kwargs = self._inner_kwargs(conditional_input)
    out = self._inner.forward(rest, **kwargs)
    fldj = self._batch_log_det(
        self._inner.forward_log_det_jacobian(rest, event_ndims=3, **kwargs), rest)
    return tf.concat([kept, out], axis=-1), {"fldj": fldj, "ildj": -fldj}

  def _augmented_inverse(self, y, conditional_input=None):
    kept, rest = self._split(y, "y")
    kwargs = self._inner_kwargs(conditional_input)
    out = self._inner.inverse(rest, **kwargs)
    ildj = self._batch_log_det(
        self._inner.inverse_log_det_jacobian(rest, event_ndims=3, **kwargs), rest)
    return tf.concat([kept, out], axis=-1), {"ildj": ildj, "fldj": -ildj}

  def _forward(self, x, conditional_input=None):
    return self._augmented_forward(x, conditional_input)[0]

  def _inverse(self, y, conditional_input=None):
    return self._augmented_inverse(y, conditional_input)[0]

  def _batch_log_det(self, ldj, t):
    if self.is_constant_jacobian:
      return ldj
    return tf.broadcast_to(ldj, tf.shape(t)[:tf.rank(t) - 3])

  def _forward_log_det_jacobian(self, x, conditional_input=None):
    cached = self._cache.forward_attributes(x, **self._cond_kwargs(conditional_input))
    if "fldj" not in cached:
      cached.update(self._augmented_forward(x, conditional_input)[1])
    return cached["fldj"]

  def _inverse_log_det_jacobian(self, y, conditional_input=None):
    cached = self._cache.inverse_attributes(y, **self._cond_kwargs(conditional_input))
    if "ildj" not in cached:
      cached.update(self._augmented_inverse(y, conditional_input)[1])
    return cached["ildj"]

  def _cond_kwargs(self, conditional_input):
    return {} if conditional_input is None else {"conditional_input": conditional_input}
