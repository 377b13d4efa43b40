"""Invertible masked convolutions on ``[H, W, C]`` images (MintNet, emerging convolutions).

Order the entries of an image pixel by pixel in raster order (row by row, left to right) and,
inside a pixel, channel by channel. A 3x3 kernel is *masked* when output ``(p, c)`` only reads
inputs ``(p', c')`` with ``p' < p`` (earlier pixels, any channel) or ``p' = p, c' <= c`` (same
pixel, earlier or equal channel). The Jacobian of such a convolution, in that order, is lower
triangular, and so is the Jacobian of any composition of masked convolutions with element-wise
functions in between (each step is triangular). ``order="reverse"`` mirrors everything
(later pixels, later-or-equal channels: upper triangular). Each masked convolution reaches one
pixel further; alternating the two orders between layers lets information flow both ways.

Both bijectors here map data -> latent explicitly (one pass of convolutions); that is our
``inverse``, the direction ``log_prob`` and maximum-likelihood training use. The sampling
direction (``forward``) solves the triangular system.

Linear (``LinearMaskedConv2D``, an autoregressive "emerging" convolution)::

    z = conv(y, K) + b,       K masked, centre diagonal K[1, 1, c, c] = exp(s_c) > 0,
    log|det dz/dy| = H W sum_c s_c              (constant Jacobian).

``forward(z)`` solves the triangular system ``conv(y, K) = z - b`` by back-substitution with
convolutions, in O(HWC) memory. Split the kernel into its centre ``A = K[1, 1]`` (a ``C x C``
triangular matrix acting within a pixel, positive diagonal) and the rest ``N`` (earlier
pixels only); the Jacobi iteration with the exact pixel block::

    y <- (z - b - conv(y, N)) A^-1        (one 3x3 convolution with kernel N A^-1 per step)

computes, at step ``k``, every pixel whose *wavefront* ``2i + j`` (row ``i``, column ``j``;
mirrored for ``order="reverse"``) is below ``k`` exactly: a pixel depends only on pixels of
smaller wavefront (the row above: ``2(i-1) + j + 1 < 2i + j``; the left neighbour: ``j - 1``).
So the iteration is exact after ``T = 2(H-1) + W`` steps whatever the weights (its iteration
matrix is nilpotent) and usually stops much earlier at the tolerance.
``matrix()`` still builds the dense ``(HWC) x (HWC)`` matrix, for tests on small images.

Non-linear (``MaskedConv2D``, the MintNet block)::

    h1 = conv(y, W1) + b1                       [H, W, K*C]    hidden channel k*C + c sits
    h2 = conv(act(h1), W2) + b2                 [H, W, K*C]    at channel position c
    z  = t * y + conv(act(h2), W3) + b3         [H, W, C]      t > 0 per entry

with masked ``W1, W2, W3`` and a monotone activation (``act' > 0``). The diagonal of the
Jacobian is (paths that stay at the same pixel and channel position)::

    D_c = t_c + sum_k e_kc act'(h2_kc) sum_m B_mkc act'(h1_mc) a_mc,

``a`` / ``B`` / ``e`` the centre diagonal weights of ``W1`` / ``W2`` / ``W3``. Positivity for
every value of the variables is a parameterisation: ``t = softplus(t_raw) + min_diagonal`` and
``B_mkc = |B_raw| sign(a_mc) sign(e_kc)`` (the sign rule of MintNet), so every path product
``e B a = |e||B_raw||a| >= 0`` and ``D >= t > 0``. ``log|det dz/dy| = sum log D`` exactly.

Density evaluation needs one pass of the three convolutions: the map and its diagonal come
from the same activations, and TFP's greedy-attribute cache hands the log-det computed with
``inverse(y)`` to ``inverse_log_det_jacobian(y)`` (``log_prob`` calls both).

Sampling solves ``F(y) = z`` by the preconditioned fixed-point iteration of MintNet::

    y <- y - alpha (F(y) - z) / P(y)

with ``P = D(y)`` ("newton": the exact diagonal, locally superlinear because the iteration
matrix ``I - D^-1 J`` at the solution is strictly triangular, i.e. nilpotent) or ``P = L``
("chord": the bound ``L = t + sum |e||B||a| >= D``, valid since ``act' <= 1``; globally
convergent for ``alpha <= 1`` because each entry's map is a contraction with factor
``<= 1 - t/L`` once the entries before it have converged). ``tff.numerics.fixed_point`` runs it
with a documented tolerance (relative step ``1e-6`` float32, ``1e-12`` float64; an element whose
step has reached its rounding floor also counts as converged, since large weights put that
floor above the tolerance) and iteration cap, reports convergence (``solve_forward``), warns
when a solve did not converge (an error with ``validate_args=True``; the message names the
layer, the iterations and the largest last step) and differentiates the solution by the
adjoint method. The "newton" iteration is not globally convergent: for large weights it can
diverge. The default solver ``"auto"`` therefore runs "newton" and, if any element did not
converge, solves again from scratch by "chord"; only a failure of that is reported.

#### Examples

    bij = tff.bijectors.MaskedConv2D([8, 8, 1], hidden_channels=8, order="reverse")
    z = bij.inverse(images)                 # explicit: data -> latent
    images_back = bij.forward(z)            # fixed-point solve
    result = bij.solve_forward(z)           # .solution, .num_iterations, .converged
    lin = tff.bijectors.LinearMaskedConv2D([8, 8, 1])    # exact triangular-solve inverse

#### References

[1] Song, Meng, Ermon. MintNet: Building Invertible Neural Networks with Masked
    Convolutions. NeurIPS 2019.
[2] Hoogeboom, van den Berg, Welling. Emerging Convolutions for Generative Normalizing
    Flows. ICML 2019.
[3] van den Oord, Kalchbrenner, Kavukcuoglu. Pixel Recurrent Neural Networks. ICML 2016.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import numerics
from tfp_flows import core

tfb = tfp.bijectors

__all__ = ["MaskedConv2D", "LinearMaskedConv2D", "conv_mask"]

_ORDERS = ("forward", "reverse")
_SOLVERS = ("auto", "newton", "chord")


def conv_mask(in_positions, out_positions, order="forward"):
  """0/1 mask ``[3, 3, C_in, C_out]`` of a raster-ordered 3x3 convolution.

  ``in_positions`` / ``out_positions`` give each input / output channel's position in the
  within-pixel channel order. An input at spatial offset ``(dy, dx)`` is kept if it is an
  earlier pixel (``dy < 0`` or ``dy == 0, dx < 0``) or the same pixel with position
  ``<=`` the output's; ``order="reverse"`` mirrors both rules.
  """
  if order not in _ORDERS:
    raise ValueError(f"order must be one of {_ORDERS}, got {order!r}.")
  pin = np.asarray(in_positions)[:, None]
  pout = np.asarray(out_positions)[None, :]
  mask = np.zeros((3, 3, pin.shape[0], pout.shape[1]), np.float64)
  for a in range(3):
    for b in range(3):
      dy, dx = a - 1, b - 1
      if (dy, dx) == (0, 0):
        mask[a, b] = (pin <= pout) if order == "forward" else (pin >= pout)
      else:
        earlier = dy < 0 or (dy == 0 and dx < 0)
        mask[a, b] = earlier if order == "forward" else not earlier
  return mask


def _centre_diagonal(in_positions, out_positions):
  """1 at the kernel centre where input and output channel positions are equal."""
  eq = np.equal(np.asarray(in_positions)[:, None], np.asarray(out_positions)[None, :])
  out = np.zeros((3, 3) + eq.shape, np.float64)
  out[1, 1] = eq
  return out


def _image_shape(event_shape, name):
  shape = core.as_event_shape(event_shape)
  if len(shape) != 3:
    raise ValueError(f"{name}: event_shape must be [H, W, C], got {list(shape)}.")
  return shape


def _check_order(order, name):
  if order not in _ORDERS:
    raise ValueError(f"{name}: order must be one of {_ORDERS}, got {order!r}.")
  return order


def _parameter(value, default, shape, dtype, name, what):
  """A variable holding ``default`` if ``value`` is None, else ``value`` used as given
  (a tensor, ``tf.Variable`` or ``DeferredTensor``) after checking its dtype and shape."""
  if value is None:
    return tf.Variable(default, dtype=dtype, name=what)
  if not (isinstance(value, (tf.Variable, tf.Module)) or tf.is_tensor(value)):
    value = tf.convert_to_tensor(value, dtype)
  if tf.as_dtype(value.dtype) != dtype:
    raise TypeError(f"{name}: {what} has dtype {tf.as_dtype(value.dtype).name}, expected "
                    f"{dtype.name}.")
  if tf.TensorShape(value.shape) != tuple(shape):
    raise ValueError(f"{name}: {what} must have shape {list(shape)}, got "
                     f"{tf.TensorShape(value.shape)}.")
  return value


def _constructor_parameters(local_vars, given_name, drop):
  """``parameters`` = the constructor's arguments, with the variables it created."""
  parameters = {k: v for k, v in local_vars.items() if k not in drop}
  parameters["name"] = given_name
  return parameters


class _MaskedConvBase(core.DtypeChecked, tfb.Bijector):
  """Event checks and the [N, H, W, C] batching shared by both masked convolutions."""

  def _check(self, x, what):
    return core.check_input(x, self._event_shape, name=self.name,
                             validate_args=self.validate_args, what=what)

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict()  # variables are per event; no batch-shaped parameters.

  @property
  def event_shape(self):
    return self._event_shape

  @property
  def order(self):
    return self._order

  def _flat(self, x):
    """``x`` as ``[N, H, W, C]`` and a function restoring the leading shape."""
    lead = tf.shape(x)[:-3]
    static_shape = x.shape
    flat = tf.reshape(x, (-1,) + self._event_shape)

    def restore(t):
      """[N, ...] -> lead + [...] (images, or per-event values shaped like the batch)."""
      inner = t.shape[1:]
      t = tf.reshape(t, tf.concat([lead, tf.shape(t)[1:]], 0))
      t.set_shape(static_shape[:-3].concatenate(inner))
      return t

    return flat, restore

  def _sum_event(self, t):
    return tf.reduce_sum(t, axis=[-3, -2, -1])


class LinearMaskedConv2D(_MaskedConvBase):
  """Autoregressive linear masked 3x3 convolution with an exact (back-substitution) inverse.

  ``inverse(y) = conv(y, K) + b`` (data -> latent), ``forward`` solves it by back-substitution
  with convolutions (exact after at most ``2(H-1) + W`` steps; see the module docstring).
  Variables: ``kernel`` ``[3, 3, C, C]`` (masked off-diagonal part), ``log_diagonal`` ``[C]``
  (centre diagonal ``exp(log_diagonal)``), ``bias`` ``[C]``.

  Args:
    event_shape: ``[H, W, C]``.
    order: ``"forward"`` (raster order, lower triangular) or ``"reverse"``.
    init_scale: std of the initial off-diagonal weights times ``1/sqrt(9 C)`` (0 = identity).
    seed: seed of the initial weights.
    kernel, log_diagonal, bias: the parameters (a tensor, ``tf.Variable`` or
      ``DeferredTensor``, used as given); the ones not passed become new variables
      initialised from ``init_scale`` and ``seed``. Entries of ``kernel`` outside the mask
      and on its centre diagonal are ignored.
    tolerance: relative step at which the sampling solve may stop before it is exact
      (``numerics.default_tolerance(dtype)`` if None).
    validate_args: check event shapes and finiteness of inputs at run time.
    dtype: float32 (default) or float64.
    name: name of the bijector.
  """

  def __init__(self, event_shape, order="forward", init_scale=0.1, seed=0, kernel=None,
               log_diagonal=None, bias=None, tolerance=None, validate_args=False,
               dtype=tf.float32, name="linear_masked_conv2d"):
    given_name = name
    with tf.name_scope(name) as name:
      dtype = core.float_dtype(dtype)
      event_shape = _image_shape(event_shape, name)
      order = _check_order(order, name)
      if tolerance is not None and not tolerance > 0:
        raise ValueError(f"{name}: tolerance must be positive, got {tolerance}.")
      self._event_shape, self._order, self._tolerance = event_shape, order, tolerance
      h, w, c = event_shape
      positions = np.arange(c)
      mask = conv_mask(positions, positions, order)
      diag = _centre_diagonal(positions, positions)
      self._off_mask = tf.constant(mask * (1. - diag), dtype)
      self._diag_mask = tf.constant(diag, dtype)
      outer = mask.copy()
      outer[1, 1] = 0.
      self._outer_mask = tf.constant(outer, dtype)
      rng = np.random.default_rng(seed)
      kernel = _parameter(
          kernel, rng.normal(0., init_scale / np.sqrt(9. * c), (3, 3, c, c)) * mask * (1. - diag),
          (3, 3, c, c), dtype, name, "kernel")
      log_diagonal = _parameter(log_diagonal, np.zeros([c]), (c,), dtype, name, "log_diagonal")
      bias = _parameter(bias, np.zeros([c]), (c,), dtype, name, "bias")
      parameters = _constructor_parameters(
          locals(), given_name, ("self", "given_name", "h", "w", "c", "positions", "mask",
                                 "diag", "outer", "rng", "__class__"))
      self.kernel, self.log_diagonal, self.bias = kernel, log_diagonal, bias
      self._mask_np = mask
      super().__init__(forward_min_event_ndims=3, is_constant_jacobian=True,
                       validate_args=validate_args, dtype=dtype, parameters=parameters,
                       name=name)

  @property
  def num_wavefronts(self):
    """``T = 2(H-1) + W``: the back-substitution is exact after this many steps."""
    h, w, _ = self._event_shape
    return 2 * (h - 1) + w

  def effective_kernel(self):
    """The masked kernel with its positive centre diagonal, ``[3, 3, C, C]``."""
    return self.kernel * self._off_mask + self._diag_mask * tf.exp(self.log_diagonal)

  def _matrix_pattern(self):
    """Static (row, col, kernel tap) triples of the (HWC) x (HWC) convolution matrix."""
    h, w, c = self._event_shape
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    rows, cols, taps = [], [], []
    for a in range(3):
      for b in range(3):
        ii, jj = i + a - 1, j + b - 1
        ok = (ii >= 0) & (ii < h) & (jj >= 0) & (jj < w)
        p_out, p_in = (i * w + j)[ok], (ii * w + jj)[ok]
        for ci, co in zip(*np.nonzero(self._mask_np[a, b])):
          rows.append(p_out * c + co)
          cols.append(p_in * c + ci)
          taps.append(np.full(p_out.shape, ((a * 3 + b) * c + ci) * c + co))
    return (np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64),
            np.concatenate(taps).astype(np.int64))

  def matrix(self):
    """The dense ``(HWC) x (HWC)`` triangular matrix of the convolution (row-major order).

    O((HWC)^2) memory: a reference for tests on small images; sampling does not use it.
    """
    n = int(np.prod(self._event_shape))
    rows, cols, taps = self._matrix_pattern()
    values = tf.gather(tf.reshape(self.effective_kernel(), [-1]), taps)
    return tf.scatter_nd(np.stack([rows, cols], -1), values, [n, n])

  def _inverse(self, y):
    y = self._check(y, "y")
    flat, restore = self._flat(y)
    return restore(tf.nn.conv2d(flat, self.effective_kernel(), 1, "SAME") + self.bias)

  def solve_forward(self, x, tolerance=None):
    """Solves ``conv(y, K) + b = x`` for ``y``; a ``numerics.FixedPointResult`` shaped like x."""
    x = self._check(tf.convert_to_tensor(x, self.dtype), "x")
    flat, restore = self._flat(x)
    centre = self.effective_kernel()[1, 1]                          # A, [C_in, C_out]
    centre_inv = tf.linalg.triangular_solve(                        # A^-1 (A triangular)
        centre, tf.eye(self._event_shape[-1], dtype=self.dtype),
        lower=self._order == "reverse")
    off = self.kernel * self._outer_mask                            # N: other pixels only
    off_scaled = tf.einsum("abio,oc->abic", off, centre_inv)        # N A^-1
    rhs = tf.einsum("nhwc,cd->nhwd", flat - self.bias, centre_inv)  # (x - b) A^-1

    def update(y, rhs, off_scaled):
      return rhs - tf.nn.conv2d(y, off_scaled, 1, "SAME")

    result = numerics.fixed_point(
        update, rhs, (rhs, off_scaled), tolerance=tolerance or self._tolerance,
        max_iterations=self.num_wavefronts, exact_after=self.num_wavefronts,
        validate_args=self.validate_args, name=f"{self.name}_solve")
    return numerics.FixedPointResult(restore(result.solution), result.num_iterations,
                                     restore(result.converged), restore(result.residual))

  def _forward(self, x):
    return self.solve_forward(x).solution

  def _inverse_log_det_jacobian(self, y):
    h, w, _ = self._event_shape
    return tf.constant(h * w, self.dtype) * tf.reduce_sum(self.log_diagonal)

  def _forward_log_det_jacobian(self, x):
    return -self._inverse_log_det_jacobian(x)


_ACTIVATIONS = {
    # name: (activation, derivative); derivatives lie in (0, 1] (up to underflow to 0).
    "elu": (tf.nn.elu, lambda h: tf.where(h > 0., tf.ones_like(h), tf.exp(tf.minimum(h, 0.)))),
    "softplus": (tf.math.softplus, tf.math.sigmoid),
    "tanh": (tf.math.tanh, lambda h: 1. - tf.square(tf.math.tanh(h))),
}


class MaskedConv2D(_MaskedConvBase):
  """The MintNet block: a non-linear masked residual convolution with triangular Jacobian.

  ``inverse(y) = t * y + conv(act(conv(act(conv(y, W1) + b1), W2) + b2), W3) + b3``
  (data -> latent, explicit); ``forward`` solves it by fixed-point iteration (see the module
  docstring for the math, the positivity parameterisation and the solvers).

  Args:
    event_shape: ``[H, W, C]``.
    hidden_channels: width of the two hidden convolutions, a positive multiple ``K * C`` of
      the channels (default: the smallest multiple of C that is >= 32 and >= 8 C); hidden
      channel ``k * C + c`` sits at channel position ``c``.
    order: ``"forward"`` (raster order) or ``"reverse"``.
    activation: ``"elu"`` (default), ``"softplus"`` or ``"tanh"`` (increasing, slope <= 1).
    solver: ``"auto"`` (default: "newton", then "chord" from scratch if "newton" did not
      converge), ``"newton"`` (precondition by the Jacobian diagonal at the iterate; fast,
      not globally convergent) or ``"chord"`` (by its upper bound; globally convergent,
      slower when ``L >> t``).
    step_size: ``alpha`` in ``(0, 2)``; 1 by default.
    tolerance: fixed-point tolerance, relative to ``1 + |y|``; default
      ``numerics.default_tolerance(dtype)`` (1e-6 float32, 1e-12 float64).
    max_iterations: iteration cap of the solve (and of its adjoint in backprop).
    min_diagonal: floor of ``t`` (hence of the Jacobian diagonal).
    init_scale: std of the initial weights times ``1/sqrt(fan_in)``; small values start the
      block near ``y -> y + b3`` (``t = 1``).
    seed: seed of the initial weights.
    w1, w2, w3, b1, b2, b3, t_raw: the parameters (a tensor, ``tf.Variable`` or
      ``DeferredTensor``, used as given; shapes ``[3, 3, C, K C]``, ``[3, 3, K C, K C]``,
      ``[3, 3, K C, C]``, ``[K C]``, ``[K C]``, ``[C]``, ``[H, W, C]``); the ones not passed
      become new variables initialised from ``init_scale``, ``seed`` and ``min_diagonal``.
      Kernel entries outside the masks are ignored.
    validate_args: check inputs and raise when the solve does not converge (otherwise a
      non-converged solve warns).
    dtype: float32 (default) or float64.
    name: name of the bijector.
  """

  def __init__(self, event_shape, hidden_channels=None, order="forward", activation="elu",
               solver="auto", step_size=1., tolerance=None,
               max_iterations=numerics.DEFAULT_FIXED_POINT_ITERATIONS, min_diagonal=1e-3,
               init_scale=0.1, seed=0, w1=None, w2=None, w3=None, b1=None, b2=None, b3=None,
               t_raw=None, validate_args=False, dtype=tf.float32, name="masked_conv2d"):
    given_name = name
    with tf.name_scope(name) as name:
      dtype = core.float_dtype(dtype)
      event_shape = _image_shape(event_shape, name)
      order = _check_order(order, name)
      self._event_shape, self._order = event_shape, order
      h, w, c = self._event_shape
      hidden = (c * max(8, -(-32 // c)) if hidden_channels is None
                else int(hidden_channels))
      if hidden <= 0 or hidden % c:
        raise ValueError(f"{name}: hidden_channels must be a positive multiple of the {c} "
                         f"channels, got {hidden_channels}.")
      if activation not in _ACTIVATIONS:
        raise ValueError(f"{name}: activation must be one of {sorted(_ACTIVATIONS)}, got "
                         f"{activation!r}.")
      if solver not in _SOLVERS:
        raise ValueError(f"{name}: solver must be one of {_SOLVERS}, got {solver!r}.")
      if not 0. < step_size < 2.:
        raise ValueError(f"{name}: step_size must be in (0, 2), got {step_size}.")
      if tolerance is not None and not tolerance > 0:
        raise ValueError(f"{name}: tolerance must be positive, got {tolerance}.")
      if int(max_iterations) < 1:
        raise ValueError(f"{name}: max_iterations must be >= 1, got {max_iterations}.")
      if not min_diagonal > 0:
        raise ValueError(f"{name}: min_diagonal must be positive, got {min_diagonal}.")
      self._hidden = hidden
      self._act, self._act_grad = _ACTIVATIONS[activation]
      self._solver, self._step_size = solver, float(step_size)
      self._tolerance = tolerance
      self._max_iterations = int(max_iterations)
      self._min_diagonal = float(min_diagonal)

      pos_x, pos_h = np.arange(c), np.arange(hidden) % c
      masks = [conv_mask(pos_x, pos_h, order), conv_mask(pos_h, pos_h, order),
               conv_mask(pos_h, pos_x, order)]
      diag2 = _centre_diagonal(pos_h, pos_h)
      self._masks = [tf.constant(m, dtype) for m in masks]
      self._mask2_off = tf.constant(masks[1] * (1. - diag2), dtype)
      self._diag2 = tf.constant(diag2[1, 1], dtype)                 # [K*C, K*C]
      self._group = tf.constant(np.equal(pos_h[:, None], pos_x[None, :]), dtype)  # [K*C, C]
      self._diag1_index = np.stack([pos_h, np.arange(hidden)], -1)  # W1[1, 1, c, k*C + c]
      self._diag3_index = np.stack([np.arange(hidden), pos_h], -1)  # W3[1, 1, k*C + c, c]

      rng = np.random.default_rng(seed)

      def weight(value, shape, mask, what):
        fan_in = 9 * shape[2]
        init = rng.normal(0., init_scale / np.sqrt(fan_in), shape) * mask  # always drawn
        return _parameter(value, init, shape, dtype, name, what)

      w1 = weight(w1, (3, 3, c, hidden), masks[0], "w1")
      w2 = weight(w2, (3, 3, hidden, hidden), masks[1], "w2")
      w3 = weight(w3, (3, 3, hidden, c), masks[2], "w3")
      b1 = _parameter(b1, np.zeros([hidden]), (hidden,), dtype, name, "b1")
      b2 = _parameter(b2, np.zeros([hidden]), (hidden,), dtype, name, "b2")
      b3 = _parameter(b3, np.zeros([c]), (c,), dtype, name, "b3")
      # softplus(t_raw) + min_diagonal == 1 at initialisation.
      t_raw = _parameter(t_raw, np.full(event_shape, np.log(np.expm1(1. - min_diagonal))),
                         event_shape, dtype, name, "t_raw")
      parameters = _constructor_parameters(
          locals(), given_name, ("self", "given_name", "h", "w", "c", "hidden", "pos_x",
                                 "pos_h", "masks", "diag2", "rng", "weight", "__class__"))
      self.w1, self.w2, self.w3, self.b1, self.b2, self.b3 = w1, w2, w3, b1, b2, b3
      self.t_raw = t_raw
      super().__init__(forward_min_event_ndims=3, is_constant_jacobian=False,
                       validate_args=validate_args, dtype=dtype, parameters=parameters,
                       name=name)

  @property
  def hidden_channels(self):
    return self._hidden

  # --- parameters ---------------------------------------------------------------------------

  def _weights(self):
    """Every tensor of the map: masked kernels ``W1, W2, W3``, their centre diagonals
    ``a [KC]``, ``B [KC, KC]``, ``e [KC]``, the biases and the scale ``t``."""
    w1 = self.w1 * self._masks[0]
    w3 = self.w3 * self._masks[2]
    a = tf.gather_nd(w1[1, 1], self._diag1_index)
    e = tf.gather_nd(w3[1, 1], self._diag3_index)
    # Sign rule: B_mk = |B_raw| sign(a_m) sign(e_k) on entries of equal channel position.
    b = self._diag2 * tf.abs(self.w2[1, 1]) * tf.sign(a)[:, None] * tf.sign(e)[None, :]
    centre = tf.pad(b[None, None], [[1, 1], [1, 1], [0, 0], [0, 0]])
    w2 = self.w2 * self._mask2_off + centre
    return (w1, w2, w3, a, b, e, tf.convert_to_tensor(self.b1), tf.convert_to_tensor(self.b2),
            tf.convert_to_tensor(self.b3), self.scale())

  def scale(self):
    """``t = softplus(t_raw) + min_diagonal``, the positive skip-connection scale ``[H, W, C]``."""
    return tf.math.softplus(self.t_raw) + tf.constant(self._min_diagonal, self.dtype)

  def diagonal_bound(self, weights=None):
    """``L = t + sum |e||B||a| >= D`` for every input (act' <= 1), ``[H, W, C]``."""
    _, _, _, a, b, e, _, _, _, t = weights or self._weights()
    paths = tf.linalg.matvec(tf.abs(b), tf.abs(a), transpose_a=True) * tf.abs(e)
    return t + tf.linalg.matvec(self._group, paths, transpose_a=True)

  # --- the explicit map (data -> latent) ----------------------------------------------------

  def _map_and_diagonal(self, y, weights):
    """``F(y)`` and the Jacobian diagonal ``D(y)`` for ``y`` of shape ``[N, H, W, C]``."""
    w1, w2, w3, a, b, e, b1, b2, b3, t = weights
    h1 = tf.nn.conv2d(y, w1, 1, "SAME") + b1
    h2 = tf.nn.conv2d(self._act(h1), w2, 1, "SAME") + b2
    z = t * y + tf.nn.conv2d(self._act(h2), w3, 1, "SAME") + b3
    # Per-pixel products with small matrices as one [N H W, K C] matmul (tensordot): a
    # broadcast tf.linalg.matvec runs N H W tiny batched matmuls, ~10x slower here.
    paths = tf.tensordot(self._act_grad(h1) * a, b, [[3], [0]])
    paths = self._act_grad(h2) * paths * e                          # [N, H, W, K*C]
    diagonal = t + tf.tensordot(paths, self._group, [[3], [0]])
    return z, diagonal

  # One pass of the convolutions gives the map and its log-det: TFP's greedy-attribute cache
  # stores the log-det with the (x, y) pair, so log_prob's inverse + inverse_log_det_jacobian
  # run the three convolutions once (not twice).
  _cache = core.BijectorCacheWithGreedyAttrs(
      forward_name="_augmented_forward", inverse_name="_augmented_inverse")

  def _augmented_inverse(self, y):
    y = self._check(y, "y")
    flat, restore = self._flat(y)
    z, diagonal = self._map_and_diagonal(flat, self._weights())
    ildj = restore(self._sum_event(tf.math.log(diagonal)))
    return restore(z), {"ildj": ildj, "fldj": -ildj}

  def _inverse(self, y):
    return self._augmented_inverse(y)[0]

  def _inverse_log_det_jacobian(self, y):
    cached = self._cache.inverse_attributes(y)
    if "ildj" not in cached:
      cached.update(self._augmented_inverse(y)[1])
    return cached["ildj"]

  # --- the iterative map (latent -> data) ---------------------------------------------------

  def solve_forward(self, x, tolerance=None, max_iterations=None, solver=None,
                    step_size=None):
    """Solves ``F(y) = x`` for ``y``; returns ``numerics.FixedPointResult`` (shaped like x).

    Arguments default to the constructor's; ``converged`` and ``num_iterations`` report the
    solve, and with ``validate_args=True`` non-convergence raises.
    """
    x = self._check(tf.convert_to_tensor(x, self.dtype), "x")
    solver = solver or self._solver
    if solver not in _SOLVERS:
      raise ValueError(f"{self.name}: solver must be one of {_SOLVERS}, got {solver!r}.")
    alpha = tf.constant(step_size or self._step_size, self.dtype)
    flat, restore = self._flat(x)
    args = (flat,) + tuple(self._weights())

    def solve(kind, report):
      def update(y, target, *weights):
        z, diagonal = self._map_and_diagonal(y, weights)
        if kind == "newton":
          return y - alpha * (z - target) / diagonal
        # Chord steps (z - x) / L understate the error by up to L / D when L >> D: the
        # stopping rule uses the Newton step |z - x| / D as the error estimate instead.
        return (y - alpha * (z - target) / self.diagonal_bound(weights),
                tf.abs(z - target) / diagonal)

      # The weights enter as arguments: computed once per solve, and gradients reach the
      # variables through them (the adjoint of fixed_point differentiates its arguments).
      return numerics.fixed_point(
          update, flat, args, tolerance=tolerance or self._tolerance,
          max_iterations=max_iterations or self._max_iterations,
          validate_args=self.validate_args and report, report=report,
          name=f"{self.name}_solve" + ("" if solver == kind else f" ({kind} fallback)"))

    if solver != "auto":
      result = solve(solver, report=True)
    else:  # newton; where it did not converge, the globally convergent chord from scratch
      first = solve("newton", report=False)
      ok = tf.reduce_all(first.converged)
      if tf.executing_eagerly():
        result = first if bool(ok) else solve("chord", report=True)
      else:
        result = numerics.FixedPointResult(*tf.cond(
            ok, lambda: tuple(first), lambda: tuple(solve("chord", report=True))))
    return numerics.FixedPointResult(restore(result.solution), result.num_iterations,
                                     restore(result.converged), restore(result.residual))

  def _augmented_forward(self, x):
    y = self.solve_forward(x).solution
    flat, restore = self._flat(y)
    _, diagonal = self._map_and_diagonal(flat, self._weights())
    fldj = -restore(self._sum_event(tf.math.log(diagonal)))
    return y, {"fldj": fldj, "ildj": -fldj}

  def _forward(self, x):
    return self.solve_forward(x).solution

  def _forward_log_det_jacobian(self, x):
    cached = self._cache.forward_attributes(x)
    if "fldj" not in cached:
      cached.update(self._augmented_forward(x)[1])
    return cached["fldj"]
