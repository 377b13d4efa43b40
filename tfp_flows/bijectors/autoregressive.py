"""Masked autoregressive flows: TFP's ``MaskedAutoregressiveFlow``, stating its context publicly.

MAF (Papamakarios et al. 2017) transforms each entry by a function of the entries before it::

    y_i = x_i exp(s_i(y_<i)) + t_i(y_<i),        log|det dy/dx| = sum_i s_i,

with ``(t, s)`` from one masked network (MADE, Germain et al. 2015). Density evaluation
(``inverse``) is one network pass; sampling (``forward``) takes ``D`` sequential passes. Its
inverse, ``tfb.Invert(MAF)``, is the inverse autoregressive flow (IAF, Kingma et al. 2016):
one-pass sampling, sequential density.

``MaskedAutoregressiveFlow`` here *is* TFP's bijector (a subclass, so everything TFP does with
it still works); it adds ``conditional_shape``, the public statement of the context its
network takes (``tff.core``'s conditioning protocol), which ``tff.flows.conditional_kwargs``,
``FlowModel`` and the CLI read. The context reaches the network as ``conditional_input``.

#### Examples

    made = tfb.AutoregressiveNetwork(params=2, event_shape=[2], hidden_units=[32],
                                     conditional=True, conditional_event_shape=[3])
    maf = tff.bijectors.MaskedAutoregressiveFlow(made, conditional_shape=[3])
    dist = tff.flows.distribution(maf, [2])
    dist.log_prob(x, bijector_kwargs=tff.flows.conditional_kwargs(maf, c))

#### References

[1] Papamakarios, Pavlakou, Murray. Masked Autoregressive Flow for Density Estimation.
    NeurIPS 2017.
[2] Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling. Improved Variational Inference
    with Inverse Autoregressive Flow. NeurIPS 2016.
[3] Germain, Gregor, Murray, Larochelle. MADE: Masked Autoencoder for Distribution
    Estimation. ICML 2015.
"""

import tensorflow_probability as tfp

from tfp_flows import core

tfb = tfp.bijectors

__all__ = ["MaskedAutoregressiveFlow"]


class MaskedAutoregressiveFlow(tfb.MaskedAutoregressiveFlow):
  """``tfb.MaskedAutoregressiveFlow`` with a public ``conditional_shape``.

  Args:
    shift_and_log_scale_fn, bijector_fn, is_constant_jacobian, validate_args, unroll_loop,
      event_ndims, name: as for ``tfb.MaskedAutoregressiveFlow``.
    conditional_shape: event shape of the ``conditional_input`` the network takes (None: no
      context).
  """

  def __init__(self, shift_and_log_scale_fn=None, bijector_fn=None, conditional_shape=None,
               is_constant_jacobian=False, validate_args=False, unroll_loop=False,
               event_ndims=1, name=None):
    self._conditional_shape = (None if conditional_shape is None
                               else core.as_event_shape(conditional_shape, "conditional_shape"))
    super().__init__(shift_and_log_scale_fn=shift_and_log_scale_fn, bijector_fn=bijector_fn,
                     is_constant_jacobian=is_constant_jacobian, validate_args=validate_args,
                     unroll_loop=unroll_loop, event_ndims=event_ndims, name=name)

  @property
  def conditional_shape(self):
    """Shape of the context the network takes, or None (``tff.core``'s protocol)."""
    return self._conditional_shape

  @property
  def parameters(self):
    """TFP's constructor arguments plus ``conditional_shape``: ``type(b)(**b.parameters)``
    rebuilds the same bijector."""
    return dict(super().parameters, conditional_shape=self._conditional_shape)
