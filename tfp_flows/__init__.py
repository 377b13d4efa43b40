"""tfp_flows: normalizing flows as TensorFlow Probability bijectors.

    import tfp_flows as tff
    flow = tff.flows.realnvp([2], num_layers=8)
    dist = tff.flows.distribution(flow, [2])

Submodules load on first use (``tff.flows`` imports TensorFlow when first touched), so that
``import tfp_flows`` and the ``tfp-flows`` command can check their arguments before paying for
TensorFlow's start-up.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("bijectors", "cli", "core", "datasets", "distill", "flows", "keras", "masks",
               "nets", "numerics", "testing", "train")


def __getattr__(name):
  if name in _SUBMODULES:
    try:
      return importlib.import_module(f"tfp_flows.{name}")
    except ModuleNotFoundError as e:
      if e.name != f"tfp_flows.{name}":
        raise
  raise AttributeError(f"module 'tfp_flows' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(_SUBMODULES))
