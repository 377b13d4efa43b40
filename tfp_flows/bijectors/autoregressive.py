"""Masked autoregressive flows: TFP's ``MaskedAutoregressiveFlow`` with any element-wise map.

MAF (Papamakarios et al. 2017) transforms each entry by a monotone map whose parameters are
a function of the entries before it (in the data, i.e. ``y``)::

    y_i = f(x_i; theta_i(y_<i)),        log|det dy/dx| = sum_i log f'(x_i; theta_i),

with ``theta`` from one masked network (MADE, Germain et al. 2015). Density evaluation
(``inverse``) is one network pass; sampling (``forward``) takes ``D`` sequential passes. Its
inverse, ``tfb.Invert(MAF)``, is the inverse autoregressive flow (IAF, Kingma et al. 2016):
one-pass sampling, sequential density.

``MaskedAutoregressiveFlow`` here *is* TFP's bijector (a subclass, so everything TFP does with
it still works). It adds:

* ``conditional_shape``: the public statement of the context its network takes
  (``tff.core``'s conditioning protocol), read by ``tff.flows.conditional_kwargs``,
  ``FlowModel`` and the CLI. The context reaches the network as ``conditional_input``.
* ``params_fn`` + ``transformer``: a network ``params_fn(y) -> [..., P * D]`` (parameter-major,
  e.g. ``tff.nets.MADE``) and an element-wise map from ``tff.bijectors.transformers``
  (affine, rational-quadratic spline, ...). On this path one network call gives both the
  output and the log-det (TFP's greedy-attribute cache keeps the log-det with the ``(x, y)``
  pair, so ``log_prob`` runs the network once per layer, where TFP's own path runs it twice),
  the sampling loop carries the log-det along (``D`` calls, none extra), and the bijector
  takes the network's dtype (``dtype``), rejecting inputs of another dtype.

With ``shift_and_log_scale_fn`` or ``bijector_fn`` it behaves exactly as TFP's class.

#### Examples

    made = tff.nets.MADE(event_size=2, num_params=2, hidden_units=[64, 64])
    maf = tff.bijectors.MaskedAutoregressiveFlow(params_fn=made, transformer="affine")
    dist = tff.flows.distribution(maf, [2])

    # TFP's own network and path (conditional):
    made = tfb.AutoregressiveNetwork(params=2, event_shape=[2], hidden_units=[32],
                                     conditional=True, conditional_event_shape=[3])
    maf = tff.bijectors.MaskedAutoregressiveFlow(made, conditional_shape=[3])
    dist.log_prob(x, bijector_kwargs=tff.flows.conditional_kwargs(maf, c))

#### References

[1] Papamakarios, Pavlakou, Murray. Masked Autoregressive Flow for Density Estimation.
    NeurIPS 2017.
[2] Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling. Improved Variational Inference
    with Inverse Autoregressive Flow. NeurIPS 2016.
[3] Germain, Gregor, Murray, Larochelle. MADE: Masked Autoencoder for Distribution
    Estimation. ICML 2015.
[4] Durkan, Bekasov, Murray, Papamakarios. Neural Spline Flows. NeurIPS 2019.
"""

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import core
from tfp_flows import nets
from tfp_flows.bijectors import transformers as transformers_lib
from tfp_flows.bijectors.coupling import check_event

tfb = tfp.bijectors

__all__ = ["MaskedAutoregressiveFlow"]


class _Elementwise(tfb.Bijector):
  """A transformer with fixed parameters as a TFP bijector (what TFP's ``bijector_fn``
  returns on the ``params_fn`` path)."""

  def __init__(self, transformer, params, name="elementwise"):
    parameters = dict(locals())
    self._transformer, self._params = transformer, params
    super().__init__(forward_min_event_ndims=0,
                     is_constant_jacobian=transformer.is_constant_jacobian,
                     parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict()

  def _forward(self, x):
    return self._transformer.forward(x, self._params)[0]

  def _inverse(self, y):
    return self._transformer.inverse(y, self._params)[0]

  def _forward_log_det_jacobian(self, x):
    return self._transformer.forward(x, self._params)[1]

  def _inverse_log_det_jacobian(self, y):
    return self._transformer.inverse(y, self._params)[1]


class MaskedAutoregressiveFlow(core.DtypeChecked, tfb.MaskedAutoregressiveFlow):
  """``tfb.MaskedAutoregressiveFlow`` with a public ``conditional_shape`` and any transformer.

  Args:
    shift_and_log_scale_fn, bijector_fn, is_constant_jacobian, validate_args, unroll_loop,
      event_ndims, name: as for ``tfb.MaskedAutoregressiveFlow``.
    conditional_shape: event shape of the ``conditional_input`` the network takes (None: no
      context).
    params_fn: instead of the two TFP callables, a network ``y [..., D] -> [..., P * D]``
      (parameter-major; ``tff.nets.MADE``) that respects the autoregressive property.
    transformer: with ``params_fn``, the element-wise map: a ``Transformer`` or ``'affine'``,
      ``'additive'``, ``'spline'`` (default ``'affine'``).
    dtype: with ``params_fn``, the dtype of inputs (default: ``params_fn.dtype``, else float32).
  """

  def __init__(self, shift_and_log_scale_fn=None, bijector_fn=None, conditional_shape=None,
               is_constant_jacobian=False, validate_args=False, unroll_loop=False,
               event_ndims=1, name=None, params_fn=None, transformer=None, dtype=None):
    parameters = dict(locals())
    self._conditional_shape = (None if conditional_shape is None
                               else core.as_event_shape(conditional_shape, "conditional_shape"))
    self._params_fn = params_fn
    self._unroll = bool(unroll_loop)
    self._own_dtype = None
    self._transformer = None
    if params_fn is not None:
      if shift_and_log_scale_fn is not None or bijector_fn is not None:
        raise ValueError("pass params_fn (with a transformer) or one of TFP's "
                         "shift_and_log_scale_fn / bijector_fn, not both.")
      if not callable(params_fn):
        raise TypeError(f"params_fn must be callable, got {type(params_fn).__name__}.")
      if event_ndims != 1:
        raise ValueError(f"params_fn works on vector events (event_ndims=1), got {event_ndims}.")
      self._transformer = transformers_lib.get("affine" if transformer is None else transformer)
      self._own_dtype = core.float_dtype(dtype or getattr(params_fn, "dtype", None)
                                         or tf.float32)
      self._event_size = getattr(params_fn, "event_size", None)
      is_constant_jacobian = is_constant_jacobian or self._transformer.is_constant_jacobian
      bijector_fn = self._transformer_bijector
    elif transformer is not None or dtype is not None:
      raise ValueError("transformer and dtype go with params_fn.")
    super().__init__(shift_and_log_scale_fn=shift_and_log_scale_fn, bijector_fn=bijector_fn,
                     is_constant_jacobian=is_constant_jacobian, validate_args=validate_args,
                     unroll_loop=unroll_loop, event_ndims=event_ndims, name=name)
    self._tff_parameters = parameters
    if params_fn is not None:
      self._params_variables = nets.conditioner_variables(params_fn)

  @property
  def conditional_shape(self):
    """Shape of the context the network takes, or None (``tff.core``'s protocol)."""
    return self._conditional_shape

  @property
  def params_fn(self):
    return self._params_fn

  @property
  def transformer(self):
    """The element-wise map on the ``params_fn`` path (None on TFP's paths)."""
    return self._transformer

  @property
  def dtype(self):
    return self._own_dtype

  @property
  def parameters(self):
    """The constructor's arguments: ``type(b)(**b.parameters)`` rebuilds the same bijector."""
    return {k: v for k, v in self._tff_parameters.items()
            if k not in ("self", "__class__")}

  # ----------------------------------------------------------------- the params_fn path

  def _transformer_bijector(self, y, **kwargs):
    return _Elementwise(self._transformer, self._params(y, kwargs.get("conditional_input")))

  def _params(self, y, conditional_input):
    kwargs = {} if conditional_input is None else {"conditional_input": conditional_input}
    out = self._params_fn(y, **kwargs)
    k, d = self._transformer.num_params, y.shape[-1]
    if out.dtype != y.dtype:
      raise TypeError(f"{self.name}: params_fn returned dtype {out.dtype.name}, expected "
                      f"{y.dtype.name}.")
    if d is not None and out.shape[-1] is not None and out.shape[-1] != k * d:
      raise ValueError(f"{self.name}: params_fn output has last dim {out.shape[-1]}; the "
                       f"{self._transformer.name} transformer needs {k} x {d} = {k * d}.")
    return tf.reshape(out, tf.concat([tf.shape(y)[:-1], [k, tf.shape(y)[-1]]], 0))

  def _check(self, x, what):
    if self._event_size is None:  # a user's params_fn without ``event_size``: finiteness only
      return core.check_input(x, x.shape[-1:] if x.shape.rank else [], name=self.name,
                               validate_args=self.validate_args, what=what)
    return check_event(x, [self._event_size], name=self.name, validate_args=self.validate_args,
                       what=what)

  _cache = core.BijectorCacheWithGreedyAttrs(
      forward_name="_augmented_forward", inverse_name="_augmented_inverse")

  def _augmented_inverse(self, y, conditional_input=None):
    if self._params_fn is None:
      kwargs = {} if conditional_input is None else {"conditional_input": conditional_input}
      return super()._inverse(y, **kwargs), {}
    y = self._check(y, "y")
    x, log_det = self._transformer.inverse(y, self._params(y, conditional_input))
    ildj = tf.reduce_sum(log_det, axis=-1)
    return x, {"ildj": ildj, "fldj": -ildj}

  def _augmented_forward(self, x, conditional_input=None):
    if self._params_fn is None:
      kwargs = {} if conditional_input is None else {"conditional_input": conditional_input}
      return super()._forward(x, **kwargs), {}
    x = self._check(x, "x")
    event_size = x.shape[-1]
    if event_size is None:
      raise ValueError(f"{self.name}: sampling needs a static event size, got shape "
                       f"{x.shape}.")

    # D passes: pass k fixes entry k of the order; the last pass's parameters see the final
    # y_<i for every i, so its log-det is the exact one.
    def body(y, _):
      y, log_det = self._transformer.forward(x, self._params(y, conditional_input))
      return y, log_det

    y, log_det = tf.zeros_like(x), tf.zeros_like(x)
    if self._unroll:
      for _ in range(event_size):
        y, log_det = body(y, log_det)
    else:
      y, log_det = tf.while_loop(lambda *_: True, body, (y, log_det),
                                 maximum_iterations=event_size)
    fldj = tf.reduce_sum(log_det, axis=-1)
    return y, {"fldj": fldj, "ildj": -fldj}

  def _forward(self, x, conditional_input=None):
    return self._augmented_forward(x, conditional_input)[0]

  def _inverse(self, y, conditional_input=None):
    return self._augmented_inverse(y, conditional_input)[0]

  def _inverse_log_det_jacobian(self, y, conditional_input=None):
    kwargs = {} if conditional_input is None else {"conditional_input": conditional_input}
    if self._params_fn is None:
      return super()._inverse_log_det_jacobian(y, **kwargs)
    cached = self._cache.inverse_attributes(y, **kwargs)
    if "ildj" not in cached:
      cached.update(self._augmented_inverse(y, conditional_input)[1])
    return cached["ildj"]

  def _forward_log_det_jacobian(self, x, conditional_input=None):
    kwargs = {} if conditional_input is None else {"conditional_input": conditional_input}
    if self._params_fn is None:
      # TFP's class computes it as -ildj(forward(x)); same here.
      return -self._inverse_log_det_jacobian(self._forward(x, conditional_input), **kwargs)
    cached = self._cache.forward_attributes(x, **kwargs)
    if "fldj" not in cached:
      cached.update(self._augmented_forward(x, conditional_input)[1])
    return cached["fldj"]
