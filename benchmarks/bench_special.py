"""Special functions of ``tff.numerics`` against their TensorFlow / TFP counterparts, side by side.

For every pair, in float32 and float64:

* accuracy of the value and of the gradient against an mpmath reference (40 significant
  digits, evaluated at the exact floating-point inputs), over the whole range including the
  deep tails (``log_ndtr`` to -1e5, ``erfcx`` to 1e30, ``ndtri`` of ``log p`` to -1e30). The
  error is ``|got - ref| / max(|ref|, tiny)`` in units of the dtype's machine epsilon (1 = one
  ulp-ish; float32 cannot do better than ~0.5). Non-finite values or gradients are counted;
* XLA compile time (first call of a fresh ``tf.function(jit_compile=True)`` minus a steady call)
  and run time of the value and of value + gradient on ``--size`` elements, the two
  implementations timed in alternating blocks (median), so that their ratio is robust to load.

Pairs (tff.numerics -> counterpart). Where the measurement favoured TensorFlow/TFP, tff.numerics
now calls it and the hand-written version it replaced is kept in this script for the comparison:

    log_sigmoid            = tf.math.log_sigmoid          vs hand-written -softplus(-x) (removed)
    log1mexp               kept                           vs tfp.math.log1mexp
    erfcx                  = tfp.math.erfcx               vs hand-written series (removed)
    log_ndtr               kept                           vs tfd.Normal(0, 1).log_cdf (TFP's
                                                             log_ndtr; not public in tfp.math)
                                                          and tfp.math.logerfc(-x/sqrt 2) - log 2
    log_normal_pdf         = tfd.Normal(0, 1).log_prob    vs hand-written formula (removed)
    ndtri_of_log           kept                           vs tf.math.ndtri(exp(log p))
    logistic_mixture_log_cdf  kept                        vs tfd.MixtureSameFamily(Categorical,
                           Logistic): log_cdf, log_prob, and log_cdf of the mirrored mixture at
                           -x for log(1 - F) (MixtureSameFamily has no log survival function)

    python benchmarks/bench_special.py            # full run (1233 s on 2 cores shared with ~12
                                                  # busy processes; mostly the mpmath references)
    python benchmarks/bench_special.py --quick    # smoke run (about 1 minute)

Writes ``benchmarks/results/special.json`` (``special_quick.json`` with ``--quick``).
"""

import time

from absl import app
from absl import flags

import _common

import mpmath  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

from tfp_flows import numerics  # noqa: E402

tfd = tfp.distributions

flags.DEFINE_bool("quick", False, "smoke run: few points, small arrays, few timing rounds")
flags.DEFINE_integer("points", 1500, "accuracy grid points per function and sign")
flags.DEFINE_integer("size", 1 << 20, "elements per timed call")
flags.DEFINE_integer("rounds", 9, "alternating timing rounds")
flags.DEFINE_bool("speed", True, "also time compile and run (--nospeed: accuracy only)")
flags.DEFINE_string("out", None, "results name (default special / special_quick)")
FLAGS = flags.FLAGS

mpmath.mp.dps = 40
tf.get_logger().setLevel("ERROR")  # fresh tf.functions per candidate are intended here
_SQRT2 = np.sqrt(2.)
_LOG2 = np.log(2.)


# --- mpmath references (value, derivative) at exact inputs -------------------------------------

def _mp_log_ndtr(x):
  x = mpmath.mpf(x)
  if x > 0:
    return mpmath.log1p(-mpmath.ncdf(-x))
  return mpmath.log(mpmath.ncdf(x))


def _mp_log_ndtr_grad(x):
  x = mpmath.mpf(x)
  return mpmath.exp(mpmath.log(mpmath.npdf(x)) - _mp_log_ndtr(x))


def _mp_ndtri_of_log(lp):
  """Phi^-1(exp(lp)) by Newton in mpmath from the asymptotic start (lp <= log 1/2)."""
  lp = mpmath.mpf(lp)
  if lp > -30:
    x = mpmath.mpf(float(tf.math.ndtri(tf.constant(np.exp(float(lp)), tf.float64))))
  else:
    t = -2 * lp - mpmath.log(2 * mpmath.pi)
    x = -mpmath.sqrt(t - mpmath.log(t))
  for _ in range(100):
    step = (_mp_log_ndtr(x) - lp) / _mp_log_ndtr_grad(x)
    x -= step
    if abs(step) <= abs(x) * mpmath.mpf(10) ** (-35) + mpmath.mpf(10) ** (-300):
      break
  return x


def _mp_ndtri_of_log_grad(lp):
  """d Phi^-1(exp(lp)) / d lp = Phi(x) / phi(x) at the root x."""
  x = _mp_ndtri_of_log(lp)
  return mpmath.ncdf(x) / mpmath.npdf(x)


def _mp_mixture(loc, scale, weights):
  def sig(z):
    return 1 / (1 + mpmath.exp(-z))

  def log_cdf(x):
    return mpmath.log(mpmath.fsum(w * sig((x - m) / s) for m, s, w in zip(loc, scale, weights)))

  def log_sf(x):
    return mpmath.log(mpmath.fsum(w * sig(-(x - m) / s) for m, s, w in zip(loc, scale, weights)))

  def log_pdf(x):
    return mpmath.log(mpmath.fsum(w * sig((x - m) / s) * sig(-(x - m) / s) / s
                                  for m, s, w in zip(loc, scale, weights)))
  return log_cdf, log_sf, log_pdf


def _mp_diff(fn):
  return lambda x: mpmath.diff(fn, mpmath.mpf(x))


# --- the hand-written versions that TensorFlow / TFP replaced (kept here for the comparison) ---

def _removed_log_sigmoid(x):
  return -tf.math.softplus(-x)


def _removed_erfcx(t):
  """exp(t^2) erfc(t) for t >= 0: directly below t = 9 (float32) / 26 (float64), else the
  asymptotic series (8 terms)."""
  dtype = t.dtype
  switch = tf.constant({tf.float32: 9., tf.float64: 26.}[dtype], dtype)
  t = tf.maximum(t, tf.zeros([], dtype))
  near_t = tf.minimum(t, switch)
  near = tf.exp(tf.square(near_t)) * tf.math.erfc(near_t)
  far_t = tf.maximum(t, switch)
  inv = 1. / (2. * tf.square(far_t))
  coefficients = [(-1.) ** n * float(np.prod(np.arange(1, 2 * n, 2))) for n in range(9)]
  series = tf.fill(tf.shape(far_t), tf.constant(coefficients[-1], dtype))
  for c in coefficients[-2::-1]:
    series = c + inv * series
  far = series / (far_t * tf.constant(np.sqrt(np.pi), dtype))
  return tf.where(t < switch, near, far)


def _removed_log_normal_pdf(x):
  return -0.5 * tf.square(x) - tf.constant(0.5 * np.log(2. * np.pi), x.dtype)


# --- the pairs ---------------------------------------------------------------------------------

def _both_signs(lo, hi, n, zero=True):
  a = np.logspace(lo, hi, n)
  return np.concatenate([-a[::-1], [0.] if zero else [], a])


def _mixture_params(dtype):
  rng = np.random.default_rng(0)
  k = 8
  loc = rng.normal(0., 2., size=(1, k))
  scale = rng.uniform(0.3, 2., size=(1, k))
  w = rng.dirichlet(np.ones(k), size=1)
  np_dtype = dtype.as_numpy_dtype
  # The mpmath reference uses the parameters as rounded to the dtype.
  loc, scale, w = loc.astype(np_dtype), scale.astype(np_dtype), w.astype(np_dtype)
  return loc, scale, np.log(w / w.sum()).astype(np_dtype)


def _tfp_mixture(loc, scale, log_w):
  def mix(sign):
    return tfd.MixtureSameFamily(tfd.Categorical(logits=log_w),
                                 tfd.Logistic(sign * loc, scale))
  def fn(x):
    return (mix(1.).log_cdf(x), mix(-1.).log_cdf(-x), mix(1.).log_prob(x))
  return fn


def pairs(dtype, points):
  """[(function, inputs, {impl: fn}, [(output, ref value, ref grad, mask of ref or None)])]."""
  n = points
  loc, scale, log_w = _mixture_params(dtype)
  mix_ref = _mp_mixture([mpmath.mpf(float(v)) for v in loc[0]],
                        [mpmath.mpf(float(v)) for v in scale[0]],
                        [mpmath.exp(mpmath.mpf(float(v))) for v in log_w[0]])
  mix_ours = lambda x: numerics.logistic_mixture_log_cdf(x, loc, scale, log_w)
  one = lambda f: (lambda x: (f(x),))

  def mp_log_sigmoid(x):
    return -mpmath.log1p(mpmath.exp(-mpmath.mpf(x)))

  def mp_log1mexp(x):
    x = mpmath.mpf(x)
    return mpmath.log(-mpmath.expm1(x)) if x > -1 else mpmath.log1p(-mpmath.exp(x))

  def mp_erfcx(t):
    t = mpmath.mpf(t)
    return mpmath.erfc(t) * mpmath.exp(t * t)

  def mp_erfcx_grad(t):
    # 2 t erfcx(t) - 2 / sqrt(pi) cancels to ~1 / (sqrt(pi) t^2): carry 2 log10(t) more digits.
    with mpmath.workdps(mpmath.mp.dps + 2 * max(0, int(np.log10(max(t, 1.)))) + 5):
      t = mpmath.mpf(t)
      return 2 * t * mpmath.erfc(t) * mpmath.exp(t * t) - 2 / mpmath.sqrt(mpmath.pi)

  def mp_log_normal_pdf(x):
    return mpmath.log(mpmath.npdf(mpmath.mpf(x)))

  # The first entry of each is tff.numerics' function (named after what it now is).
  return [
      ("log_sigmoid", _both_signs(-8, 30, n),
       {"tff.numerics = tf.math.log_sigmoid": one(numerics.log_sigmoid),
        "hand-written (removed)": one(_removed_log_sigmoid)},
       [("value", mp_log_sigmoid, lambda x: 1 / (1 + mpmath.exp(mpmath.mpf(x))), None)]),
      ("log1mexp", -np.logspace(-30, 4, 2 * n),
       {"tff.numerics (kept)": one(numerics.log1mexp),
        "tfp.math.log1mexp": one(tfp.math.log1mexp)},
       [("value", mp_log1mexp, lambda x: -1 / mpmath.expm1(-mpmath.mpf(x)), None)]),
      ("erfcx", np.concatenate([[0.], np.logspace(-8, 30, 2 * n)]),
       {"tff.numerics = tfp.math.erfcx": one(numerics.erfcx),
        "hand-written (removed)": one(_removed_erfcx)},
       [("value", mp_erfcx, mp_erfcx_grad, None)]),
      ("log_ndtr", _both_signs(-6, 5, n),
       {"tff.numerics (kept)": one(numerics.log_ndtr),
        "tfd.Normal.log_cdf": one(lambda x: tfd.Normal(tf.zeros([], x.dtype), 1.).log_cdf(x)),
        "tfp.math.logerfc": one(lambda x: tfp.math.logerfc(-x / _SQRT2) - _LOG2)},
       [("value", _mp_log_ndtr, _mp_log_ndtr_grad, None)]),
      ("log_normal_pdf", _both_signs(-6, 15, n),
       {"tff.numerics = tfd.Normal.log_prob": one(numerics.log_normal_pdf),
        "hand-written (removed)": one(_removed_log_normal_pdf)},
       [("value", mp_log_normal_pdf, lambda x: -mpmath.mpf(x), None)]),
      ("ndtri_of_log", -(np.log(2.) + np.logspace(-8, 30, 2 * n)),
       {"tff.numerics (kept)": one(numerics.ndtri_of_log),
        "tf.math.ndtri(exp)": one(lambda lp: tf.math.ndtri(tf.exp(lp)))},
       [("value", _mp_ndtri_of_log, _mp_ndtri_of_log_grad, None)]),
      ("logistic_mixture_log_cdf", _both_signs(-3, 6, n),
       {"tff.numerics (kept)": lambda x: mix_ours(x[:, None]),
        "tfd.MixtureSameFamily": lambda x: _tfp_mixture(loc, scale, log_w)(x[:, None])},
       # log F is used where F <= 1/2 and log(1 - F) where F >= 1/2 (ndtri_from_log_tails takes
       # the smaller): near 0 each loses relative precision by design.
       [("log F (F <= 1/2)", mix_ref[0], _mp_diff(mix_ref[0]), lambda r: r <= -_LOG2),
        ("log(1 - F) (F >= 1/2)", mix_ref[1], _mp_diff(mix_ref[1]), lambda r: r <= -_LOG2),
        ("log f", mix_ref[2], _mp_diff(mix_ref[2]), None)]),
  ]


# --- accuracy ----------------------------------------------------------------------------------

def _values_and_grads(fn, x, dtype):
  x = tf.constant(x, dtype)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    outs = [tf.reshape(o, [-1]) for o in fn(x)]
  grads = [tape.gradient(o, x) for o in outs]
  return [o.numpy() for o in outs], [g.numpy() for g in grads]


def _errors(got, ref, floor, dtype):
  """``|got - ref| / (eps max(|ref|, floor, tiny))``; a result that underflows where the
  reference does (both below the smallest normal number) counts as exact."""
  info = np.finfo(dtype.as_numpy_dtype)
  tiny, eps = float(info.tiny), float(info.eps)
  got = got.astype(np.float64)
  with np.errstate(invalid="ignore", over="ignore"):
    err = np.abs(got - ref) / np.maximum(np.maximum(np.abs(ref), floor), tiny) / eps
  exact = ((np.isinf(got) & (got == ref))
           | ((np.abs(ref) < tiny) & (np.abs(got) <= tiny)))
  return np.where(exact, 0., np.where(np.isfinite(got), err, np.inf))


def _summary(err, x):
  finite = np.isfinite(err)
  worst = int(np.argmax(np.where(finite, err, -1.))) if finite.any() else 0
  return {"max_eps": float(np.max(err[finite])) if finite.any() else None,
          "median_eps": float(np.median(err[finite])) if finite.any() else None,
          "worst_at": float(x[worst]), "non_finite": int(np.sum(~finite))}


def accuracy(dtype, points):
  """Value errors are relative to ``max(|f(x)|, |x f'(x)|)``: near a zero of ``f`` (e.g. the
  median of ``ndtri``) the error an ulp of the input causes, not an impossible relative one.
  Gradient errors are relative."""
  rows = []
  for name, grid, impls, outputs in pairs(dtype, points):
    x = grid.astype(dtype.as_numpy_dtype)
    x = np.unique(x[np.isfinite(x)])
    refs = []
    for _, ref_fn, grad_fn, _ in outputs:
      refs.append((np.array([float(ref_fn(float(v))) for v in x]),
                   np.array([float(grad_fn(float(v))) for v in x])))
    for impl, fn in impls.items():
      vals, grads = _values_and_grads(fn, x, dtype)
      for (out_name, _, _, where), (rv, rg), v, g in zip(outputs, refs, vals, grads):
        keep = where(rv) if where else np.ones(len(x), bool)
        with np.errstate(over="ignore", invalid="ignore"):
          floor = np.nan_to_num(np.abs(x * rg), nan=0., posinf=np.inf)
        rows.append({"function": name, "output": out_name, "impl": impl, "dtype": dtype.name,
                     "points": int(keep.sum()),
                     "range": [float(x[keep].min()), float(x[keep].max())],
                     "value": _summary(_errors(v, rv, floor, dtype)[keep], x[keep]),
                     "gradient": _summary(_errors(g, rg, 0., dtype)[keep], x[keep])})
  return rows


# --- speed -------------------------------------------------------------------------------------

def _timed_inputs(grid, dtype, size):
  rng = np.random.default_rng(1)
  x = rng.choice(grid[np.isfinite(grid.astype(dtype.as_numpy_dtype))], size)
  return tf.constant(x, dtype)


def _value_fn(fn):
  return tf.function(lambda x: fn(x), jit_compile=True, autograph=False)


def _grad_fn(fn):
  def f(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      total = tf.add_n([tf.reduce_sum(o) for o in fn(x)])
    return tape.gradient(total, x)
  return tf.function(f, jit_compile=True, autograph=False)


def _sync(out):
  tf.nest.map_structure(lambda t: t.numpy(), out)


def speed(dtype, size, rounds, calls):
  rows = []
  for name, grid, impls, _ in pairs(dtype, 20):
    x = _timed_inputs(grid, dtype, size)
    first = next(iter(impls))
    compile_s = {}
    for impl, fn in impls.items():
      fresh = [_value_fn(fn), _grad_fn(fn)]
      t0 = time.perf_counter()
      _sync(fresh[0](x))
      t1 = time.perf_counter()
      _sync(fresh[1](x))
      t2 = time.perf_counter()
      steady = [_common.time_per_call(lambda f=f: f(x), calls=1, repeats=3, sync=_sync)
                for f in fresh]
      compile_s[impl] = (t1 - t0 - steady[0], t2 - t1 - steady[1])
    value_fns = {impl: _value_fn(fn) for impl, fn in impls.items()}
    grad_fns = {impl: _grad_fn(fn) for impl, fn in impls.items()}
    value_t = _common.interleaved_times({k: (lambda f=f: f(x)) for k, f in value_fns.items()},
                                        calls=calls, rounds=rounds, sync=_sync)
    grad_t = _common.interleaved_times({k: (lambda f=f: f(x)) for k, f in grad_fns.items()},
                                       calls=calls, rounds=rounds, sync=_sync)
    for impl in impls:
      rows.append({"function": name, "impl": impl, "dtype": dtype.name, "size": size,
                   "compile_value_s": compile_s[impl][0], "compile_grad_s": compile_s[impl][1],
                   "value_ms": 1e3 * value_t[impl], "value_and_grad_ms": 1e3 * grad_t[impl],
                   "value_vs_numerics": value_t[impl] / value_t[first],
                   "grad_vs_numerics": grad_t[impl] / grad_t[first]})
  return rows


def _fmt(s):
  if s["max_eps"] is None:
    return f"all {s['non_finite']} non-finite"
  text = f"{s['max_eps']:.3g} (x={s['worst_at']:.3g})"
  return text + (f", {s['non_finite']} non-finite" if s["non_finite"] else "")


def main(argv):
  del argv
  points, size, rounds, calls = FLAGS.points, FLAGS.size, FLAGS.rounds, 5
  if FLAGS.quick:
    points, size, rounds, calls = 60, 1 << 14, 3, 2
  env = _common.environment()
  print(_common.header_line(env))
  start = time.perf_counter()
  acc, spd = [], []
  for dtype in (tf.float32, tf.float64):
    acc += accuracy(dtype, points)
    spd += speed(dtype, size, rounds, calls) if FLAGS.speed else []
  _common.table(
      ["function", "output", "implementation", "dtype", "points", "value: max err / eps (at x)",
       "gradient: max err / eps (at x)"],
      [[r["function"], r["output"], r["impl"], r["dtype"], r["points"], _fmt(r["value"]),
        _fmt(r["gradient"])] for r in acc],
      title="Accuracy against mpmath (40 digits), over the whole range")
  print()
  _common.table(
      ["function", "implementation", "dtype", "compile value / grad (s)", "value (ms)",
       "value+grad (ms)", "value vs tff.numerics", "value+grad vs tff.numerics"],
      [[r["function"], r["impl"], r["dtype"],
        f"{r['compile_value_s']:.3f} / {r['compile_grad_s']:.3f}", r["value_ms"],
        r["value_and_grad_ms"], f"{r['value_vs_numerics']:.2f}", f"{r['grad_vs_numerics']:.2f}"]
       for r in spd],
      title=f"XLA compile and run time, {size} elements (alternating blocks, median)")
  wall = time.perf_counter() - start
  print(f"wall time {wall:.0f}s")
  _common.write_results(FLAGS.out or ("special_quick" if FLAGS.quick else "special"),
                        {"config": {"quick": FLAGS.quick, "points": points, "size": size,
                                    "rounds": rounds, "calls": calls, "mpmath_dps": mpmath.mp.dps},
                         "accuracy": acc, "speed": spd, "wall_s": wall}, env)


if __name__ == "__main__":
  app.run(main)
