"""Planar and radial flows (Rezende & Mohamed 2015) with exact inverses.

Planar::

    f(z) = z + û h(wᵀz + b),    log|det J| = log|1 + h'(wᵀz + b) wᵀû|

with h = tanh or leaky-ReLU (slope 1 for a >= 0 and ``negative_slope`` = s >= 0 below). The
map is invertible iff ``1 + h'(a) wᵀû > 0`` for every a. Since h' takes its values in
``[0, k]`` with ``k = max(1, s)``, that holds iff ``wᵀû > lo`` with ``lo = -1/k`` (``lo = -1``
for tanh and for s <= 1: ``1 + s wᵀû >= 1 + wᵀû > 0`` when ``0 <= s <= 1``). The free
parameters u, w are mapped to

    û = u + (m(wᵀu) - wᵀu) w / ‖w‖²,    m(c) = lo + ε + softplus(c),

so that ``wᵀû = m(wᵀu) > lo`` for every value of u and w. ``ε`` is the machine epsilon of the
dtype (1.2e-7 float32, 2.2e-16 float64): it keeps the slope along w at least ``ε h'`` even
where softplus underflows to 0 (``wᵀu < -104`` in float32), so the map stays injective and its
log-det finite in floating point. Numerically ``1 + h' wᵀû`` is evaluated as
``(1 + h' lo) + h' (ε + softplus(wᵀu))`` (two non-negative terms, no cancellation), so the
log-det stays accurate right at the boundary ``wᵀû -> lo``. When ‖w‖² is below
``eps²`` of the dtype the layer is treated as the translation ``z + u h(b)`` (its w-direction
is undefined), so w = 0 gives no NaN.

Inverse: with ``t = wᵀy + b`` and ``x = wᵀz + b`` the scalar equation along w is

    x + wᵀû h(x) = t,

increasing in x. Leaky-ReLU: ``x = t / (1 + h'(t) wᵀû)`` in closed form. Tanh: with
``c = wᵀû = p - 1`` the map ``g(x) = x + c tanh(x)`` is odd, concave on x >= 0 for c >= 0 and
convex there for c < 0, and the root lies between t and the tighter of the bounds
``t - c sign(t)`` and ``t / p``. ``numerics.one_sided_newton`` starts from that bound, on the
side from which Newton's iterates approach the root monotonically (Fourier's condition), so
no step overshoots and no bisection is needed: about 1.5 (float32) / 2.2 (float64) steps per
point on random stacks, a handful of fused element-wise operations each. The residual is
evaluated as ``(x - tanh x) + p tanh x`` (``numerics.x_minus_tanh``), two terms of one sign, so
it keeps full relative precision at the invertibility boundary p -> 0 where ``x + c tanh x``
cancels. It stops at a relative position tolerance ``numerics.default_tolerance(dtype)`` (1e-6
float32, 1e-12 float64; the final implicit-gradient Newton step makes the error much smaller)
with at most ``max_iterations`` (100) iterations; with ``validate_args=True`` non-convergence
raises. Gradients come from implicit differentiation. Then ``z = y - û h(x)``.

Radial::

    f(z) = z + β h(α, r) (z - z0),   r = ‖z - z0‖,   h = 1 / (α + r),
    α = softplus(α̂),   β = -α + softplus(β̂)   (so β >= -α, the invertibility condition),
    log|det J| = (d - 1) log(1 + β h) + log(1 + β h + β h'(r) r)
               = (d - 1) log((r + q)/(α + r)) + log((r² + 2αr + αq) / (α + r)²),  q = α + β.

Inverse (closed form): ρ = ‖y - z0‖ = r (r + q)/(α + r) is increasing in r, so r is the
positive root of ``r² + (q - ρ) r - ρα = 0`` (evaluated without cancellation) and
``z = z0 + (y - z0) (α + r)/(r + q)``.

Both layers accept parameters with batch dimensions (a batch of independent flows):
``u, w`` and ``z0`` are ``batch + [d]``, ``b``, ``alpha_raw`` and ``beta_raw`` are ``batch``;
log-dets have the broadcast batch shape of the input and the parameters.

#### Examples

    layer = tff.bijectors.Planar(2, activation="tanh")
    flow = tfb.Chain([tff.bijectors.Planar(2, seed=k) for k in range(8)])
    dist = tff.flows.distribution(flow, [2])
    dist.log_prob(x)                     # numerical inverse, gradients by implicit differentiation
    batch = tff.bijectors.Planar(2, batch_shape=[3])   # three independent planar maps
    radial = tff.bijectors.Radial(2)

#### References

[1] Rezende, Mohamed. Variational Inference with Normalizing Flows. ICML 2015 (appendix A:
    the constraint on û and the radial flow).
[2] Fourier's condition for monotone Newton convergence: e.g. Ostrowski, Solution of
    Equations and Systems of Equations, 2nd ed., Academic Press 1966, ch. 7.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import numerics
from tfp_flows import core

tfb = tfp.bijectors

__all__ = ["Planar", "Radial"]

_ACTIVATIONS = ("tanh", "leaky_relu")


def _event_size(event_size, name):
  shape = core.as_event_shape(event_size, name="event_size")
  if len(shape) != 1:
    raise ValueError(f"{name}: event_size must be an int (vector events), got {event_size!r}.")
  return shape[0]


def _batch_shape(batch_shape, name):
  try:
    shape = tuple(int(s) for s in tf.TensorShape(batch_shape).as_list())
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name}: batch_shape must be a fully known shape, got {batch_shape!r}.") \
        from e
  if any(s <= 0 for s in shape):
    raise ValueError(f"{name}: batch_shape must have positive sizes, got {batch_shape!r}.")
  return shape


def _default_batch(params, name, what):
  """Static broadcast batch shape of the given parameters, for a default ``what``."""
  shape = core.broadcast_batch_shape(*params, name=name)
  if not shape.is_fully_defined():
    raise ValueError(f"{name}: the default {what} takes the batch shape of the other "
                     f"parameters, which is not known statically ({shape}); pass {what}.")
  return tuple(shape.as_list())


def _max_abs(d):
  return tf.reduce_max(tf.abs(d), axis=-1)


def _safe_norm(d):
  """‖d‖ over the last axis without overflow or underflow, with a finite gradient at 0.

  Computed as ``m ‖d / m‖`` with ``m = max |d_i|``, so a vector with entries near the largest
  float (whose squares overflow) or the smallest (whose squares underflow) keeps its exact
  norm; 0 where ``d = 0``.
  """
  m = _max_abs(d)
  positive = m > 0.
  safe_m = tf.where(positive, m, tf.ones_like(m))
  scaled = d / safe_m[..., tf.newaxis]
  return tf.where(positive, safe_m * tf.sqrt(tf.reduce_sum(tf.square(scaled), axis=-1)),
                  tf.zeros_like(m))


class Planar(core.DtypeChecked, tfb.Bijector):
  """Planar flow ``f(z) = z + û h(wᵀz + b)`` with an exact (numerical for tanh) inverse.

  Args:
    event_size: size d of the vector events.
    activation: ``"tanh"`` or ``"leaky_relu"``.
    negative_slope: slope s >= 0 of the leaky ReLU for negative arguments (ignored for tanh).
    u, w: optional initial values or ``tf.Variable``s of shape ``batch_shape + [d]`` (free
      parameters; û is derived from them). Default: w ~ N(0, 1/d) (seeded) and u chosen so
      that û = 0, the identity map.
    b: optional initial value or ``tf.Variable`` of shape ``batch_shape`` (default 0).
    batch_shape: batch shape of the default parameters (a batch of independent flows).
    tolerance: relative position tolerance of the tanh inverse
      (``numerics.default_tolerance(dtype)`` if None).
    max_iterations: iteration cap of the tanh inverse's root finder.
    validate_args: check inputs (shape, finiteness) and root-finder convergence.
    dtype: float32 (default) or float64.
    seed: seed of the default w.
    name: name of the bijector.
  """

  def __init__(self, event_size, activation="tanh", negative_slope=0.2, u=None, w=None,
               b=None, batch_shape=(), tolerance=None, max_iterations=100,
               validate_args=False, dtype=tf.float32, seed=None, name="planar"):
    parameters = dict(locals())
    with tf.name_scope(name) as scope:
      name = scope.rstrip("/")  # for messages; TFP strips it from the bijector's name too
      dtype = core.float_dtype(dtype)
      d = _event_size(event_size, name)
      if activation not in _ACTIVATIONS:
        raise ValueError(f"{name}: activation must be one of {_ACTIVATIONS}, got "
                         f"{activation!r}.")
      negative_slope = float(negative_slope)
      if not 0. <= negative_slope < np.inf:
        raise ValueError(f"{name}: negative_slope must be finite and >= 0 (a non-decreasing "
                         f"activation), got {negative_slope}.")
      if isinstance(max_iterations, bool) or int(max_iterations) != max_iterations or (
          max_iterations < 1):
        raise ValueError(f"{name}: max_iterations must be an int >= 1, got {max_iterations!r}.")
      if tolerance is not None and not 0. < float(tolerance) < 1.:
        raise ValueError(f"{name}: tolerance must be in (0, 1), got {tolerance}.")
      batch = _batch_shape(batch_shape, name)
      # wᵀû > lo guarantees 1 + h' wᵀû > 0 since 0 <= h' <= max(1, s).
      max_slope = 1. if activation == "tanh" else max(1., negative_slope)
      self._lo = -1. / max_slope

      def default_w():
        w0 = core.rng(seed).normal(0., 1. / np.sqrt(d), batch + (d,))
        return np.where(np.sum(w0**2, -1, keepdims=True) > 1e-8, w0, 1. / np.sqrt(d))

      w = core.as_parameter(w, dtype=dtype, event_shape=(d,), default=default_w, name=name,
                            what="w")

      def default_u():
        # m(c) = lo + ε + softplus(c) = 0 at c = softplus^-1(-lo - ε): û = 0 (the identity)
        # for u = c w / ‖w‖².
        c0 = np.log(np.expm1(-self._lo - np.finfo(dtype.as_numpy_dtype).eps))
        w0 = core.static_value(w, "w", name).astype(np.float64)
        w_sq = np.sum(w0**2, -1, keepdims=True)
        return c0 * w0 / np.maximum(w_sq, np.finfo(dtype.as_numpy_dtype).tiny)

      u = core.as_parameter(u, dtype=dtype, event_shape=(d,), default=default_u, name=name,
                            what="u")
      b = core.as_parameter(
          b, dtype=dtype, name=name, what="b",
          default=lambda: np.zeros(_default_batch([(u, 1), (w, 1)], name, "b")))
      core.broadcast_batch_shape((u, 1), (w, 1), (b, 0), name=name)
      # The parameters as used: a rebuilt bijector gets these very objects (the variables
      # created here by default included), so copies and slices are the same map.
      parameters.update(u=u, w=w, b=b)
      self._event_size = d
      self._activation = activation
      self._negative_slope = negative_slope
      self._u, self._w, self._b = u, w, b
      self._tolerance = tolerance
      self._max_iterations = int(max_iterations)
      super().__init__(forward_min_event_ndims=1, is_constant_jacobian=False,
                       validate_args=validate_args, dtype=dtype, parameters=parameters,
                       name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict(
        u=core.ParameterProperties(event_ndims=1),
        w=core.ParameterProperties(event_ndims=1),
        b=core.ParameterProperties(event_ndims=0))

  @property
  def u(self):
    return self._u

  @property
  def w(self):
    return self._w

  @property
  def b(self):
    return self._b

  @property
  def activation(self):
    return self._activation

  def constrained_parameters(self):
    """Returns ``(û, w_eff, b, wᵀû, p, ok)``.

    ``wᵀû = lo + p`` with ``p = ε + softplus(wᵀu) >= ε > 0``; ``ok`` is ``‖w‖ > eps``. Where
    ``ok`` is False, ``w_eff = 0``, ``û = u`` and ``wᵀû = 0``: the layer is a translation.
    ``û = u + (m(wᵀu) - wᵀu) w / ‖w‖²`` is evaluated as ``u + (lo + ε + softplus(-wᵀu))
    ŵ / (s ‖ŵ‖²)`` with ``ŵ = w / s``, ``s = max |w_i|``: no cancellation for large ``wᵀu``
    and no overflow of ``‖w‖²`` for huge w (amortised parameters can be anything).
    """
    u = tf.convert_to_tensor(self._u)
    w = tf.convert_to_tensor(self._w)
    dtype = w.dtype
    eps = tf.constant(np.finfo(dtype.as_numpy_dtype).eps, dtype)
    s = _max_abs(w)
    safe_s = tf.where(s > 0., s, tf.ones_like(s))
    w_unit = w / safe_s[..., tf.newaxis]  # largest entry ±1
    n2 = tf.reduce_sum(tf.square(w_unit), axis=-1)  # in [1, d] where s > 0
    ok = safe_s * tf.sqrt(n2) > eps
    w_eff = tf.where(ok[..., tf.newaxis], w, tf.zeros_like(w))
    wu = tf.reduce_sum(w_eff * u, axis=-1)
    p = tf.math.softplus(wu) + eps
    lo = tf.constant(self._lo, dtype)
    wtu_hat = tf.where(ok, lo + p, tf.zeros_like(p))
    # m(c) - c = lo + ε + softplus(c) - c = lo + ε + softplus(-c).
    coef = tf.where(ok, (lo + eps + tf.math.softplus(-wu)) / (safe_s * tf.where(ok, n2, tf.ones_like(n2))),
                    tf.zeros_like(n2))
    u_hat = u + coef[..., tf.newaxis] * tf.where(ok[..., tf.newaxis], w_unit,
                                                 tf.zeros_like(w_unit))
    return u_hat, w_eff, tf.convert_to_tensor(self._b), wtu_hat, p, ok

  def _h(self, a):
    if self._activation == "tanh":
      return tf.tanh(a)
    return tf.maximum(a, 0.) + self._negative_slope * tf.minimum(a, 0.)

  def _h_prime(self, a):
    if self._activation == "tanh":
      return 1. - tf.square(tf.tanh(a))
    return tf.where(a >= 0., tf.ones_like(a), self._negative_slope * tf.ones_like(a))

  def _log_slope(self, a, p, ok):
    """log(1 + h'(a) wᵀû) = log((1 + h' lo) + h' p), both terms >= 0."""
    if self._activation == "tanh":
      # 1 + h' lo = 1 - sech² = tanh² (lo = -1): exact for every a.
      first = tf.square(tf.tanh(a))
      hp = 1. - first
    else:
      hp = self._h_prime(a)
      first = 1. + hp * self._lo
    return tf.where(ok, tf.math.log(first + hp * p), tf.zeros_like(p))

  def _check(self, t, what):
    return core.check_input(t, (self._event_size,), name=self.name,
                             validate_args=self.validate_args, what=what)

  def _project(self, x, w, b):
    """wᵀx + b over the event axis."""
    if self._activation == "leaky_relu":
      # As a contraction (a dot), not multiply-and-reduce: with only cheap element-wise ops
      # between layers, XLA would otherwise fuse the whole chain x_1 ... x_k into every
      # layer's reduction and recompute it there, O(K^2) work for K stacked layers (a 32-layer
      # forward took 40 ms instead of 5 on CPU). tanh is costly enough that XLA does not
      # duplicate it, and the fused reduction is faster there.
      return tf.einsum("...i,...i->...", x, w) + b
    return tf.reduce_sum(w * x, axis=-1) + b

  def _forward(self, x):
    x = self._check(x, "x")
    u_hat, w, b, _, _, _ = self.constrained_parameters()
    return x + u_hat * self._h(self._project(x, w, b))[..., tf.newaxis]

  def _forward_log_det_jacobian(self, x):
    x = self._check(x, "x")
    _, w, b, _, p, ok = self.constrained_parameters()
    return self._log_slope(self._project(x, w, b), p, ok)

  @staticmethod
  def _tanh_start(t, p):
    """A Newton start for ``x + c tanh(x) = t`` (c = p - 1) from which Newton cannot overshoot.

    g(x) = x + c tanh(x) is odd, so the root has the sign of t; take s = |t| >= 0. On x >= 0, g
    is concave for c >= 0 and convex for c < 0, and both ``s - c`` (as |tanh| <= 1) and
    ``s / p`` (the tangent at 0, slope 1 + c = p) bound the root: from below when c >= 0
    (concave: Newton from the left moves monotonically right), from above when c < 0 (convex:
    Newton from the right moves monotonically left). The tighter bound is the start; t itself
    bounds the root on the other side (g(x) - x = c tanh(x) has the sign of c x).
    """
    s = tf.abs(t)
    tangent, offset = s / p, s + (1. - p)
    start = tf.where(p >= 1., tf.maximum(tangent, offset), tf.minimum(tangent, offset))
    return tf.where(t < 0., -start, start)

  def solve_inverse(self, y):
    """Inverts ``y``; returns ``(z, info)``.

    ``info`` is a ``numerics.RootResult`` of the scalar equation ``x + wᵀû h(x) = wᵀy + b``
    (for leaky-ReLU: the closed-form root, zero iterations, converged everywhere).
    """
    given = getattr(y, "dtype", None)  # numpy arrays and tensors keep their dtype (no casts)
    if given is not None and tf.as_dtype(given) != self.dtype:
      raise TypeError(f"{self.name}: y must have dtype {self.dtype.name}, got "
                      f"{tf.as_dtype(given).name}.")
    y = tf.convert_to_tensor(y, dtype=self.dtype, name="y")
    y = self._check(y, "y")
    u_hat, w, b, _, p, ok = self.constrained_parameters()
    # A fused reduction here: the inverse's layers contain divisions, which XLA does not
    # duplicate, so the O(K^2) fusion of the forward (see _project) cannot happen.
    t = tf.reduce_sum(w * y, axis=-1) + b
    if self._activation == "leaky_relu":
      hp = self._h_prime(t)
      slope = tf.where(ok, (1. + hp * self._lo) + hp * p, tf.ones_like(p))
      x = t / slope
      info = numerics.RootResult(x, tf.zeros_like(t, tf.int32), tf.ones_like(t, tf.bool),
                                 tf.zeros_like(t))
    else:
      # Where ok is False the layer is a translation: c = wᵀû = 0, i.e. p = 1 + c = 1.
      p = tf.broadcast_to(tf.where(ok, p, tf.ones_like(p)), tf.shape(t))
      start = self._tanh_start(t, p)

      def value_and_slope(s):
        # x + c tanh(x) with c = p - 1, written as (x - tanh x) + p tanh x: two terms of the
        # same sign, so the residual keeps its relative precision right at the boundary
        # (p -> 0), where x + c tanh(x) would cancel to ~ eps |x|. Likewise the slope
        # 1 + c sech² = tanh² + p sech².
        th = tf.tanh(s)
        sech2 = 1. - tf.square(th)
        return (numerics.x_minus_tanh(s) + p * th, tf.square(th) + p * sech2,
                2. * (1. - p) * th * sech2)

      info = numerics.one_sided_newton(
          value_and_slope, t, start, t, position_tolerance=self._tolerance,
          max_iterations=self._max_iterations, validate_args=self.validate_args,
          name=f"{self.name}_tanh_inverse")
      x = info.root
    return y - u_hat * self._h(x)[..., tf.newaxis], info

  def _inverse(self, y):
    return self.solve_inverse(y)[0]


class Radial(core.DtypeChecked, tfb.Bijector):
  """Radial flow ``f(z) = z + β (z - z0) / (α + ‖z - z0‖)`` with a closed-form inverse.

  Args:
    event_size: size d of the vector events.
    z0: optional initial value or ``tf.Variable`` of shape ``batch_shape + [d]``, the centre
      (default: N(0, 1) seeded).
    alpha_raw, beta_raw: optional initial values or ``tf.Variable``s of shape ``batch_shape``;
      α = softplus(alpha_raw) > 0 and β = -α + softplus(beta_raw) >= -α. Default: α = 1,
      β = 0 (the identity).
    batch_shape: batch shape of the default parameters (a batch of independent flows).
    validate_args: check inputs (shape, finiteness).
    dtype: float32 (default) or float64.
    seed: seed of the default z0.
    name: name of the bijector.
  """

  def __init__(self, event_size, z0=None, alpha_raw=None, beta_raw=None, batch_shape=(),
               validate_args=False, dtype=tf.float32, seed=None, name="radial"):
    parameters = dict(locals())
    with tf.name_scope(name) as scope:
      name = scope.rstrip("/")  # for messages; TFP strips it from the bijector's name too
      dtype = core.float_dtype(dtype)
      d = _event_size(event_size, name)
      batch = _batch_shape(batch_shape, name)
      z0 = core.as_parameter(z0, dtype=dtype, event_shape=(d,), name=name, what="z0",
                             default=lambda: core.rng(seed).normal(0., 1., batch + (d,)))
      one_raw = np.log(np.expm1(1.))  # softplus^-1(1): α = 1 and α + β = 1, i.e. β = 0.
      alpha_raw = core.as_parameter(
          alpha_raw, dtype=dtype, name=name, what="alpha_raw",
          default=lambda: np.full(_default_batch([(z0, 1)], name, "alpha_raw"), one_raw))
      beta_raw = core.as_parameter(
          beta_raw, dtype=dtype, name=name, what="beta_raw",
          default=lambda: np.full(_default_batch([(z0, 1), (alpha_raw, 0)], name, "beta_raw"),
                                  one_raw))
      core.broadcast_batch_shape((z0, 1), (alpha_raw, 0), (beta_raw, 0), name=name)
      parameters.update(z0=z0, alpha_raw=alpha_raw, beta_raw=beta_raw)
      self._event_size = d
      self._z0, self._alpha_raw, self._beta_raw = z0, alpha_raw, beta_raw
      super().__init__(forward_min_event_ndims=1, is_constant_jacobian=False,
                       validate_args=validate_args, dtype=dtype, parameters=parameters,
                       name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict(
        z0=core.ParameterProperties(event_ndims=1),
        alpha_raw=core.ParameterProperties(event_ndims=0),
        beta_raw=core.ParameterProperties(event_ndims=0))

  @property
  def z0(self):
    return self._z0

  @property
  def alpha_raw(self):
    return self._alpha_raw

  @property
  def beta_raw(self):
    return self._beta_raw

  def constrained_parameters(self):
    """Returns ``(z0, α, β, q)`` with α = softplus(alpha_raw) and q = α + β = softplus(beta_raw)."""
    alpha = tf.math.softplus(tf.convert_to_tensor(self._alpha_raw))
    q = tf.math.softplus(tf.convert_to_tensor(self._beta_raw))
    return tf.convert_to_tensor(self._z0), alpha, q - alpha, q

  def _check(self, t, what):
    return core.check_input(t, (self._event_size,), name=self.name,
                             validate_args=self.validate_args, what=what)

  def _forward(self, x):
    x = self._check(x, "x")
    z0, alpha, beta, _ = self.constrained_parameters()
    diff = x - z0
    r = _safe_norm(diff)
    return x + (beta / (alpha + r))[..., tf.newaxis] * diff

  def _log_det(self, r, alpha, q):
    d = self._event_size
    # (r² + 2αr + αq) / (α + r)² as a sum of bounded non-negative ratios: no overflow for
    # huge r, no cancellation at the boundary β -> -α (q -> 0).
    ar = alpha + r
    last = (r / ar) * ((r + 2. * alpha) / ar) + (alpha / ar) * (q / ar)
    return (d - 1) * (tf.math.log(r + q) - tf.math.log(ar)) + tf.math.log(last)

  def _forward_log_det_jacobian(self, x):
    x = self._check(x, "x")
    z0, alpha, _, q = self.constrained_parameters()
    return self._log_det(_safe_norm(x - z0), alpha, q)

  def _radius(self, y):
    """(z0, y - z0, r, α, q): r = ‖z - z0‖ solving ρ = r (r + q)/(α + r), ρ = ‖y - z0‖."""
    z0, alpha, _, q = self.constrained_parameters()
    diff = y - z0
    rho = _safe_norm(diff)
    # Positive root of r² + (q - ρ) r - ρα = 0, choosing the form without cancellation;
    # sqrt(k² + 4ρα) is evaluated scaled by m = max(|k|, ρ, α) > 0 (q > 0), so huge ρ
    # cannot overflow the squares.
    k = rho - q
    m = tf.maximum(tf.maximum(tf.abs(k), rho), alpha)
    sqrt_disc = m * tf.sqrt(tf.square(k / m) + 4. * (rho / m) * (alpha / m))
    denom = sqrt_disc - k
    r = tf.where(k >= 0., 0.5 * (k + sqrt_disc),
                 2. * rho * alpha / tf.where(denom > 0., denom, tf.ones_like(denom)))
    return z0, diff, r, alpha, q

  def _inverse(self, y):
    y = self._check(y, "y")
    z0, diff, r, alpha, q = self._radius(y)
    return z0 + ((alpha + r) / (r + q))[..., tf.newaxis] * diff

  def _inverse_log_det_jacobian(self, y):
    y = self._check(y, "y")
    _, _, r, alpha, q = self._radius(y)
    return -self._log_det(r, alpha, q)
