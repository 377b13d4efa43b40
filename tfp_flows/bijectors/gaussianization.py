"""Gaussianization flows: marginal Gaussianization layers and Householder rotations.

A Gaussianization flow (Meng et al. 2020) reads the flow from the data side. Each layer makes
every marginal Gaussian, then rotates so the next layer has new marginals to fix. The explicit
map is data -> latent, so in tfp_flows' convention (forward = base -> data) it is the
*inverse*, used by ``log_prob``; sampling (``forward``) solves monotone equations.

MarginalGaussianization, per dimension d (data ``x_d`` -> latent ``y_d``)::

    F_d(x) = sum_k w_dk sigmoid((x - mu_dk) / s_dk)       mixture of K logistics
    y_d    = Phi^-1(F_d(x_d))                             inverse normal CDF
    log|dy/dx| = sum_d [log f_d(x_d) - log phi(y_d)]      f_d = F_d', phi = N(0, 1) density

with anchors ``mu`` (free), bandwidths ``s = min_bandwidth + softplus(raw)`` and weights
``w = softmax(logits)``: every value of the variables gives a strictly increasing ``F_d``, so
the layer is invertible. ``log F``, ``log(1 - F)`` and ``log f`` are log-sum-exps of
log-sigmoids and ``Phi^-1`` is taken from the smaller of ``log F``, ``log(1 - F)``
(``numerics.ndtri_from_log_tails``), so a point 40 standard deviations out keeps a finite
log-prob and finite gradients: the tails of a logistic mixture are exponential, so there
``log F ~ -|x| / s`` and ``y ~ -sqrt(2 |x| / s)`` -- nothing saturates to 0, 1 or inf.

Sampling inverts ``logit F_d(x) = logit Phi(y_d)`` per element with
``numerics.monotone_root`` on the exact bracket ``[min_k, max_k] (mu_dk + s_dk logit Phi(y))``
(every component's own quantile; the mixture quantile lies between them), to the relative
position tolerance ``numerics.default_tolerance(dtype)`` (1e-6 float32, 1e-12 float64) within
``max_iterations`` (100); gradients through it are implicit (exact).

HouseholderRotation: ``y = Q x`` with ``Q = H(v_1) ... H(v_R)``,
``H(v) = I - 2 v v^T / |v|^2``. Orthogonal for every value of the vectors (a zero vector is
read as the identity; norms are computed after scaling by the largest entry, so tiny and huge
vectors are safe); log-det 0. With ``R = D`` reflections it reaches every orthogonal matrix
up to column signs, which is how a PCA basis is loaded into it (Householder QR).

Data-dependent initialisation (``data_init=True``): the first batch seen by ``inverse`` (the
data side, e.g. the first ``log_prob`` call) sets the anchors to ``K`` quantiles of each
dimension (at probabilities ``(k + 1/2) / K``), equal weights, and bandwidths
``s_dk = bandwidth_factor * max(spacing_dk, rule_d)``: ``spacing_dk`` is half the mean distance
of anchor k to its neighbours, the full distance for the two outermost anchors (wide kernels
where data is sparse; the outer ones carry the tails beyond the extreme quantiles, and
too-light tails compound over deep stacks), and ``rule_d`` Silverman's rule of thumb for d,
``h_d = 0.9 min(std_d, IQR_d / 1.349) max(N, K)^(-1/5)`` as a logistic scale
(``h sqrt(3) / pi``); with ``K = 1`` the single logistic gets the data's spread;
a ``HouseholderRotation(init="pca")`` loads the principal axes of its input. In a chain each
layer initialises on the previous layer's output, which is iterative Gaussianization (RBIG,
Laparra et al. 2011) with no gradient step. The "initialised" flag is a variable, saved and
restored with the weights.

#### Examples

    d = 2
    flow = tfb.Chain([tff.bijectors.MarginalGaussianization(d, num_components=16),
                      tff.bijectors.HouseholderRotation(d, init="pca"),
                      tff.bijectors.MarginalGaussianization(d, num_components=16)])
    dist = tff.flows.distribution(flow, [d])
    dist.log_prob(x_batch)          # first call initialises every layer from x_batch

#### References

[1] Meng, Song, Song, Ermon. Gaussianization Flows. AISTATS 2020.
[2] Laparra, Camps-Valls, Malo. Iterative Gaussianization: from ICA to random rotations.
    IEEE Trans. Neural Networks 2011.
[3] Chen, Gopinath. Gaussianization. NeurIPS 2000.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import numerics
from tfp_flows import core

tfb = tfp.bijectors

__all__ = ["MarginalGaussianization", "HouseholderRotation"]


def _event_size(event_size, name):
  shape = core.as_event_shape(event_size, name="event_size")
  if len(shape) != 1:
    raise ValueError(f"{name}: event_size must be an int D (events [D]), got {event_size!r}.")
  return shape[0]


def _positive_int(value, what, name):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name}: {what} must be a positive int, got {value!r}.")
  return int(value)


_INTERIOR = 0.5  # bandwidth / neighbour spacing for the interior anchors of data init


def _flat(t):
  return core.flatten_batch(tf.stop_gradient(t), 1)[0]


def _scaled_std(flat):
  """Per-column mean and standard deviation of ``[N, D]``, without overflow of the squares."""
  mean = tf.reduce_mean(flat, 0)
  dev = flat - mean
  m = tf.reduce_max(tf.abs(dev), 0)
  safe_m = tf.where(m > 0., m, tf.ones_like(m))
  return mean, safe_m * tf.sqrt(tf.reduce_mean(tf.square(dev / safe_m), 0))


def _variable_or_error(value, data_init, what, name):
  if data_init and not isinstance(value, tf.Variable):
    raise ValueError(f"{name}: data-dependent initialisation assigns {what}, which is not a "
                     "tf.Variable; pass a variable or turn the data-dependent init off.")
  return value


def _reinitialize(layer, x):
  """``layer.initialize(x)``: rerun the data-dependent init; the flag is restored on error."""
  before = bool(layer.initialized.numpy())
  layer.initialized.assign(False)
  try:
    layer._maybe_initialize(x)  # pylint: disable=protected-access
  except ValueError:
    layer.initialized.assign(before)
    raise
  return layer.initialized


def _silverman_logistic_scale(sigma, num_components, factor):
  """Logistic scale whose std is Silverman's bandwidth for ``num_components`` kernels."""
  h = 0.9 * sigma * num_components ** (-0.2) * factor
  return h * np.sqrt(3.) / np.pi


class MarginalGaussianization(core.DtypeChecked, tfb.Bijector):
  """Per-dimension logistic-mixture CDF followed by the inverse normal CDF (data -> latent).

  ``inverse`` (data -> latent) is explicit; ``forward`` (latent -> data, sampling) solves
  ``F_d(x) = Phi(y_d)`` per element (see the module docstring for the math and tolerances).

  Args:
    event_size: D, events are vectors ``[D]``.
    num_components: K logistics per dimension.
    data_init: initialise anchors and bandwidths from the first batch passed to ``inverse``
      (stored in variables with an "initialised" flag). Before that, and always when False,
      the anchors are the K quantiles of N(0, 1) with Silverman bandwidths (close to the
      identity map on standard-normal data).
    bandwidth_factor: multiplies the bandwidths of the data-dependent init.
    min_bandwidth: floor of every bandwidth, ``s = min_bandwidth + softplus(raw)``.
    position_tolerance, max_iterations: of the root finding in ``forward``; the tolerance
      defaults to ``numerics.default_tolerance(dtype)``.
    validate_args: check shapes/finiteness of inputs and, in ``forward``, convergence.
    dtype: float32 (default) or float64.
    name: name of the bijector.
  """

  def __init__(self, event_size, num_components=16, data_init=True, bandwidth_factor=1.,
               min_bandwidth=1e-4, position_tolerance=None, max_iterations=100,
               anchors=None, raw_bandwidths=None, logits=None, initialized=None,
               validate_args=False, dtype=tf.float32, name="marginal_gaussianization"):
    parameters = dict(locals())
    with tf.name_scope(name) as scope:
      name = scope.rstrip("/")  # for messages; TFP strips it from the bijector's name too
      dtype = core.float_dtype(dtype)
      d = _event_size(event_size, name)
      k = _positive_int(num_components, "num_components", name)
      max_iterations = _positive_int(max_iterations, "max_iterations", name)
      if not 0 < bandwidth_factor < np.inf or not 0 < min_bandwidth < np.inf:
        raise ValueError(f"{name}: bandwidth_factor and min_bandwidth must be finite and > 0, got "
                         f"{bandwidth_factor!r} and {min_bandwidth!r}.")
      if position_tolerance is not None and not 0 < position_tolerance < 1:
        raise ValueError(f"{name}: position_tolerance must be in (0, 1), got "
                         f"{position_tolerance!r}.")
      self._event_size = d
      self._num_components = k
      self._data_init = bool(data_init)
      self._bandwidth_factor = float(bandwidth_factor)
      self._min_bandwidth = float(min_bandwidth)
      self._position_tolerance = position_tolerance
      self._max_iterations = max_iterations
      # Default: K quantiles of N(0, 1) with Silverman bandwidths, equal weights.
      default_loc = lambda: np.tile(
          tf.math.ndtri(tf.constant((np.arange(k) + 0.5) / k, tf.float64)).numpy()[None],
          [d, 1])
      scale = _silverman_logistic_scale(1., k, 1.)
      raw = np.log(np.expm1(max(scale - self._min_bandwidth, 1e-8)))
      param = lambda value, default, what: _variable_or_error(core.as_parameter(
          value, dtype=dtype, event_shape=(d, k), default=default, name=name, what=what),
          self._data_init, what, name)
      self._loc = param(anchors, default_loc, "anchors")
      self._raw_bandwidth = param(raw_bandwidths, lambda: np.full([d, k], raw),
                                  "raw_bandwidths")
      self._logits = param(logits, lambda: np.zeros([d, k]), "logits")
      self._initialized = core.as_init_flag(initialized, done=not self._data_init, name=name)
      parameters.update(anchors=self._loc, raw_bandwidths=self._raw_bandwidth,
                        logits=self._logits, initialized=self._initialized)
      super().__init__(forward_min_event_ndims=1, is_constant_jacobian=False,
                       validate_args=validate_args, dtype=dtype, parameters=parameters,
                       name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    # [D, K] per event dimension: two event dims at one event dim of x, never batched.
    event_ndims = lambda self, x_event_ndims: x_event_ndims + 1
    return dict(anchors=core.ParameterProperties(event_ndims=event_ndims),
                raw_bandwidths=core.ParameterProperties(event_ndims=event_ndims),
                logits=core.ParameterProperties(event_ndims=event_ndims))

  @property
  def event_size(self):
    return self._event_size

  @property
  def num_components(self):
    return self._num_components

  @property
  def initialized(self):
    """The boolean variable recording that the data-dependent initialisation has run."""
    return core.init_state(self._initialized)

  def mixture(self):
    """``(anchors, bandwidths, log_weights)``, each ``[D, K]``, as used by the CDFs."""
    scale = self._min_bandwidth + tf.math.softplus(tf.convert_to_tensor(self._raw_bandwidth))
    return (tf.convert_to_tensor(self._loc), scale,
            tf.math.log_softmax(tf.convert_to_tensor(self._logits), -1))

  def _check(self, t, what):
    return core.check_input(t, [self._event_size], name=self.name,
                             validate_args=self.validate_args, what=what)

  # --- data-dependent initialisation --------------------------------------------------------

  def _init_values(self, flat):
    """``[(variable, value)]`` of the data-dependent init from events ``flat`` ``[N, D]``."""
    d, k = self._event_size, self._num_components
    n = tf.shape(flat)[0]
    ordered = tf.sort(tf.transpose(flat), axis=-1)  # [D, N]

    def quantiles(probs):
      pos = tf.round(tf.constant(probs, self.dtype) * tf.cast(n, self.dtype) - 0.5)
      idx = tf.clip_by_value(tf.cast(pos, tf.int32), 0, tf.maximum(n - 1, 0))
      return tf.gather(ordered, idx, axis=-1)

    anchors = quantiles((np.arange(k) + 0.5) / k)
    iqr = quantiles([0.75])[:, 0] - quantiles([0.25])[:, 0]
    _, std = _scaled_std(flat)
    sigma = tf.where(iqr > 0, tf.minimum(std, iqr / 1.349), std)
    sigma = tf.maximum(sigma, tf.constant(10. * self._min_bandwidth, self.dtype))
    # Per dimension: Silverman's rule for the n points the anchors summarise, a floor.
    rule = _silverman_logistic_scale(sigma, tf.cast(tf.maximum(n, k), self.dtype), 1.)
    # Per anchor: half the mean spacing to its neighbours; the full spacing for the two outer
    # anchors, whose outer halves model the tails beyond the extreme quantiles.
    if k > 1:
      padded = tf.concat([2. * anchors[:, :1] - anchors[:, 1:2], anchors,
                          2. * anchors[:, -1:] - anchors[:, -2:-1]], axis=-1)
      spacing = 0.5 * (padded[:, 2:] - padded[:, :-2])
      spacing = spacing * tf.constant([1.] + [_INTERIOR] * (k - 2) + [1.], self.dtype)
    else:  # one logistic per dimension: match the data's spread
      spacing = (sigma * np.sqrt(3.) / np.pi)[:, None]
    scale = self._bandwidth_factor * tf.maximum(spacing, rule[:, None])
    excess = tf.maximum(scale - self._min_bandwidth, 1e-3 * scale)
    return [(self._loc, anchors),
            (self._raw_bandwidth, tfp.math.softplus_inverse(excess)),
            (self._logits, tf.zeros([d, k], self.dtype))]

  def initialize(self, x):
    """(Re)initialises the variables from data ``x`` (shape ``[..., D]``) and sets the flag.

    The rules of the automatic initialisation apply (``ValueError`` for an empty, non-finite
    or too-small batch, nothing assigned, the flag as before). Eager only.
    """
    if not self._data_init:
      raise ValueError(f"{self.name} was built with data_init=False.")
    return _reinitialize(self, self._check(tf.convert_to_tensor(x, self.dtype), "x"))

  def _maybe_initialize(self, x):
    if not self._data_init:
      return []
    k = self._num_components
    return core.data_init(self._initialized, _flat(x), self._init_values, name=self.name,
                          event_ndims=1, min_events=2, recommended_events=10 * k)

  # --- the map --------------------------------------------------------------------------------

  def _log_tails(self, x):
    loc, scale, log_w = self.mixture()
    return numerics.logistic_mixture_log_cdf(x, loc, scale, log_w)

  def _inverse(self, y):
    y = self._check(y, "y")
    with tf.control_dependencies(self._maybe_initialize(y)):
      log_cdf, log_sf, _ = self._log_tails(y)
      return numerics.ndtri_from_log_tails(log_cdf, log_sf)

  def _inverse_log_det_jacobian(self, y):
    y = self._check(y, "y")
    with tf.control_dependencies(self._maybe_initialize(y)):
      log_cdf, log_sf, log_pdf = self._log_tails(y)
      z = numerics.ndtri_from_log_tails(log_cdf, log_sf)
      return tf.reduce_sum(log_pdf - numerics.log_normal_pdf(z), axis=-1)

  def _forward(self, x):
    x = self._check(x, "x")
    loc, scale, _ = self.mixture()
    # Solve logit F_d(u) = logit Phi(x_d): resolves both tails, unlike F itself.
    target = numerics.log_ndtr(x) - numerics.log_ndtr(-x)
    component_quantiles = loc + scale * target[..., None]
    low = tf.reduce_min(component_quantiles, axis=-1)
    high = tf.reduce_max(component_quantiles, axis=-1)

    def logit_cdf(u):
      log_cdf, log_sf, _ = self._log_tails(u)
      return log_cdf - log_sf

    result = numerics.monotone_root(
        logit_cdf, target, low, high, position_tolerance=self._position_tolerance,
        max_iterations=self._max_iterations, validate_args=self.validate_args,
        name=f"{self.name}_forward")
    return result.root


def _unit_rows(v):
  """Rows of ``v`` scaled to unit norm; all-zero rows stay zero. Safe at any magnitude."""
  m = tf.reduce_max(tf.abs(v), axis=-1, keepdims=True)
  nonzero = m > 0
  w = v / tf.where(nonzero, m, tf.ones_like(m))  # largest entry +-1: no under/overflow
  norm = tf.sqrt(tf.reduce_sum(tf.square(w), -1, keepdims=True)
                 + tf.cast(~nonzero, v.dtype))
  return tf.where(nonzero, w / norm, tf.zeros_like(w))


def householder_product(vectors):
  """``Q = H(v_1) ... H(v_R)`` for the rows ``v_r`` of ``vectors`` ``[R, D]`` (zero rows: I)."""
  u = _unit_rows(vectors)
  d = vectors.shape[-1]
  q = tf.eye(d, dtype=vectors.dtype)
  for r in range(vectors.shape[0]):
    ur = u[r]
    q = q - 2. * tf.linalg.matvec(q, ur)[:, None] * ur[None, :]
  return q


def householder_vectors(matrix):
  """Householder vectors ``V`` ``[D, D]`` with ``householder_product(V) = matrix @ S``.

  ``matrix`` is orthogonal and ``S`` a diagonal of signs (Householder QR; the triangular
  factor of an orthogonal matrix is such an ``S``), so the product has the same columns up to
  sign. Works in graph mode and under XLA (the loop over columns is unrolled).
  """
  a = tf.convert_to_tensor(matrix)
  d = a.shape[-1]
  rows = tf.range(d)
  vs = []
  for k in range(d):
    col = tf.where(rows >= k, a[:, k], tf.zeros_like(a[:, k]))
    alpha = tf.norm(col)
    sign = tf.where(a[k, k] >= 0, tf.ones([], a.dtype), -tf.ones([], a.dtype))
    v = col + sign * alpha * tf.one_hot(k, d, dtype=a.dtype)
    v = v / tf.norm(v)  # |v| >= alpha > 0 for an orthogonal matrix
    a = a - 2. * v[:, None] * tf.linalg.matvec(a, v, transpose_a=True)[None, :]
    vs.append(v)
  return tf.stack(vs)


class HouseholderRotation(core.DtypeChecked, tfb.Bijector):
  """Orthogonal ``y = Q x``, ``Q = H(v_1) ... H(v_R)``, log-det 0 (see module docstring).

  Args:
    event_size: D, events are vectors ``[D]``.
    num_reflections: R (default D, which reaches every rotation up to column signs).
    init: ``"random"`` (Gaussian vectors, seeded: a random orthogonal matrix) or ``"pca"``
      (data-dependent: the first batch passed to ``inverse`` sets ``Q`` to its principal axes,
      largest variance first, so ``inverse`` projects onto them; needs R = D).
    trainable: False makes a fixed rotation (random orthogonal or PCA), not trained but still
      saved with the weights.
    validate_args, dtype, name: as everywhere.
    seed: seed of the random vectors.
  """

  def __init__(self, event_size, num_reflections=None, init="random", trainable=True,
               vectors=None, initialized=None, validate_args=False, dtype=tf.float32,
               seed=None, name="householder_rotation"):
    parameters = dict(locals())
    with tf.name_scope(name) as scope:
      name = scope.rstrip("/")  # for messages; TFP strips it from the bijector's name too
      dtype = core.float_dtype(dtype)
      d = _event_size(event_size, name)
      r = d if num_reflections is None else _positive_int(num_reflections, "num_reflections",
                                                          name)
      if init not in ("random", "pca"):
        raise ValueError(f"{name}: init must be 'random' or 'pca', got {init!r}.")
      if init == "pca" and r != d:
        raise ValueError(f"{name}: init='pca' needs num_reflections == event_size ({d}), "
                         f"got {r}.")
      self._event_size = d
      self._num_reflections = r
      self._init = init
      vectors = core.as_parameter(
          vectors, dtype=dtype, event_shape=(r, d), name=name, what="vectors",
          default=lambda: core.rng(seed).standard_normal((r, d)), trainable=bool(trainable))
      if vectors.shape.rank != 2:
        raise ValueError(f"{name}: vectors must have shape [{r}, {d}], got "
                         f"{vectors.shape.as_list()}.")
      self._vectors = _variable_or_error(vectors, init == "pca", "vectors", name)
      self._initialized = core.as_init_flag(initialized, done=init != "pca", name=name)
      parameters.update(vectors=self._vectors, initialized=self._initialized)
      super().__init__(forward_min_event_ndims=1, is_constant_jacobian=True,
                       validate_args=validate_args, dtype=dtype, parameters=parameters,
                       name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    # [R, D] reflection vectors: two event dims at one event dim of x, never batched.
    return dict(vectors=core.ParameterProperties(
        event_ndims=lambda self, x_event_ndims: x_event_ndims + 1))

  @property
  def vectors(self):
    return self._vectors

  @property
  def initialized(self):
    """The boolean variable recording that the PCA initialisation has run (always True for
    ``init="random"``)."""
    return core.init_state(self._initialized)

  def matrix(self):
    """The orthogonal matrix ``Q`` ``[D, D]`` of ``forward``."""
    return householder_product(tf.convert_to_tensor(self._vectors))

  def _pca_values(self, flat):
    centred = flat - tf.reduce_mean(flat, 0)
    # Scaled by the largest deviation: the principal axes are unchanged, and no square
    # overflows (or underflows) whatever the data's magnitude.
    m = tf.reduce_max(tf.abs(centred))
    centred = centred / tf.where(m > 0., m, tf.ones_like(m))
    cov = tf.matmul(centred, centred, transpose_a=True) / tf.cast(tf.shape(flat)[0], self.dtype)
    # A batch whose mean overflows gives a non-finite covariance: decompose the identity instead
    # (no kernel error) and hand core.data_init a non-finite value, which it reports.
    finite = tf.reduce_all(tf.math.is_finite(cov))
    eye = tf.eye(self._event_size, dtype=self.dtype)
    _, vecs = tf.linalg.eigh(tf.where(finite, cov, eye))
    axes = tf.reverse(vecs, axis=[-1])  # columns: principal axes, largest variance first
    vectors = householder_vectors(axes)
    nan = tf.fill(tf.shape(vectors), tf.constant(np.nan, self.dtype))
    return [(self._vectors, tf.where(finite, vectors, nan))]

  def _maybe_initialize(self, y):
    if self._init != "pca":
      return []
    return core.data_init(self._initialized, _flat(y), self._pca_values, name=self.name,
                          event_ndims=1, min_events=2, recommended_events=10 * self._event_size)

  def initialize(self, y):
    """Loads the principal axes of data ``y`` (``[..., D]``) and sets the flag.

    The rules of the automatic initialisation apply (``ValueError`` for an empty, non-finite
    or too-small batch, nothing assigned, the flag as before). Eager only.
    """
    if self._init != "pca":
      raise ValueError(f"{self.name} was built with init={self._init!r}, not 'pca'.")
    return _reinitialize(self, self._check(tf.convert_to_tensor(y, self.dtype), "y"))

  def _check(self, t, what):
    return core.check_input(t, [self._event_size], name=self.name,
                             validate_args=self.validate_args, what=what)

  def _forward(self, x):
    x = self._check(x, "x")
    return tf.linalg.matvec(self.matrix(), x)

  def _inverse(self, y):
    y = self._check(y, "y")
    with tf.control_dependencies(self._maybe_initialize(y)):
      return tf.linalg.matvec(self.matrix(), y, transpose_a=True)

  def _forward_log_det_jacobian(self, x):
    return tf.zeros([], self.dtype)

  def _inverse_log_det_jacobian(self, y):
    return tf.zeros([], self.dtype)
