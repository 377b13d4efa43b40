"""tfp_flows bijectors: every class is a ``tfp.bijectors.Bijector`` subclass.

forward = base -> data (the sampling direction); inverse = data -> base (density direction).
"""

from tfp_flows.bijectors.coupling import AdditiveCoupling, AffineCoupling
from tfp_flows.bijectors.scaling import Scaling

__all__ = ["AdditiveCoupling", "AffineCoupling", "Scaling"]
