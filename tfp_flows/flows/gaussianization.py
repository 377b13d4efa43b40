"""Gaussianization-flow builders: ``gaussianization`` (trainable) and ``rbig`` (fitted from data)."""

import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import core
from tfp_flows.bijectors.gaussianization import HouseholderRotation, MarginalGaussianization
from tfp_flows.flows import _common
from tfp_flows.flows import _config

tfb = tfp.bijectors

__all__ = ["gaussianization", "rbig"]


_ROTATIONS = ("householder", "pca", "random")


@_config.builder
def gaussianization(event_shape, num_layers=4, num_components=16, rotation="householder",
                    num_reflections=None, data_init=True, bandwidth_factor=1.,
                    validate_args=False, dtype=tf.float32, seed=0, name="gaussianization"):
  """Gaussianization flow (Meng et al. 2020): marginal Gaussianizations and rotations.

  Data side first: ``[marginal_0, rotation_0, marginal_1, ..., rotation_{L-2}, marginal_{L-1}]``
  (``tff.bijectors.MarginalGaussianization`` / ``HouseholderRotation``), so ``log_prob`` makes
  the marginals Gaussian, rotates, and repeats; one layer is a marginal Gaussianization.

  Args:
    event_shape: ``[D]``.
    num_layers: number of marginal Gaussianization layers L (L - 1 rotations between them).
    num_components: logistics per dimension in each marginal layer.
    rotation: ``"householder"`` (trained; loaded with the principal axes of the data when
      ``data_init``, random otherwise), ``"pca"`` (fixed PCA rotations, need ``data_init``)
      or ``"random"`` (fixed random orthogonal).
    num_reflections: reflections per trained rotation (default D).
    data_init: initialise every layer from the first batch passed through ``log_prob`` /
      ``inverse`` (each layer from the previous layer's output); state is kept in variables.
    bandwidth_factor: scales the rule-of-thumb bandwidths of the data-dependent init.
    validate_args, dtype, seed, name: as for every builder.

  Returns:
    A ``tfb.Chain``; its variables exist on return.
  """
  shape = core.as_event_shape(event_shape)
  if len(shape) != 1:
    raise ValueError(f"gaussianization needs event_shape [D], got {list(shape)}.")
  d = shape[0]
  num_layers = _common.check_layers(num_layers)
  dtype = core.float_dtype(dtype)
  if rotation not in _ROTATIONS:
    raise ValueError(f"rotation must be one of {_ROTATIONS}, got {rotation!r}.")
  if rotation == "pca" and not data_init:
    raise ValueError("rotation='pca' sets the rotations from data: it needs data_init=True.")
  seeds = core.child_seeds(seed, num_layers - 1)
  layers = []
  for i in range(num_layers):
    if i:
      pca = rotation == "pca" or (rotation == "householder" and data_init)
      layers.append(HouseholderRotation(
          d, num_reflections=None if pca else num_reflections, init="pca" if pca else "random",
          trainable=rotation == "householder", validate_args=validate_args, dtype=dtype,
          seed=seeds[i - 1], name=f"{name}_rotation_{i}"))
    layers.append(MarginalGaussianization(
        d, num_components=num_components, data_init=data_init,
        bandwidth_factor=bandwidth_factor, validate_args=validate_args, dtype=dtype,
        name=f"{name}_marginal_{i}"))
  # Listed data side first: log_prob runs layers[0] first; sampling runs it last.
  return tfb.Chain(layers, name=name)


def rbig(x, num_layers=8, num_components=32, rotation="householder", batch_size=None, **kwargs):
  """Training-free fit: iterative Gaussianization (RBIG, Laparra et al. 2011) of data ``x``.

  Builds ``gaussianization(x.shape[-1:], num_layers, num_components, rotation, ...)`` and
  passes ``x`` through it once in the density direction: each marginal layer takes its
  anchors from the quantiles of its input (bandwidths by Silverman's rule) and each rotation
  the principal axes of its input, so the flow Gaussianizes ``x`` with no gradient step. The
  result is an ordinary flow whose variables can then be refined by maximum likelihood
  (``rotation="householder"`` keeps the rotations trainable too).

  Args:
    x: data ``[N, D]`` (numpy or tensor); its dtype is the flow's unless ``dtype`` is given.
    num_layers, num_components, rotation: as for ``gaussianization`` (``"pca"`` or the
      PCA-initialised ``"householder"``; ``"random"`` rotations are the other classic RBIG).
    batch_size: use only the first ``batch_size`` rows for the fit (None: all of ``x``).
    **kwargs: further arguments of ``gaussianization`` (``bandwidth_factor``, ``seed``,
      ``name``, ``dtype``, ``validate_args``).

  Returns:
    The fitted ``tfb.Chain`` (every "initialised" flag set).
  """
  dtype = core.float_dtype(kwargs.pop("dtype", getattr(x, "dtype", tf.float32)))
  x = tf.convert_to_tensor(x, dtype)
  if x.shape.rank != 2:
    raise ValueError(f"rbig needs data of shape [N, D], got {x.shape.as_list()}.")
  if batch_size is not None:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
      raise ValueError(f"rbig: batch_size must be a positive int or None, got {batch_size!r}.")
    x = x[:int(batch_size)]
  if kwargs.pop("data_init", True) is not True:
    raise ValueError("rbig fits from data: data_init cannot be turned off.")
  flow = gaussianization([int(x.shape[-1])], num_layers=num_layers,
                         num_components=num_components, rotation=rotation, data_init=True,
                         dtype=dtype, **kwargs)
  flow.inverse(x)  # initialises every layer, data side first
  return flow
