"""tfp_flows: normalizing flows as TensorFlow Probability bijectors.

    import tfp_flows as tff
    flow = tff.flows.realnvp([2], num_layers=8)
    dist = tff.flows.distribution(flow, [2])
"""

from tfp_flows import bijectors
from tfp_flows import datasets
from tfp_flows import flows
from tfp_flows import masks
from tfp_flows import nets
from tfp_flows import numerics
from tfp_flows import testing
from tfp_flows import train

__version__ = "0.1.0"


def __getattr__(name):
  # Keras-dependent modules load on first use so that importing tfp_flows stays light.
  if name in ("keras", "distill"):
    import importlib
    return importlib.import_module(f"tfp_flows.{name}")
  raise AttributeError(f"module 'tfp_flows' has no attribute {name!r}")
