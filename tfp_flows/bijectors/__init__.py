"""tfp_flows bijectors: every class is a ``tfp.bijectors.Bijector`` subclass.

forward = base -> data (the sampling direction); inverse = data -> base (density direction).
"""

from tfp_flows.bijectors.autoregressive import MaskedAutoregressiveFlow
from tfp_flows.bijectors import transformers
from tfp_flows.bijectors.coupling import (AdditiveCoupling, AffineCoupling, Coupling,
                                          SplineCoupling)
from tfp_flows.bijectors.glow import InvertibleConv1x1
from tfp_flows.bijectors.masked_conv import LinearMaskedConv2D, MaskedConv2D
from tfp_flows.bijectors.scaling import ActNorm, Scaling
from tfp_flows.bijectors.reshape import FactorOut, Squeeze
from tfp_flows.bijectors.preprocessing import Dequantize, Logit, bits_per_dim, dequantize
from tfp_flows.bijectors.planar import Planar, Radial
from tfp_flows.bijectors.gaussianization import HouseholderRotation, MarginalGaussianization

__all__ = ["Coupling", "AdditiveCoupling", "AffineCoupling", "SplineCoupling", "transformers",
           "Scaling", "Planar", "Radial",
           "ActNorm", "Squeeze", "FactorOut", "Dequantize", "Logit", "bits_per_dim", "dequantize",
           "MarginalGaussianization", "HouseholderRotation",
           "MaskedConv2D", "LinearMaskedConv2D", "InvertibleConv1x1", "MaskedAutoregressiveFlow"]
