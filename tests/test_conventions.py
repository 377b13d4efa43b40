"""TFP's conventions over the whole contract registry, and the fail-safe rules of the ground floor.

``tff.testing.assert_tfp_conventions`` runs on every ``Case`` of ``tests/test_contract.py``
(parameters reconstruction, copies, equality/hash, batch shapes, event-shape methods with
leading dims, wrong event sizes behind unknown static shapes, tensor parameters with gradients
to their producer, slicing). The tests below it check, from the user's side, the amortised
(tensor-valued) parameters, data-dependent initialisation on unusable batches, overflow-safe
norms and the reports of iterative solves.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows as tff
from test_contract import REGISTRY

tfb = tfp.bijectors
tfd = tfp.distributions

# Families whose owners have open fixes for a convention (see the report that added this list);
# strict, so a fix shows up as an unexpected pass.
_MASKED_CONV = ("MaskedConv2D/LinearMaskedConv2D create their weights in __init__ and do not "
                "take them back as arguments: type(b)(**b.parameters) and b.copy() come back "
                "re-initialised (issue 11 item 3)")
KNOWN_FAILURES = {
    "masked_conv_linear_image": _MASKED_CONV,
    "masked_conv_linear_reverse_image": _MASKED_CONV,
    "masked_conv_mintnet_image": _MASKED_CONV,
}


def _params(case):
  marks = []
  if case.name in KNOWN_FAILURES:
    marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[case.name]))
  return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_params(c) for c in REGISTRY])
def test_tfp_conventions(case):
  dtype = tf.float64
  bijector = case.make(dtype)
  tff.testing.randomize_variables(bijector, scale=case.scale, seed=7)
  rng = np.random.default_rng(11)
  shape = (case.batch,) + tuple(case.event_shape)
  x = case.sample(rng, shape, dtype) if case.sample is not None else (
      case.input_scale * rng.standard_normal(shape))
  tff.testing.assert_tfp_conventions(bijector, tf.constant(x, dtype))
