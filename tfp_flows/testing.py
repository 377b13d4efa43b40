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

``assert_tfp_conventions(bij, x)`` checks what TFP users rely on beyond the math (each failure
raises ``AssertionError`` naming the convention):

1. ``parameters`` are the constructor's arguments: ``type(b)(**b.parameters)`` and ``b.copy()``
   give the same map with the very same variables (none created, none re-initialised), and
   compare equal (and hash equal) to ``b``;
2. batch shapes: a ``TransformedDistribution`` over the bijector reports the batch shape its
   ``log_prob`` returns, at the minimal event rank and with one more event dim (TFP's rule:
   trailing batch dims of the parameters then join the event);
3. ``forward_event_shape``/``inverse_event_shape`` (static and ``_tensor``) with leading
   sample and batch dims agree with the shapes ``forward``/``inverse`` return;
4. with the static event shape unknown (``tf.function`` with ``None`` dims), an input whose
   last event dim is one too large is an error, never a silently truncated result;
5. every parameter held as a ``tf.Variable`` (``_parameter_properties``) can be passed as a
   tensor instead: the same values, gradients reaching the tensor equal to those reaching the
   variable (also through iterative inverses), and building the bijector from tensors inside
   ``tf.function`` works on every trace;
6. with a non-empty batch shape: ``b[i]`` and ``dist[i]`` are the i-th flow of the batch.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_flows import core

tfd = tfp.distributions

__all__ = ["assert_bijector_contract", "assert_tfp_conventions", "randomize_variables",
           "autodiff_log_det", "integrate_density"]

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


# ------------------------------------------------------------------ TFP conventions


def _variable_ids(module):
  return {id(v) for v in getattr(module, "variables", ())}


def _standard_normal(event_shape, dtype):
  return tfd.Sample(tfd.Normal(tf.constant(0., dtype), tf.constant(1., dtype)),
                    sample_shape=list(event_shape))


def _parts_with_inputs(bijector, x, kw):
  """``[(part, its forward input)]``: the bijector, and through ``tfb.Chain``s every part."""
  out = [(bijector, x)]
  if isinstance(bijector, core.CHAIN_TYPES) and not kw:
    t = x
    for part in reversed(bijector.bijectors):  # a Chain applies its last part first
      out += _parts_with_inputs(part, t, kw)
      t = part.forward(_fresh(t))
  return out


def _same_map(a, b, x, y, tol, check, name):
  _assert_close(b.forward(_fresh(x)), a.forward(_fresh(x)), tol, f"{check}: forward", name)
  _assert_close(b.inverse(_fresh(y)), a.inverse(_fresh(y)), tol, f"{check}: inverse", name)


def _check_rebuilt(bijector, rebuilt, x, y, tol, check, name):
  before = _variable_ids(bijector)
  if _variable_ids(rebuilt) != before:
    raise AssertionError(f"[{name}] {check} holds other variables than the original (created "
                         "or re-initialised instead of shared)")
  _same_map(bijector, rebuilt, x, y, tol, check, name)
  if not rebuilt == bijector:  # pylint: disable=g-comparison-negation
    raise AssertionError(f"[{name}] {check} does not compare equal to the original")
  if hash(rebuilt) != hash(bijector):
    raise AssertionError(f"[{name}] {check} has another hash than the original")


def _check_batch_shapes(bijector, event_shape, dtype, kw, name):
  """TransformedDistribution batch shape == the batch part of its log_prob's shape."""
  if kw:
    return
  nd = len(event_shape)
  for extra in (0, 1):
    if extra and not event_shape:
      continue
    base_event = list(event_shape) if not extra else [2] + list(event_shape)
    # The extra event dim must broadcast against the parameters: use their trailing batch dim.
    batch = bijector.experimental_batch_shape(x_event_ndims=nd)
    if extra and batch.rank:
      base_event = [int(batch[-1]) if batch[-1] is not None else 2] + list(event_shape)
    dist = tfd.TransformedDistribution(_standard_normal(base_event, dtype), bijector)
    reported = dist.batch_shape
    sample = dist.sample(3, seed=(3, 4))
    log_prob = dist.log_prob(_fresh(sample))
    if tuple(log_prob.shape) != (3,) + tuple(reported):
      raise AssertionError(
          f"[{name}] batch shape at {nd + extra} event dims: the distribution reports "
          f"{reported} but log_prob of 3 samples has shape {log_prob.shape}")


def _check_event_shape_methods(bijector, x, y, name):
  checks = (("forward_event_shape", bijector.forward_event_shape, x, y),
            ("inverse_event_shape", bijector.inverse_event_shape, y, x))
  for what, method, t_in, t_out in checks:
    got = method(t_in.shape)
    if not got.is_compatible_with(t_out.shape) or got.rank != t_out.shape.rank:
      raise AssertionError(f"[{name}] {what}({t_in.shape.as_list()}) = {got}, but the "
                           f"transform returns shape {t_out.shape.as_list()}")
    tensor_method = getattr(bijector, what + "_tensor")
    got_t = np.asarray(tensor_method(tf.shape(t_in)))
    if list(got_t) != t_out.shape.as_list():
      raise AssertionError(f"[{name}] {what}_tensor({t_in.shape.as_list()}) = {list(got_t)}, "
                           f"but the transform returns shape {t_out.shape.as_list()}")


def _check_unknown_static_shape(bijector, x, event_ndims, kw, name):
  """A wrong event size behind None dims is an error, never a (truncated) result."""
  rank = x.shape.rank
  spec = tf.TensorSpec([None] * rank, x.dtype)
  shape = x.shape.as_list()
  wrong = np.zeros(shape[:-1] + [shape[-1] + 1], x.dtype.as_numpy_dtype)
  for what in ("forward", "inverse"):
    fn = tf.function(lambda t, what=what: getattr(bijector, what)(t, **kw),
                     input_signature=[spec])
    try:
      out = fn(tf.constant(wrong))
    except (ValueError, TypeError, tf.errors.InvalidArgumentError):
      continue
    raise AssertionError(f"[{name}] {what} of an input with event shape "
                         f"{wrong.shape[rank - event_ndims:]} behind an unknown static shape "
                         f"returned shape {out.shape.as_list()} instead of an error")


def _tensor_parameter_cases(bijector, x, kw):
  """(part, its input, names of its parameters held as tf.Variables), tfp_flows parts only."""
  cases, seen = [], set()
  for leaf, x_leaf in _parts_with_inputs(bijector, x, kw):
    # Stacks of one family: the first layer of each type stands for the others.
    if not type(leaf).__module__.startswith("tfp_flows") or type(leaf) in seen:
      continue
    params = leaf.parameters or {}
    names = [p for p in type(leaf).parameter_properties()
             if isinstance(params.get(p), tf.Variable) and params[p].dtype.is_floating]
    if names:
      cases.append((leaf, x_leaf, names))
      seen.add(type(leaf))
  return cases


def _check_tensor_parameters(bijector, x, tol, kw, name):
  """Variable parameters passed as tensors: same values, same gradients, any trace."""
  checked = 0
  for leaf, x, names in _tensor_parameter_cases(bijector, x, kw):
    variables = [leaf.parameters[p] for p in names]
    y = leaf.forward(_fresh(x), **kw)

    def loss(b):
      return (tf.reduce_sum(b.forward(_fresh(x), **kw)) +
              tf.reduce_sum(b.inverse(_fresh(y), **kw)) +
              tf.reduce_sum(b.forward_log_det_jacobian(
                  _fresh(x), event_ndims=b.forward_min_event_ndims, **kw)))

    def rebuild(values, leaf=leaf, names=names):
      try:
        return leaf.copy(**dict(zip(names, values)))
      except ValueError as e:  # e.g. data-dependent init needs variables
        if "tf.Variable" in str(e):
          return None
        raise

    with tf.GradientTape() as tape:
      reference = loss(leaf)
    grads_var = tape.gradient(reference, variables)
    values = [tf.constant(v.numpy()) for v in variables]
    with tf.GradientTape() as tape:
      tape.watch(values)
      amortised = rebuild([v * tf.ones([], v.dtype) for v in values])
      if amortised is None:
        continue
      got = loss(amortised)
    grads_tensor = tape.gradient(got, values)
    label = f"{leaf.name} with {names} as tensors"
    _assert_close(got, reference, tol, f"{label}: value", name)
    for pname, g_var, g_tensor in zip(names, grads_var, grads_tensor):
      if g_var is None or g_tensor is None:
        raise AssertionError(f"[{name}] no gradient reaches {leaf.name}.{pname} (variable: "
                             f"{g_var is not None}, tensor: {g_tensor is not None})")
      _assert_close(g_tensor, g_var, tol, f"{label}: gradient of {pname}", name)

    def density_direction(b):
      return (tf.reduce_sum(b.inverse(_fresh(y), **kw)) + tf.reduce_sum(
          b.inverse_log_det_jacobian(_fresh(y), event_ndims=b.inverse_min_event_ndims, **kw)))

    @tf.function
    def traced(values, k, rebuild=rebuild, density_direction=density_direction):
      del k  # a Python argument: every new value is a new trace
      return density_direction(rebuild(values))

    expected = density_direction(leaf)
    for k in (1, 2):
      _assert_close(traced(values, k), expected, tol, f"{label}, built in tf.function "
                    f"(trace {k})", name)
    checked += len(names)
  return checked


def _check_slicing(bijector, x, y, event_ndims, tol, kw, name):
  batch = bijector.experimental_batch_shape(x_event_ndims=event_ndims)
  if batch.rank is None or batch.rank == 0 or kw:
    return False
  sliced = bijector[1] if batch[0] > 1 else bijector[0]
  i = 1 if batch[0] > 1 else 0
  # x is [N] + batch + event: the sliced flow acts on x[:, i].
  _assert_close(sliced.forward(_fresh(x[:, i])), bijector.forward(_fresh(x))[:, i], tol,
                "b[i].forward == b.forward[:, i]", name)
  event_shape = x.shape[x.shape.rank - event_ndims:].as_list()
  dist = tfd.TransformedDistribution(_standard_normal(event_shape, x.dtype), bijector)
  _assert_close(dist[i].log_prob(_fresh(y[:, i])), dist.log_prob(_fresh(y))[:, i], tol,
                "dist[i].log_prob == dist.log_prob[:, i]", name)
  variables = bijector.trainable_variables
  if variables:
    with tf.GradientTape() as tape:
      out = tf.reduce_sum(bijector[i].forward(_fresh(x[:, i])))
    if all(g is None for g in tape.gradient(out, variables)):
      raise AssertionError(f"[{name}] no gradient reaches the variables through b[{i}]")
  return True


def assert_tfp_conventions(bijector, x, *, bijector_kwargs=None, tolerance=None,
                           check_unknown_shapes=True, name=None):
  """Runs the TFP-convention checks (module docstring) on ``bijector`` at base points ``x``.

  Args:
    bijector: a ``tfb.Bijector`` on single tensors.
    x: points in the forward domain, shape ``[N] + batch + event`` with N >= 2.
    bijector_kwargs: extra keyword arguments for every call (e.g. ``conditional_input``);
      distribution-level checks are skipped when given.
    tolerance: absolute+relative tolerance of the value comparisons (default: the contract's
      ``modes`` tolerance of the dtype).
    check_unknown_shapes: run check 4 (turn off only for parts that cannot run without
      static shapes at all).
    name: label in error messages (defaults to ``bijector.name``).

  Returns:
    A dict with what was checked (for reports).
  """
  name = name or bijector.name
  kw = dict(bijector_kwargs or {})
  dtype = bijector.dtype or tf.convert_to_tensor(x).dtype
  x = tf.convert_to_tensor(x, dtype=dtype)
  tol = tolerance if tolerance is not None else _tol("modes", dtype, None)
  event_ndims = _event_ndims(bijector)
  y = bijector.forward(_fresh(x), **kw)
  event_shape = x.shape[x.shape.rank - event_ndims:].as_list()
  report = {}
  if not kw:
    _check_rebuilt(bijector, type(bijector)(**bijector.parameters), x, y, tol,
                   "type(b)(**b.parameters)", name)
    _check_rebuilt(bijector, bijector.copy(), x, y, tol, "b.copy()", name)
    report["rebuilt"] = True
  _check_batch_shapes(bijector, event_shape, dtype, kw, name)
  _check_event_shape_methods(bijector, x, y, name)
  if check_unknown_shapes and event_ndims:
    _check_unknown_static_shape(bijector, x, event_ndims, kw, name)
  report["tensor_parameters"] = _check_tensor_parameters(bijector, x, tol, kw, name)
  report["sliced"] = _check_slicing(bijector, x, y, event_ndims, tol, kw, name)
  return report
