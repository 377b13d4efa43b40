"""Element-wise transformers: the monotone scalar maps that couplings and MAFs apply.

A coupling layer or a masked autoregressive flow moves every transformed entry ``x_i`` by a
strictly increasing scalar map ``y_i = f(x_i; theta_i)`` whose parameters ``theta_i`` come from
a network (the conditioner) looking at other entries. The network and the bookkeeping of who
conditions whom live in ``coupling.py`` / ``autoregressive.py``; this module holds only the maps:

    Shift (NICE):               y = x + t                                   log f' = 0
    Affine (RealNVP, MAF):      y = x exp(s) + t,  s = b tanh(s_raw / b)    log f' = s
                                (or s = s_raw / (1 + |s_raw| / b); either direction)
    RationalQuadraticSpline:    monotone rational-quadratic spline on [-B, B] with K bins,
    (NSF)                       identity outside (linear tails)          log f' in closed form

Each transformer has ``num_params`` scalar parameters per element. Networks output them as
one tensor whose last axis holds ``num_params`` blocks of ``n`` entries (parameter-major:
block ``j`` is parameter ``j`` of every element), reshaped here to ``[..., num_params, n]``.
With zero parameters every transformer is the identity, so a network whose output layer starts
at zero starts the flow at the identity map.

``forward(x, params)`` and ``inverse(y, params)`` return the output and the element-wise
``log |d output / d input|`` together, so a layer evaluates its network once for both.

Rational-quadratic spline (Durkan et al. 2019). Knots ``(x_k, y_k)``, ``k = 0..K``, from
``x_0 = y_0 = -B`` to ``x_K = y_K = B``; bin widths and heights are a softmax of raw
parameters (each at least ``min_bin_size * 2B``); interior knot derivatives
``d_k = min_derivative + softplus(u_k + c)`` (``c`` makes ``u = 0`` give ``d = 1``), and
``d_0 = d_K = 1`` so the spline joins the identity tails with a continuous derivative. In bin
``k``, with ``w, h`` its width and height, ``s = h / w`` and ``z = (x - x_k) / w``::

    y = y_k + h (s z^2 + d_k z (1 - z)) / (s + (d_k + d_{k+1} - 2 s) z (1 - z))
    dy/dx = s^2 (d_{k+1} z^2 + 2 s z (1 - z) + d_k (1 - z)^2)
              / (s + (d_k + d_{k+1} - 2 s) z (1 - z))^2

The inverse is exact: ``z`` is the root in ``[0, 1]`` of a quadratic, taken in the form
``z = 2c / (-b - sqrt(b^2 - 4ac))`` that does not cancel. By default (``direction="inverse"``)
the map above is the transformer's ``inverse``: the density direction (data -> latent, what
``log_prob`` and training evaluate) is the rational-quadratic spline and ``forward``
(sampling) is its quadratic-root inverse, as in Durkan et al.'s and zuko's flows;
``direction="forward"`` swaps them (``tfb.RationalQuadraticSpline``'s orientation).

Bins are found by comparing with the ``K - 1`` interior knots and selected with one-hot sums
(no gathers); the gradient is written out (``tf.custom_gradient``) so that only two passes
touch the ``[..., K, n]`` tensors. First-order gradients only (no gradients of gradients
through the spline).

#### Examples

    t = tff.bijectors.transformers.RationalQuadraticSpline(num_bins=8, bound=4.)
    params = tf.random.normal([5, t.num_params, 3])   # 5 points, 3 elements each
    z, log_det = t.inverse(x, params)                  # x: [5, 3]; the spline itself
    x_back, _ = t.forward(z, params)                   # its quadratic-root inverse

#### References

[1] Durkan, Bekasov, Murray, Papamakarios. Neural Spline Flows. NeurIPS 2019.
[2] Gregory, Delbourgo. Piecewise rational quadratic interpolation to monotonic data.
    IMA Journal of Numerical Analysis, 1982.
[3] Dinh, Sohl-Dickstein, Bengio. Density estimation using Real NVP. ICLR 2017.
"""

import numpy as np
import tensorflow as tf

__all__ = ["Transformer", "Shift", "Affine", "RationalQuadraticSpline", "get"]


class Transformer:
  """A strictly increasing element-wise map ``y = f(x; theta)``, ``num_params`` per element.

  Subclasses implement ``forward`` and ``inverse``, each returning ``(output, log_det)`` with
  ``log_det`` the element-wise log-derivative of that direction, shaped like ``x``.
  """

  num_params = None
  is_constant_jacobian = False
  name = None

  def forward(self, x, params):
    raise NotImplementedError

  def inverse(self, y, params):
    raise NotImplementedError

  def config(self):
    """Constructor arguments (equal configs give equal maps)."""
    return {}

  def __eq__(self, other):
    return type(self) is type(other) and self.config() == other.config()

  def __hash__(self):
    return hash((type(self).__name__, tuple(sorted(self.config().items()))))

  def __repr__(self):
    args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
    return f"{type(self).__name__}({args})"


class Shift(Transformer):
  """``y = x + t`` (NICE's additive coupling): one parameter, log-derivative 0."""

  num_params = 1
  is_constant_jacobian = True
  name = "shift"

  def forward(self, x, params):
    return x + params[..., 0, :], tf.zeros_like(x)

  def inverse(self, y, params):
    return y - params[..., 0, :], tf.zeros_like(y)


class Affine(Transformer):
  """Affine map ``x exp(s) + t`` with a soft-clamped log-scale ``s`` (parameters ``t, s_raw``).

  Args:
    log_scale_bound: ``b``: every scale lies in ``(e^-b, e^b)`` and ``s = s_raw`` near zero;
      ``None`` leaves ``s = s_raw`` unbounded (the original RealNVP map).
    clamp: how ``s_raw`` is bounded: ``"tanh"`` (default), ``s = b tanh(s_raw / b)``, or
      ``"softsign"``, ``s = s_raw / (1 + |s_raw| / b)`` (zuko's clamp, with
      ``b = log(1e3)``); softsign approaches the bound slowly, so large scales keep a gradient.
    direction: which direction is ``x exp(s) + t``: ``"forward"`` (default: sampling,
      base -> data, is the affine map and the density direction its inverse
      ``(y - t) exp(-s)``, as in TFP's RealNVP and MAF) or ``"inverse"`` (the density
      direction data -> latent is ``x exp(s) + t``, as in zuko). The two are different
      families of flows once ``s`` and ``t`` are functions of other entries.
  """

  num_params = 2
  name = "affine"

  def __init__(self, log_scale_bound=3., clamp="tanh", direction="forward"):
    if log_scale_bound is not None:
      log_scale_bound = float(log_scale_bound)
      if not log_scale_bound > 0 or not np.isfinite(log_scale_bound):
        raise ValueError(f"log_scale_bound must be positive and finite, or None; got "
                         f"{log_scale_bound}.")
    if clamp not in ("tanh", "softsign"):
      raise ValueError(f"clamp must be 'tanh' or 'softsign', got {clamp!r}.")
    if clamp != "tanh" and log_scale_bound is None:
      raise ValueError(f"clamp={clamp!r} needs a log_scale_bound (None leaves s unbounded, "
                       "with no clamp).")
    if direction not in ("forward", "inverse"):
      raise ValueError(f"direction must be 'forward' or 'inverse', got {direction!r}.")
    self.log_scale_bound, self.clamp, self.direction = log_scale_bound, clamp, direction

  def config(self):
    return {"log_scale_bound": self.log_scale_bound, "clamp": self.clamp,
            "direction": self.direction}

  def shift_and_log_scale(self, params):
    """``t`` and the clamped ``s`` of ``x exp(s) + t``."""
    shift, raw = params[..., 0, :], params[..., 1, :]
    b = self.log_scale_bound
    if b is None:
      return shift, raw
    if self.clamp == "tanh":
      return shift, b * tf.math.tanh(raw / b)
    return shift, raw / (1. + tf.abs(raw) * (1. / b))

  def _map(self, x, params):
    shift, log_scale = self.shift_and_log_scale(params)
    return x * tf.exp(log_scale) + shift, log_scale

  def _unmap(self, y, params):
    shift, log_scale = self.shift_and_log_scale(params)
    return (y - shift) * tf.exp(-log_scale), -log_scale

  def forward(self, x, params):
    return self._map(x, params) if self.direction == "forward" else self._unmap(x, params)

  def inverse(self, y, params):
    return self._unmap(y, params) if self.direction == "forward" else self._map(y, params)


class RationalQuadraticSpline(Transformer):
  """Monotone rational-quadratic spline on ``[-bound, bound]``, identity outside.

  Args:
    num_bins: number of bins ``K`` (>= 2); ``3K - 1`` parameters per element (``K`` widths,
      ``K`` heights, ``K - 1`` interior derivatives).
    bound: half-width ``B`` of the interval the spline acts on.
    min_bin_size: smallest bin width and height, as a fraction of ``2B``.
    min_derivative: smallest knot derivative.
    direction: which direction is the rational-quadratic map itself: ``"inverse"`` (default:
      ``inverse``, the density direction data -> latent, is the spline and ``forward`` its
      quadratic-root inverse, as in Durkan et al.'s and zuko's flows) or ``"forward"``
      (``forward`` is the spline, as in ``tfb.RationalQuadraticSpline``). The two give
      different families of flows; "inverse" trained to 0.5-0.7x the KL on three of the
      four 2-D densities of benchmarks/README.md (the same on the fourth) and the same
      bits/dim on 8x8 digits (early-stopped).
  """

  name = "spline"

  def __init__(self, num_bins=8, bound=5., min_bin_size=1e-3, min_derivative=1e-3,
               direction="inverse"):
    if direction not in ("inverse", "forward"):
      raise ValueError(f"direction must be 'inverse' or 'forward', got {direction!r}.")
    self.direction = direction
    num_bins, bound = int(num_bins), float(bound)
    min_bin_size, min_derivative = float(min_bin_size), float(min_derivative)
    if num_bins < 2:
      raise ValueError(f"num_bins must be >= 2, got {num_bins}.")
    if not (bound > 0 and np.isfinite(bound)):
      raise ValueError(f"bound must be positive and finite, got {bound}.")
    if not 0 <= min_bin_size * num_bins < 1:
      raise ValueError(f"min_bin_size must be in [0, 1/num_bins), got {min_bin_size}.")
    if not 0 <= min_derivative < 1:
      raise ValueError(f"min_derivative must be in [0, 1), got {min_derivative}.")
    self.num_bins, self.bound = num_bins, bound
    self.min_bin_size, self.min_derivative = min_bin_size, min_derivative
    self.num_params = 3 * num_bins - 1
    # softplus(0 + c) = 1 - min_derivative: zero parameters give unit derivatives (identity).
    self._derivative_offset = float(np.log(np.expm1(1. - min_derivative)))

  def config(self):
    return {"num_bins": self.num_bins, "bound": self.bound, "min_bin_size": self.min_bin_size,
            "min_derivative": self.min_derivative, "direction": self.direction}

  def _knots(self, params):
    """Knot positions and derivatives, each ``[..., K + 1, n]``."""
    k, b = self.num_bins, self.bound
    dtype = params.dtype

    def sizes(raw):
      # Softmax over the bin axis, written out (tf.nn.softmax rejects inputs of rank > 5).
      e = tf.exp(raw - tf.stop_gradient(tf.reduce_max(raw, axis=-2, keepdims=True)))
      softmax = e / tf.reduce_sum(e, axis=-2, keepdims=True)
      return 2. * b * (self.min_bin_size + (1. - k * self.min_bin_size) * softmax)

    widths, heights = sizes(params[..., :k, :]), sizes(params[..., k:2 * k, :])
    inner = self.min_derivative + tf.nn.softplus(params[..., 2 * k:, :] + self._derivative_offset)
    edge = tf.ones_like(inner[..., :1, :])
    derivatives = tf.concat([edge, inner, edge], axis=-2)
    lower = tf.fill(tf.shape(widths[..., :1, :]), tf.constant(-b, dtype))
    xs = tf.concat([lower, -b + tf.cumsum(widths[..., :-1, :], axis=-2)], axis=-2)
    ys = tf.concat([lower, -b + tf.cumsum(heights[..., :-1, :], axis=-2)], axis=-2)
    return xs, widths, ys, heights, derivatives

  def forward(self, x, params):
    return self._spline(x, params, inverse=self.direction == "inverse")

  def inverse(self, y, params):
    return self._spline(y, params, inverse=self.direction == "forward")

  # The map is evaluated in three steps so that only two passes touch the [..., K, n] tensors:
  # (1) exponentials of the raw sizes; (2) the bin of every input and the six bin quantities
  # it needs (unnormalised cumulative sizes, sizes, raw derivatives), by one-hot sums; (3) the
  # rational-quadratic formulas on [..., n] tensors. The gradient is written by hand the same
  # way (autodiff of step 3 on [..., n] tensors, then one pass back to [..., K, n]): XLA on CPU
  # runs every [..., K, n] pass as a separate loop, and plain autodiff of steps 1-2 took
  # about twice as long (benchmarks/README.md, "spline speed"). Step 3 multiplies by
  # reciprocals where it can: XLA's CPU fusion keeps each divide with several users as its own
  # loop (D = 2: 367 -> 312 loops in a 5-layer training step). It keeps the one divide on the
  # input's path, z = (x - x_k) / w, on purpose: without it the gradients of splines applied
  # one after another fused into loops that recomputed every later layer (8 chained splines
  # at D = 64 took 120 ms instead of 42 ms).

  def _exponentials(self, params):
    """exp of the raw widths and heights (shifted by their max), raw derivatives."""
    k = self.num_bins
    raw_w, raw_h = params[..., :k, :], params[..., k:2 * k, :]
    ew = tf.exp(raw_w - tf.stop_gradient(tf.reduce_max(raw_w, axis=-2, keepdims=True)))
    eh = tf.exp(raw_h - tf.stop_gradient(tf.reduce_max(raw_h, axis=-2, keepdims=True)))
    return ew, eh, params[..., 2 * k:, :]

  def _select(self, v, ew, eh, u, inverse):
    """Bin index ``k`` (as a float) of ``v`` and the bin's quantities, each ``[..., n]``."""
    nb, b = self.num_bins, self.bound
    kk = tf.range(nb, dtype=v.dtype)[:, None]
    cw, ch = _exclusive_cumsum(ew, nb), _exclusive_cumsum(eh, nb)
    tw = cw[..., -1, :] + ew[..., -1, :]
    th = ch[..., -1, :] + eh[..., -1, :]
    cum, total = (ch, th) if inverse else (cw, tw)
    # knot_j <= v  <=>  (t - j m) T >= (1 - K m) c_j with t = (v + B) / 2B (no division).
    t = (tf.clip_by_value(v, -b, b) + b) / (2. * b)
    lhs = (t[..., None, :] - kk[1:] * self.min_bin_size) * total[..., None, :]
    above = tf.cast(lhs >= (1. - nb * self.min_bin_size) * cum[..., 1:, :], v.dtype)
    index = tf.reduce_sum(above, axis=-2)
    onehot = tf.cast(tf.equal(index[..., None, :], kk), v.dtype)
    zero = tf.zeros_like(u[..., :1, :])
    u_left = tf.concat([zero, u], axis=-2)    # row j: raw derivative at knot j (j >= 1)
    u_right = tf.concat([u, zero], axis=-2)   # row j: raw derivative at knot j + 1 (j < K-1)
    stacked = tf.stack([cw, ew, ch, eh, u_left, u_right], axis=-3)
    picked = tf.reduce_sum(onehot[..., None, :, :] * stacked, axis=-2)
    return [index, tw, th] + [picked[..., i, :] for i in range(6)]

  def _formulas(self, v, index, tw, th, cw, ew, ch, eh, u_left, u_right, inverse):
    """The spline and its log-derivative from the bin quantities (all ``[..., n]``)."""
    nb, b, m = self.num_bins, self.bound, self.min_bin_size
    span = 2. * b * (1. - nb * m)
    per_w, per_h = span / tw, span / th
    base = -b + 2. * b * m * index
    x0 = base + cw * per_w
    w = 2. * b * m + ew * per_w
    y0 = base + ch * per_h
    h = 2. * b * m + eh * per_h
    one = tf.ones_like(v)
    d0 = tf.where(index > 0, self.min_derivative + tf.nn.softplus(
        u_left + self._derivative_offset), one)
    d1 = tf.where(index < nb - 1, self.min_derivative + tf.nn.softplus(
        u_right + self._derivative_offset), one)
    inside = tf.abs(v) <= b
    vc = tf.clip_by_value(v, -b, b)  # finite everywhere, so where() has finite gradients
    s = h / w
    slope_sum = d0 + d1 - 2. * s
    if inverse:
      dy = vc - y0
      qa = h * (s - d0) + dy * slope_sum
      qb = h * d0 - dy * slope_sum
      qc = -s * dy
      disc = tf.maximum(qb * qb - 4. * qa * qc, 0.)
      # den < 0 inside the bin; rounding can make it 0 where an input lies above a bin whose
      # height is below the rounding of its knot: z = 1 there, and the untaken branch divides
      # by -1 so that its gradient stays finite (no 0 * inf).
      den = -qb - tf.sqrt(disc)
      ok = den < 0.
      z = tf.where(ok, 2. * qc / tf.where(ok, den, -one), one)
      z = tf.clip_by_value(z, 0., 1.)
      out = x0 + z * w
    else:
      z = tf.clip_by_value((vc - x0) / w, 0., 1.)  # a divide: see the note above
    zz = z * (1. - z)
    per_denom = 1. / (s + slope_sum * zz)
    if not inverse:
      out = y0 + h * (s * z * z + d0 * zz) * per_denom
    log_det = (2. * tf.math.log(s * per_denom)
               + tf.math.log(d1 * z * z + 2. * s * zz + d0 * (1. - z) ** 2))
    if inverse:
      log_det = -log_det
    return tf.where(inside, out, v), tf.where(inside, log_det, tf.zeros_like(log_det))

  def _spline(self, v, params, inverse):
    nb = self.num_bins

    @tf.custom_gradient
    def spline(v, params):
      ew, eh, u = self._exponentials(params)
      picked = self._select(v, ew, eh, u, inverse)
      out, log_det = self._formulas(v, *picked, inverse=inverse)

      def grad(g_out, g_log_det):
        g_out = tf.zeros_like(v) if g_out is None else g_out
        g_log_det = tf.zeros_like(v) if g_log_det is None else g_log_det
        index, rest = picked[0], picked[1:]
        with tf.GradientTape() as tape:
          tape.watch([v] + rest)
          o, l = self._formulas(v, index, *rest, inverse=inverse)
        grads = tape.gradient([o, l], [v] + rest, output_gradients=[g_out, g_log_det])
        g_v, g_tw, g_th, g_cw, g_ew, g_ch, g_eh, g_ul, g_ur = [
            tf.zeros_like(v) if g is None else g for g in grads]
        # Back to [..., K, n]: T = sum_j e_j, c_k = sum_{j<k} e_j, e_k; then through exp
        # (the max shift cancels: every quantity depends on ratios of the e_j).
        kk = tf.range(nb, dtype=v.dtype)[:, None]
        at = index[..., None, :]
        equal = tf.cast(tf.equal(kk, at), v.dtype)
        below = tf.cast(kk < at, v.dtype)

        def back(g_total, g_cum, g_size, e):
          return (g_total[..., None, :] + g_cum[..., None, :] * below
                  + g_size[..., None, :] * equal) * e

        inner = kk[1:] - 1.  # raw derivative j belongs to knot j + 1
        g_u = (g_ul[..., None, :] * tf.cast(tf.equal(inner + 1., at), v.dtype)
               + g_ur[..., None, :] * tf.cast(tf.equal(inner, at), v.dtype))
        g_params = tf.concat([back(g_tw, g_cw, g_ew, ew), back(g_th, g_ch, g_eh, eh), g_u],
                             axis=-2)
        return g_v, g_params

      return (out, log_det), grad

    return spline(v, params)


def _exclusive_cumsum(e, length):
  """``c_k = sum_{j < k} e_j`` along axis -2 (of size ``length``, a Python int), as a chain of
  adds.

  XLA on CPU lowers ``tf.cumsum`` to a reduce-window pass of its own (about 0.2 ms per call
  on [1024, 8, 32]); the chain fuses into its consumers.
  """
  parts = [tf.zeros_like(e[..., :1, :])]
  for j in range(1, length):
    parts.append(parts[-1] + e[..., j - 1:j, :])
  return tf.concat(parts, axis=-2)


_BY_NAME = {"shift": Shift, "additive": Shift, "affine": Affine,
            "spline": RationalQuadraticSpline}


def get(transformer):
  """A ``Transformer`` from an instance or a name ('additive'/'shift', 'affine', 'spline')."""
  if isinstance(transformer, Transformer):
    return transformer
  if isinstance(transformer, str) and transformer in _BY_NAME:
    return _BY_NAME[transformer]()
  raise ValueError(f"transformer must be a Transformer or one of {sorted(_BY_NAME)}, got "
                   f"{transformer!r}.")
