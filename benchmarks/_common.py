"""What the benchmark scripts share: environment header, timing, tables, results JSON, data paths.

Import it from a script in this folder as ``import _common`` (Python puts the script's folder on
``sys.path``). Nothing here is part of the library.
"""

import datetime
import json
import math
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
# Real images shipped beside the repository in this workplace; scripts take --data to override.
DEFAULT_MNIST = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "mnist_8k.npz"))


def _version(module_name):
  try:
    module = __import__(module_name)
    return getattr(module, "__version__", "?")
  except ImportError:
    return None


def environment():
  """Date, machine and library versions (recorded with every result)."""
  import tensorflow as tf
  gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
  return {
      "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
      "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores",
      "device": ", ".join(gpus) if gpus else "CPU",
      "python": platform.python_version(),
      # 1-minute load average at the start: above the core count, other processes competed.
      "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
      "versions": {name: _version(name) for name in
                   ("tensorflow", "tensorflow_probability", "keras", "torch", "zuko")},
  }


def header_line(env=None):
  env = env or environment()
  versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
  load = f" | load {env['load_average']}" if env.get("load_average") is not None else ""
  return f"{env['date']} | {env['machine']}{load} | {env['device']} | {versions}"


def time_per_call(fn, *, calls=10, repeats=5, sync=float):
  """Median seconds per call of ``fn()`` over ``repeats`` blocks of ``calls`` (after one warm-up).

  ``sync(result)`` waits for the last call of a block (default: ``float``).
  """
  sync(fn())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(calls):
      out = fn()
    sync(out)
    times.append((time.perf_counter() - t0) / calls)
  return float(np.median(times))


def interleaved_times(fns, *, calls=10, rounds=7, sync=float):
  """Median seconds per call of each ``fns[name]()``, timed in alternating blocks.

  Alternating the candidates round by round makes their ratios robust to load that drifts
  during the run (other processes, thermal state). Returns ``{name: seconds}``.
  """
  for fn in fns.values():
    sync(fn())  # warm up / compile
  samples = {name: [] for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      for _ in range(calls):
        out = fn()
      sync(out)
      samples[name].append((time.perf_counter() - t0) / calls)
  return {name: float(np.median(v)) for name, v in samples.items()}


def mean_and_stderr(values):
  """(mean, standard error of the mean) of a sample, as floats."""
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.


def table(header, rows, title=None):
  """A Markdown table (also printed): ``header`` a list of names, ``rows`` lists of cells."""
  def cell(v):
    if isinstance(v, float):
      return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    return "–" if v is None else str(v)
  lines = ([f"### {title}", ""] if title else []) + [
      "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
  text = "\n".join(lines)
  print(text)
  return text


def _strict(obj):
  """JSON-safe copy: non-finite floats become None (strict JSON has no NaN/Infinity)."""
  if isinstance(obj, dict):
    return {str(k): _strict(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_strict(v) for v in obj]
  if isinstance(obj, (np.floating, float)):
    return float(obj) if math.isfinite(obj) else None
  if isinstance(obj, np.integer):
    return int(obj)
  if isinstance(obj, np.ndarray):
    return _strict(obj.tolist())
  return obj


def write_results(name, results, env=None):
  """Writes ``results`` with the environment to ``benchmarks/results/<name>.json``; the path."""
  os.makedirs(RESULTS, exist_ok=True)
  path = os.path.join(RESULTS, f"{name}.json")
  payload = {"environment": env or environment(), "results": results}
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(_strict(payload), f, indent=2, allow_nan=False)
  os.replace(tmp, path)
  print(f"wrote {path}")
  return path


def load_mnist(path=None):
  """uint8 images ``[N, 28, 28]`` from an ``.npz`` file (key ``images``): ``path`` or the
  default."""
  path = path or DEFAULT_MNIST
  if not os.path.isfile(path):
    raise SystemExit(f"no image file at {path}; pass --data PATH (an .npz with key 'images')")
  with np.load(path) as f:
    return np.asarray(f["images"])


# --- peers built from TFP's own bijectors (shared by bench_keras and bench_realnvp) -------------

def tfp_realnvp(d, num_layers, hidden):
  """TFP's ``tfb.RealNVP`` stack with ``tff.nets.MLP`` conditioners and reverse permutations.

  The conditioner is a ``tf.Module`` that TFP's RealNVP stores, so its variables are found by
  ``tf.Module`` traversal (``chain.trainable_variables``).
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tensorflow_probability as tfp  # pylint: disable=import-outside-toplevel
  import tfp_flows as tff  # pylint: disable=import-outside-toplevel
  tfb = tfp.bijectors

  class Conditioner(tf.Module):
    """``shift_and_log_scale_fn(x, output_units) -> (shift, log_scale)`` from an MLP."""

    def __init__(self, net):
      super().__init__(name="conditioner")
      self.net = net

    def __call__(self, x, output_units, **kwargs):
      del output_units, kwargs
      return tuple(tf.split(self.net(x), 2, axis=-1))

  layers = []
  for i in range(num_layers):
    if i:
      layers.append(tfb.Permute(np.arange(d)[::-1].astype(np.int32)))
    net = tff.nets.MLP(d // 2, 2 * (d - d // 2), hidden, seed=i)
    layers.append(tfb.RealNVP(num_masked=d // 2, shift_and_log_scale_fn=Conditioner(net)))
  return tfb.Chain(layers[::-1])
