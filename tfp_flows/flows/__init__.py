"""Builders: one function per flow family, each returning a ready ``tfb.Bijector``.

Every builder takes ``event_shape`` first and accepts ``num_layers``, ``hidden_units`` (where a
network exists), ``dtype`` and ``seed``; trainable variables exist on return (no lazy build).
Put the result in a ``TransformedDistribution`` over a standard normal of the same event
shape (``tff.flows.distribution`` does exactly that)::

    flow = tff.flows.realnvp([2], num_layers=8, hidden_units=[128, 128])
    dist = tff.flows.distribution(flow, [2])
    dist.log_prob(x); dist.sample(5, seed=1)

Conditional flows: builders with ``conditional_shape`` make every layer take a
``conditional_input``; ``conditional_kwargs(flow, c)`` builds the nested ``bijector_kwargs``
that ``TransformedDistribution.log_prob/sample`` need for it.

``get_config(flow)`` gives the builder call that made a flow (or ``distribution`` of one) as
JSON-ready data and ``from_config`` repeats it (the same structure, fresh variables);
``tff.keras.FlowModel.save("m.keras")`` relies on them.
"""

from tfp_flows.core import conditional_kwargs, conditional_shape
from tfp_flows.flows._common import distribution
from tfp_flows.flows._config import from_config, get_config
from tfp_flows.flows.autoregressive import iaf, maf
from tfp_flows.flows.coupling import nice, realnvp
from tfp_flows.flows.gaussianization import gaussianization, rbig
from tfp_flows.flows.glow import glow
from tfp_flows.flows.image import masked_conv
from tfp_flows.flows.planar import planar, radial
from tfp_flows.flows.spline import nsf

__all__ = ["distribution", "get_config", "from_config", "conditional_kwargs", "conditional_shape",
           "nice", "realnvp", "maf",
           "iaf", "nsf", "planar", "radial", "masked_conv", "glow", "gaussianization", "rbig"]
