"""The bijector contract: one public checker that every tfp_flows bijector passes.

Users who write their own bijectors run exactly what our test-suite runs::

    import tfp_flows as tff
    bij = tff.bijectors.AffineCoupling(mask, conditioner, dtype=tf.float64)
    tff.testing.randomize_variables(bij, seed=1)      # never test the identity init
    report = tff.testing.assert_bijector_contract(bij, x)

Checks (each failure raises ``AssertionError`` naming the check and the error size):

1. round trips both ways, on fresh tensors so TFP's bijector cache cannot answer from memory:
   ``inverse(forward(x)) == x`` and ``forward(inverse(y)) == y``;
2. ``forward_log_det_jacobian(x) == -inverse_log_det_jacobian(forward(x))``;
3. the log-det against ``tf.linalg.slogdet`` of the autodiff Jacobian (float64 when the
   bijector is float64), for vector and image-shaped events alike (events are flattened);
4. shapes for sample shapes ``[]``, ``[n]`` and ``[n, m]``: outputs and log-dets (one per event,
   shaped like the batch), values equal to the flat computation;
5. eager, ``tf.function`` and ``tf.function(jit_compile=True)`` agree;
6. finite gradients w.r.t. inputs and variables, through the forward pass and through
   ``log_prob`` (the inverse direction, used for maximum likelihood);
7. for events of 1 or 2 dimensions: the density of ``TransformedDistribution(N(0, I), bijector)``
   integrates to 1 by quadrature on a grid.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

__all__ = ["assert_bijector_contract", "randomize_variables", "autodiff_log_det",
           "integrate_density"]

_TOL = {
    # check: (float32, float64) absolute tolerances, applied with a relative term of the same size.
    "round_trip": (2e-4, 1e-8),
    "log_det": (2e-3, 1e-7),
    "modes": (2e-4, 1e-9),
    "density": (2e-2, 5e-3),
}


def _tol(check, dtype, overrides):
  if overrides and check in overrides:
    return overrides[check]
  return _TOL[check][0 if dtype != tf.float64 else 1]


def _fresh(t):
  """A new tensor with the same value (defeats TFP's bijector cache)."""
  return tf.constant(np.array(t))


def _assert_close(actual, expected, tol, check, name):
  actual = np.asarray(actual, np.float64)
  expected = np.asarray(expected, np.float64)
  if actual.shape != expected.shape:
    raise AssertionError(f"[{name}] {check}: shape {actual.shape} != expected {expected.shape}")
  if not np.all(np.isfinite(actual)):
    raise AssertionError(f"[{name}] {check}: non-finite values")
  err = np.abs(actual - expected)
  bound = tol * (1. + np.abs(expected))
  if np.any(err > bound):
    worst = float(np.max(err - bound))
    raise AssertionError(
        f"[{name}] {check}: max abs error {float(np.max(err)):.3g} exceeds tolerance "
        f"{tol:.3g} (relative+absolute) by {worst:.3g}")
  return float(np.max(err)) if err.size else 0.


def randomize_variables(module, scale=0.3, seed=0):
  """Adds N(0, scale^2) noise to every trainable float variable of ``module``.

  Contract tests run with random (not identity) parameters; variables that are
  reparameterised (softplus, normalised directions, masked kernels) stay valid for any value,
  and variables carrying a ``constraint`` are projected with it afterwards.
  """
  rng = np.random.default_rng(seed)
  for v in module.trainable_variables:
    if v.dtype.is_floating:
      v.assign(v + tf.constant(rng.normal(0., scale, v.shape), v.dtype))
      # Variables with a projection (e.g. the masks of TFP's AutoregressiveNetwork, applied
      # by optimizers as a constraint) are projected back, as an optimizer step would.
      if getattr(v, "constraint", None) is not None:
        v.assign(v.constraint(v))
  return module


def _event_ndims(bijector):
  nd = bijector.forward_min_event_ndims
  if not isinstance(nd, (int, np.integer)):
    raise TypeError("assert_bijector_contract supports bijectors on single tensors only.")
  return int(nd)


def autodiff_log_det(fn, x, event_ndims):
  """log|det J| of ``fn`` per event, from the autodiff Jacobian and ``tf.linalg.slogdet``.

  ``x`` has shape ``batch + event``; events are flattened, so ``fn`` may reshape them
  (e.g. Squeeze) as long as the number of elements is preserved.
  """
  x = tf.convert_to_tensor(x)
  batch_shape = x.shape[:x.shape.rank - event_ndims]
  n = int(np.prod(batch_shape.as_list()))
  d = int(np.prod(x.shape[x.shape.rank - event_ndims:].as_list()))
  flat = tf.reshape(x, [n, d])
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(flat)
    y = fn(tf.reshape(flat, x.shape))
    y_flat = tf.reshape(y, [n, -1])
  if y_flat.shape[-1] != d:
    raise AssertionError(f"bijector changes the number of event elements ({d} -> "
                         f"{y_flat.shape[-1]}); it cannot be a bijection.")
  jac = tape.batch_jacobian(y_flat, flat, experimental_use_pfor=False)
  _, logabsdet = tf.linalg.slogdet(tf.cast(jac, tf.float64))
  return tf.reshape(logabsdet, batch_shape)


def integrate_density(log_prob_fn, lows, highs, num_points):
  """Riemann sum of exp(log_prob) over a box in 1-D or 2-D (midpoint rule)."""
  lows = np.asarray(lows, np.float64)
  highs = np.asarray(highs, np.float64)
  axes = [lo + (np.arange(num_points) + 0.5) * (hi - lo) / num_points
          for lo, hi in zip(lows, highs)]
  cell = np.prod((highs - lows) / num_points)
  grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))
  total = 0.
  for chunk in np.array_split(grid, max(1, len(grid) // 65536)):
    total += float(np.sum(np.exp(np.asarray(log_prob_fn(chunk), np.float64))))
  return total * cell


def _modes(fn):
  return {"eager": fn, "tf.function": tf.function(fn),
          "jit_compile": tf.function(fn, jit_compile=True)}


def assert_bijector_contract(bijector, x, *, bijector_kwargs=None, tolerances=None,
                             check_jit=True, check_density=True, check_sample_shapes=True,
                             density_points=None, name=None):
  """Runs the bijector contract on ``bijector`` at base-space points ``x``.

  Args:
    bijector: a ``tfb.Bijector`` on single tensors (our families, or the user's own).
    x: points in the forward domain (base space), shape ``[N] + batch + event`` with N >= 2.
      Use random points and randomised variables (``randomize_variables``).
    bijector_kwargs: extra keyword arguments for every bijector call (e.g. a
      ``conditional_input``); the density check is skipped when given.
    tolerances: optional dict overriding the tolerance of a check
      (``round_trip``, ``log_det``, ``modes``, ``density``).
    check_jit: also compare ``jit_compile=True`` results (turn off only for ops XLA lacks).
    check_density: integrate the density for events of 1 or 2 elements.
    check_sample_shapes: check sample shapes ``[]`` and ``[n, m]`` besides ``[n]``; turn off
      only for parts that need exactly one batch axis (e.g. TFP's ``BatchNormalization``).
    density_points: grid points per dimension (default 4000 in 1-D, 500 in 2-D).
    name: label used in error messages (defaults to ``bijector.name``).

  Returns:
    A dict of the measured maximum errors per check (for reports and benchmarks).
  """
  name = name or bijector.name
  kw = dict(bijector_kwargs or {})
  dtype = bijector.dtype or tf.convert_to_tensor(x).dtype
  x = tf.convert_to_tensor(x, dtype=dtype)
  event_ndims = _event_ndims(bijector)
  inv_event_ndims = int(bijector.inverse_min_event_ndims)
  report = {}

  fwd = lambda t: bijector.forward(t, **kw)
  inv = lambda t: bijector.inverse(t, **kw)
  fldj = lambda t: bijector.forward_log_det_jacobian(t, event_ndims=event_ndims, **kw)
  ildj = lambda t: bijector.inverse_log_det_jacobian(t, event_ndims=inv_event_ndims, **kw)

  # 1. Round trips both ways.
  y = fwd(x)
  if y.dtype != dtype:
    raise AssertionError(f"[{name}] forward changed dtype {dtype.name} -> {y.dtype.name}")
  x_back = inv(_fresh(y))
  report["round_trip_x"] = _assert_close(x_back, x, _tol("round_trip", dtype, tolerances),
                                         "inverse(forward(x)) == x", name)
  y_back = fwd(_fresh(x_back))
  report["round_trip_y"] = _assert_close(y_back, y, _tol("round_trip", dtype, tolerances),
                                         "forward(inverse(y)) == y", name)

  # 2. fldj == -ildj(forward(x)), shaped like the batch.
  batch_shape = y.shape[:y.shape.rank - inv_event_ndims]
  f = fldj(x)
  f = tf.broadcast_to(f, batch_shape) if bijector.is_constant_jacobian else f
  if f.shape != batch_shape:
    raise AssertionError(f"[{name}] forward_log_det_jacobian shape {f.shape} != batch shape "
                         f"{batch_shape}: log-dets must be per event")
  i = ildj(_fresh(y))
  i = tf.broadcast_to(i, batch_shape) if bijector.is_constant_jacobian else i
  report["fldj_vs_ildj"] = _assert_close(f, -i, _tol("log_det", dtype, tolerances),
                                         "fldj(x) == -ildj(forward(x))", name)

  # 3. Against slogdet of the autodiff Jacobian.
  ref = autodiff_log_det(fwd, x, event_ndims)
  report["log_det_vs_autodiff"] = _assert_close(
      f, ref, _tol("log_det", dtype, tolerances), "fldj vs slogdet(autodiff Jacobian)", name)

  # 4. Sample shapes [], [n], [n, m] agree with the flat computation.
  n = int(x.shape[0])
  if n < 2:
    raise ValueError("assert_bijector_contract needs at least 2 points along axis 0 of x.")
  m = 2 if n % 2 == 0 else 1
  if check_sample_shapes:
    single_y, single_ldj = fwd(x[0]), fldj(x[0])
    _assert_close(single_y, y[0], _tol("modes", dtype, tolerances), "sample shape [] forward",
                  name)
    _assert_close(tf.broadcast_to(single_ldj, batch_shape[1:]), f[0],
                  _tol("modes", dtype, tolerances), "sample shape [] log-det", name)
    x2 = tf.reshape(x, [n // m, m] + x.shape[1:].as_list())
    _assert_close(tf.reshape(fwd(x2), y.shape), y, _tol("modes", dtype, tolerances),
                  "sample shape [n, m] forward", name)
    f2 = fldj(x2)
    if not bijector.is_constant_jacobian and f2.shape != [n // m, m] + batch_shape[1:]:
      raise AssertionError(f"[{name}] log-det shape {f2.shape} for sample shape [n, m]")
    _assert_close(tf.reshape(tf.broadcast_to(f2, [n // m, m] + batch_shape[1:]), f.shape), f,
                  _tol("modes", dtype, tolerances), "sample shape [n, m] log-det", name)

  # 5. Eager, tf.function and XLA agree.
  def everything(x_in, y_in):
    return fwd(x_in), inv(y_in), fldj(x_in), ildj(y_in)

  eager = everything(x, _fresh(y))
  for mode, fn in _modes(everything).items():
    if mode == "eager" or (mode == "jit_compile" and not check_jit):
      continue
    got = fn(_fresh(x), _fresh(y))
    for part, a, b in zip(("forward", "inverse", "fldj", "ildj"), got, eager):
      report[f"{mode}_{part}"] = _assert_close(
          tf.broadcast_to(a, b.shape), b, _tol("modes", dtype, tolerances),
          f"{mode} {part} == eager", name)

  # 6. Finite gradients w.r.t. inputs and variables, both directions.
  variables = bijector.trainable_variables
  x_in, y_in = _fresh(x), _fresh(y)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([x_in, y_in])
    loss_fwd = tf.reduce_sum(fwd(x_in)) + tf.reduce_sum(fldj(x_in))
    loss_inv = tf.reduce_sum(inv(y_in)) + tf.reduce_sum(ildj(y_in))
  for what, loss, wrt in (("forward", loss_fwd, x_in), ("inverse", loss_inv, y_in)):
    grads = tape.gradient(loss, [wrt] + list(variables))
    if grads[0] is None:
      raise AssertionError(f"[{name}] no gradient w.r.t. the input of {what}")
    for v, g in zip([wrt] + list(variables), grads):
      if g is not None and not np.all(np.isfinite(tf.convert_to_tensor(g).numpy())):
        label = "input" if v is wrt else v.name
        raise AssertionError(f"[{name}] non-finite gradient of {what} w.r.t. {label}")
  del tape

  # 7. Density integrates to 1 (events of 1 or 2 elements, no bijector batch).
  event_size = int(np.prod(x.shape[x.shape.rank - event_ndims:].as_list()))
  if check_density and not kw and event_size <= 2 and tuple(batch_shape[1:]) == ():
    report["density_integral"] = _check_density(
        bijector, x.shape[x.shape.rank - event_ndims:], y.shape[1:], dtype,
        density_points, _tol("density", dtype, tolerances), name)
  return report


def _check_density(bijector, event_shape, out_event_shape, dtype, num_points, tol, name):
  base = tfd.Sample(tfd.Normal(tf.constant(0., dtype), tf.constant(1., dtype)),
                    sample_shape=event_shape.as_list())
  dist = tfd.TransformedDistribution(base, bijector)
  samples = np.asarray(dist.sample(20000, seed=(1, 2)), np.float64).reshape(20000, -1)
  d = samples.shape[-1]
  lo, hi = samples.min(0), samples.max(0)
  pad = 0.5 * (hi - lo) + 1e-3
  num_points = num_points or (4000 if d == 1 else 500)
  log_prob = tf.function(lambda t: dist.log_prob(tf.reshape(t, [-1] + out_event_shape.as_list())))
  total = integrate_density(lambda g: log_prob(tf.constant(g, dtype)), lo - pad, hi + pad,
                            num_points)
  if not abs(total - 1.) <= tol:
    raise AssertionError(f"[{name}] density integrates to {total:.5f}, not 1 (tol {tol})")
  return abs(total - 1.)
