"""What the builders share: the base distribution, argument checks, permutations."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import core
from tfp_flows import masks as masks_lib
from tfp_flows.bijectors import transformers as transformers_lib
from tfp_flows.bijectors.coupling import check_event
from tfp_flows.flows import _config

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["distribution"]


def distribution(bijector, event_shape, dtype=None):
  """``TransformedDistribution`` of a standard normal on ``event_shape`` through ``bijector``.

  The base dtype is ``dtype`` if given, else the bijector's, else (for a Chain of
  dtype-agnostic parts, whose ``dtype`` is None) that of its floating variables, else float32.
  """
  if dtype is None:
    dtype = bijector.dtype
  if dtype is None:
    float_dtypes = {v.dtype for v in bijector.variables if v.dtype.is_floating}
    if len(float_dtypes) > 1:
      raise TypeError(f"{bijector.name} mixes variable dtypes {sorted(d.name for d in float_dtypes)}"
                      "; pass dtype= explicitly.")
    dtype = float_dtypes.pop() if float_dtypes else tf.float32
  dtype = core.float_dtype(dtype)
  shape = list(core.as_event_shape(event_shape))
  base = tfd.Sample(tfd.Normal(tf.constant(0., dtype), tf.constant(1., dtype)), shape)
  dist = tfd.TransformedDistribution(base, bijector)
  flow_config = _config.get_config(bijector) if _config.has_config(bijector) else None
  if flow_config is not None:  # made by a builder: so is the distribution (see _config).
    _config.remember(dist, {"builder": "distribution", "kwargs": {
        "bijector": flow_config, "event_shape": shape, "dtype": {"dtype": dtype.name}}})
  return dist


def coupling_channels(mask):
  """(input, changed) channels of an image coupling's conditioner for an ``[H, W, C]`` mask:
  ``(C_A, C_B)`` for a channel mask (the conditioner sees the kept channels only), else
  ``(C, C)`` (a spatial mask: it sees ``x * mask``); see ``tff.bijectors.Coupling``."""
  pattern = masks_lib.channel_pattern(mask)
  if pattern is None:
    c = int(np.shape(mask)[-1])
    return c, c
  return int(pattern.sum()), int((1 - pattern).sum())


def affine(family, log_scale_bound, log_scale_clamp, affine_direction, image=False):
  """The affine transformer of ``family``'s layers, its arguments checked under the builder's
  names. ``image``: the builder makes an image flow, whose couplings have their own scale maps
  (``scale=``): any valid direction is accepted there and changes nothing (configs saved
  before the argument existed record ``"forward"``), and only the tanh clamp exists."""
  if log_scale_clamp not in ("tanh", "softsign"):
    raise ValueError(f"{family}: log_scale_clamp must be 'tanh' or 'softsign', got "
                     f"{log_scale_clamp!r}.")
  if affine_direction not in ("forward", "inverse"):
    raise ValueError(f"{family}: affine_direction must be 'forward' or 'inverse', got "
                     f"{affine_direction!r}.")
  if image:
    if log_scale_clamp != "tanh":
      raise ValueError(f"{family}: log_scale_clamp applies to vector flows only; image flows "
                       f"choose their scale map with scale=..., got "
                       f"log_scale_clamp={log_scale_clamp!r}.")
    return None
  if log_scale_clamp != "tanh" and log_scale_bound is None:
    raise ValueError(f"{family}: log_scale_clamp={log_scale_clamp!r} needs a log_scale_bound "
                     "(None leaves the log-scale unbounded, with no clamp).")
  return transformers_lib.Affine(log_scale_bound, log_scale_clamp, affine_direction)


def vector_size(event_shape, family):
  shape = core.as_event_shape(event_shape)
  if len(shape) != 1:
    raise ValueError(f"{family} on vectors needs event_shape [D], got {list(shape)}.")
  if shape[0] < 2:
    raise ValueError(f"{family} needs an event size of at least 2, got {shape[0]}.")
  return shape[0]


def check_layers(num_layers):
  if (isinstance(num_layers, bool) or not isinstance(num_layers, (int, np.integer))
      or num_layers < 1):
    raise ValueError(f"num_layers must be an int >= 1, got {num_layers!r}.")
  return int(num_layers)


class CheckedPermute(tfb.Permute):
  """``tfb.Permute`` of the last axis that names a wrong event size (TFP's says only that two
  shapes are incompatible): the builders put one at the ends of a stack, where user input
  arrives."""

  def _check(self, t, what):
    return check_event(t, [int(self.permutation.shape[-1])], name=self.name,
                       validate_args=self.validate_args, what=what)

  def _forward(self, x):
    return super()._forward(self._check(x, "x"))

  def _inverse(self, y):
    return super()._inverse(self._check(y, "y"))


def permutation(d, kind, rng, dtype, name, validate_args=False):
  if kind == "reverse":
    perm = np.arange(d)[::-1]
  elif kind == "random":
    perm = rng.permutation(d)
  else:
    raise ValueError(f"permutation must be 'reverse' or 'random', got {kind!r}.")
  return CheckedPermute(perm.astype(np.int32), validate_args=validate_args, name=name)


_config.register("distribution", distribution)
