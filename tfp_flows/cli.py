"""The ``tfp-flows`` command: train a flow on data, then sample it or score data with it.

    tfp-flows train   --data DATA --flow FLOW --out DIR [flags]
    tfp-flows sample  --run DIR --n N --out FILE.npy [flags]
    tfp-flows logprob --run DIR --data FILE [--out FILE.npy] [flags]
    tfp-flows [COMMAND] --help

``train`` fits ``tff.keras.FlowModel`` and writes to ``DIR`` (all files appear together when
the run succeeds; a failed run leaves an earlier run in ``DIR`` untouched):

* ``model.weights.h5``: the flow's weights (every variable, data-dependent-init state too);
* ``config.json``: what ``sample`` / ``logprob`` need to rebuild the same model;
* ``metrics.json`` (strict JSON): training curve, held-out NLL in nats, bits/dim for images,
  KL(data || model) for toy densities with a known density, timings;
* ``density.png`` (2-D data: the model's density with axes and a colour bar) and
  ``samples.png`` (2-D data: data and samples; images: grids of data and samples).

Data (``--data``): a toy name (``tff.datasets.TOY_NAMES``: fresh samples), ``digits``
(scikit-learn's 8x8 digits), or a ``.npy``/``.npz``/``.csv`` file of vectors ``[N, D]`` or
images ``[N, H, W]``/``[N, H, W, C]`` (``.npz``: ``--key`` names the array). Integer images
are dequantised and modelled through a logit transform; vectors and float images are
standardised in float64 (``tfp_flows.cli_data``). Log-densities are in the data's own units.

Every failure is one line ``tfp-flows: error: ...`` on stderr: exit status 2 for a bad call
(flags, files, data), 1 for a failed run (divergence, non-finite results, outputs that cannot
be written). Flags and files are checked before TensorFlow is imported; TensorFlow's own log
lines are silenced (set ``TF_CPP_MIN_LOG_LEVEL=0`` to see them; ``TFP_FLOWS_TRACEBACK=1``
adds the traceback of an unexpected error). See docs/cli.md.
"""

import collections
import json
import math
import os
import shutil
import sys
import tempfile
import textwrap
import time
import warnings

from absl import flags

from tfp_flows.cli_data import Preprocessing, UsageError, load_training_data, read_array
from tfp_flows.datasets import TOY_NAMES

__all__ = ["run", "main", "train", "sample", "logprob", "Run", "UsageError", "RunError",
           "FLOWS", "Family", "COMMANDS"]

COMMANDS = ("train", "sample", "logprob")

# ------------------------------------------------------------------------------- flow families

Family = collections.namedtuple("Family", ["vector", "image", "layers_arg"],
                                defaults=("num_layers",))
Family.__doc__ = """Builder defaults of a flow family for vectors / images (None: not supported).

``hidden_units`` in the defaults: present means the family has networks (``--hidden_units``
applies: vector families take the list, image families its first value; None keeps the
builder's default); absent means it has none. ``layers_arg``: the builder argument that
``--num_layers`` sets.
"""

# The families the CLI trains; the builder is ``tff.flows.<name>``. One line per family.
FLOWS = {
    "nice": Family(vector=dict(num_layers=6, hidden_units=[64, 64]), image=None),
    "realnvp": Family(vector=dict(num_layers=12, hidden_units=[64, 64]),
                      image=dict(num_layers=2, hidden_units=32, num_scales=2)),
    "planar": Family(vector=dict(num_layers=16), image=None),
    "radial": Family(vector=dict(num_layers=16), image=None),
    "masked_conv": Family(vector=None, image=dict(num_layers=4, hidden_units=None)),
    "gaussianization": Family(vector=dict(num_layers=6), image=None),
    "maf": Family(vector=dict(num_layers=5, hidden_units=[64, 64]), image=None),
    "iaf": Family(vector=dict(num_layers=5, hidden_units=[64, 64]), image=None),
    "nsf": Family(vector=dict(num_layers=5, hidden_units=[64, 64]), image=None),
    "glow": Family(vector=None, image=dict(num_levels=2, num_steps=4, hidden_units=64),
                   layers_arg="num_steps"),
}

# ------------------------------------------------------------------------------- flags

FLAGS = flags.FlagValues()  # our own registry: no clash with the flags of a calling program
_COMMAND_FLAGS = {
    "train": ("data", "key", "flow", "out", "epochs", "batch_size", "learning_rate",
              "num_layers", "hidden_units", "num_samples", "validation_fraction", "num_bins",
              "seed", "distribute", "verbose", "plots"),
    "sample": ("run", "n", "out", "seed", "temperature"),
    "logprob": ("run", "data", "key", "out", "seed"),
}
_COMMAND_HELP = {
    "train": "Train a flow on data; write its weights, config, metrics and plots to --out.",
    "sample": "Draw --n samples from a trained run (--run) into a .npy file, in data units.",
    "logprob": "Log-densities (nats, data units) of the rows of --data under a trained run.",
}
_REQUIRED = {"train": ("data", "out"), "sample": ("run", "out"), "logprob": ("run", "data")}

flags.DEFINE_string("data", None, "the data (see the command's help).", flag_values=FLAGS)
flags.DEFINE_string("key", None, "the array to read from a .npz file (needed when it holds "
                    "several).", flag_values=FLAGS)
flags.DEFINE_string("flow", "realnvp", "flow family: " + ", ".join(FLOWS) + ".",
                    flag_values=FLAGS)
flags.DEFINE_string("out", None, "the output (see the command's help).", flag_values=FLAGS)
flags.DEFINE_string("run", None, "a directory written by 'tfp-flows train'.", flag_values=FLAGS)
flags.DEFINE_integer("n", 1000, "number of samples.", flag_values=FLAGS)
flags.DEFINE_integer("epochs", 40, "passes over the training data.", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 256, "rows per training step (the global batch).",
                     flag_values=FLAGS)
flags.DEFINE_float("learning_rate", 2e-3, "peak Adam learning rate (linear warm-up, then "
                   "cosine decay).", flag_values=FLAGS)
flags.DEFINE_integer("num_layers", 0, "layers of the flow (0: the family's default).",
                     flag_values=FLAGS)
flags.DEFINE_string("hidden_units", "", "comma-separated hidden sizes of the flow's networks, "
                    "e.g. '64,64' (image flows use the first; empty: the family's default).",
                    flag_values=FLAGS)
flags.DEFINE_integer("num_samples", 20_000, "rows drawn from a toy density for training.",
                     flag_values=FLAGS)
flags.DEFINE_float("validation_fraction", 0.1, "fraction of the data held out for the test "
                   "metrics (toy data: the size of the fresh test sample, at least 1000 rows).",
                   flag_values=FLAGS)
flags.DEFINE_integer("num_bins", 0, "levels of integer images (0: 256 for uint8, else the "
                     "largest value + 1).", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "seed of the data split, dequantisation, initial weights and "
                     "samples.", flag_values=FLAGS)
flags.DEFINE_enum("distribute", "none", ["none", "mirrored", "multi_worker"],
                  "none; mirrored: every local GPU (tf.distribute.MirroredStrategy); "
                  "multi_worker: the cluster in TF_CONFIG (MultiWorkerMirroredStrategy).",
                  flag_values=FLAGS)
flags.DEFINE_integer("verbose", 1, "0: silent; 1: progress line; 2: one line per epoch.",
                     flag_values=FLAGS)
flags.DEFINE_boolean("plots", True, "write the PNG plots (--noplots: none).", flag_values=FLAGS)
flags.DEFINE_float("temperature", 1., "scale of the base distribution's spread when sampling.",
                   flag_values=FLAGS)


class RunError(Exception):
  """A failed run (divergence, non-finite results, unwritable outputs): exit status 1."""


def _one_line(message):
  return " ".join(str(message).split())


def _help(command=None):
  """Plain-text help of the command (or of all commands)."""
  if command is None:
    lines = ["usage: tfp-flows COMMAND [flags]", "",
             "Normalizing flows (tfp_flows) from the command line.", "", "commands:"]
    lines += [f"  {c:<9}{_COMMAND_HELP[c]}" for c in COMMANDS]
    lines += ["", "'tfp-flows COMMAND --help' lists the flags of a command. Flags are written "
              "--name=value or --name value; booleans as --name / --noname.",
              "Flow families: " + ", ".join(FLOWS) + ".", "Documentation: docs/cli.md."]
    return "\n".join(lines) + "\n"
  required = _REQUIRED[command]
  usage = " ".join(f"--{f} {f.upper()}" for f in required)
  lines = [f"usage: tfp-flows {command} {usage} [flags]", "", _COMMAND_HELP[command], "",
           "flags:"]
  for name in _COMMAND_FLAGS[command]:
    flag = FLAGS[name]
    text = _FLAG_HELP.get((command, name), flag.help)
    default = "none" if flag.default in (None, "") else flag.default_as_str.strip("'")
    text += " (required)" if name in required else f" (default: {default})"
    lines += textwrap.wrap(text, 99, initial_indent=f"  --{name:<21}", subsequent_indent=" " * 25)
  return "\n".join(lines) + "\n"


# Help of a flag whose meaning depends on the command.
_FLAG_HELP = {
    ("train", "data"): "a toy name (" + ", ".join(TOY_NAMES) + "), 'digits', or a "
                       ".npy/.npz/.csv file of vectors [N, D] or images [N, H, W(, C)].",
    ("logprob", "data"): "a .npy/.npz/.csv file of points to score, shaped like the run's "
                         "training data.",
    ("train", "out"): "output directory (created; an earlier run there is replaced only when "
                      "this one succeeds).",
    ("sample", "out"): "output .npy file.",
    ("logprob", "out"): "output .npy file of the log-densities (without it, only their mean is "
                         "printed).",
    ("sample", "seed"): "seed of the samples.",
    ("logprob", "seed"): "seed of the dequantisation noise of integer images.",
}


# ------------------------------------------------------------------------------- outputs


def _make_dirs(path, created):
  """Creates ``path`` and its missing parents, appending each one made to ``created``."""
  missing = []
  path = os.path.abspath(path)
  while not os.path.exists(path):
    missing.append(path)
    path = os.path.dirname(path)
  for p in reversed(missing):
    os.mkdir(p)
    created.append(p)


def _remove_dirs(created):
  """Removes the directories ``_make_dirs`` made, deepest first, while they are empty."""
  for p in reversed(created):
    try:
      os.rmdir(p)
    except OSError:
      break


class _RunDir:
  """A run's files, written into a hidden directory inside ``out`` and moved in at the end.

  A failed run removes its hidden directory (and ``out`` if it created it), so an earlier
  run in ``out`` stays complete and usable.
  """

  FILES = ("model.weights.h5", "metrics.json", "density.png", "samples.png", "config.json")

  def __init__(self, out):
    if os.path.exists(out) and not os.path.isdir(out):
      raise UsageError(f"--out {out} exists and is not a directory")
    self.out = out
    self.created = []
    try:
      _make_dirs(out, self.created)
      self.tmp = tempfile.mkdtemp(prefix=".tfp-flows-", dir=out)
    except OSError as e:
      self.tmp = None
      self.abort()
      raise UsageError(f"cannot write to --out {out}: {e.strerror or e}") from None

  def path(self, name):
    return os.path.join(self.tmp, name)

  def commit(self):
    """Moves the new files into ``out`` (config.json last) and removes stale ones."""
    written = set(os.listdir(self.tmp))
    try:
      stale = os.path.join(self.out, "config.json")
      earlier_run = os.path.isfile(stale) and os.path.isfile(
          os.path.join(self.out, "model.weights.h5"))
      if os.path.exists(stale):
        os.remove(stale)  # a half-moved run must not pair an old config with new weights
      for name in self.FILES:
        target = os.path.join(self.out, name)
        if name in written:
          os.replace(os.path.join(self.tmp, name), target)
        elif earlier_run and os.path.exists(target):
          os.remove(target)  # a plot of the earlier run that this one does not draw
    except OSError as e:
      raise RunError(f"cannot write to --out {self.out}: {e.strerror or e}") from None
    finally:
      shutil.rmtree(self.tmp, ignore_errors=True)

  def abort(self):
    if self.tmp:
      shutil.rmtree(self.tmp, ignore_errors=True)
    _remove_dirs(self.created)


class _OutFile:
  """A .npy output written to a temporary file next to it, renamed into place at the end."""

  def __init__(self, out):
    if not out.endswith(".npy"):
      raise UsageError(f"--out must name a .npy file, got {out!r}")
    if os.path.isdir(out):
      raise UsageError(f"--out {out} is a directory; name a .npy file")
    self.out = out
    self.created = []
    try:
      _make_dirs(os.path.dirname(os.path.abspath(out)), self.created)
      fd, self.tmp = tempfile.mkstemp(prefix=".tfp-flows-", suffix=".npy",
                                      dir=os.path.dirname(os.path.abspath(out)))
      os.close(fd)
    except OSError as e:
      self.tmp = None
      self.abort()
      raise UsageError(f"cannot write to --out {out}: {e.strerror or e}") from None

  def commit(self, array):
    import numpy as np
    try:
      with open(self.tmp, "wb") as f:
        np.save(f, array)
      os.replace(self.tmp, self.out)
    except OSError as e:
      self.abort()
      raise RunError(f"cannot write to --out {self.out}: {e.strerror or e}") from None

  def abort(self):
    if self.tmp and os.path.exists(self.tmp):
      os.remove(self.tmp)
    _remove_dirs(self.created)


def _json_safe(value):
  """``value`` with non-finite floats replaced by None (strict JSON)."""
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def _write_json(path, value):
  with open(path, "w") as f:
    json.dump(_json_safe(value), f, indent=2, allow_nan=False)


# ------------------------------------------------------------------------------- TensorFlow


def _import_tensorflow():
  """Imports TensorFlow, Keras and TFP with their start-up log lines silenced."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  quiet = os.environ["TF_CPP_MIN_LOG_LEVEL"] not in ("", "0")
  saved = None
  if quiet and "tensorflow" not in sys.modules:
    # The TF wheel's C++ start-up logs before TF_CPP_MIN_LOG_LEVEL is read: silence fd 2.
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
  try:
    import tensorflow as tf
    import keras  # noqa: F401
    import tensorflow_probability  # noqa: F401
    from tfp_flows import keras as tff_keras  # noqa: F401
  except ImportError as e:
    raise RunError(f"cannot import TensorFlow/Keras/TFP: {_one_line(e)}") from None
  finally:
    if saved is not None:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
  if quiet:
    tf.get_logger().setLevel("ERROR")
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)
  return tf


def _strategy(distribute):
  import tensorflow as tf
  if distribute == "mirrored":
    return tf.distribute.MirroredStrategy()
  if distribute == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.get_strategy()


def _cluster(distribute):
  """(is_chief, number of workers) from TF_CONFIG for multi_worker, checked without TF."""
  if distribute != "multi_worker":
    return True, 1
  raw = os.environ.get("TF_CONFIG")
  if not raw:
    raise UsageError("--distribute multi_worker needs the TF_CONFIG environment variable (the "
                     "cluster and this worker's task; see docs/keras.md)")
  try:
    config = json.loads(raw)
    cluster, task = config["cluster"], config["task"]
    kind, index = task["type"], int(task["index"])
    workers = list(cluster.get("chief", [])) + list(cluster.get("worker", []))
    if kind not in ("chief", "worker") or not workers or not (
        0 <= index < len(cluster.get(kind, []))):
      raise ValueError(f"task {task} is not in the cluster {cluster}")
  except (ValueError, KeyError, TypeError) as e:
    raise UsageError(f"TF_CONFIG is not a valid cluster spec: {_one_line(e)}") from None
  chief = kind == "chief" or ("chief" not in cluster and index == 0)
  return chief, len(workers)


# ------------------------------------------------------------------------------- models


def _flow_kwargs(flow, event_shape, num_layers, hidden_units):
  """The builder's keyword arguments for ``flow`` on ``event_shape`` (checked)."""
  family = FLOWS[flow]
  image = len(event_shape) == 3
  defaults = family.image if image else family.vector
  if defaults is None:
    kinds = "images [H, W, C]" if family.image is not None else "vectors [D]"
    others = [n for n, f in FLOWS.items() if (f.image if image else f.vector) is not None]
    raise UsageError(f"flow {flow!r} takes {kinds}; the data are "
                     f"{'images' if image else 'vectors'} of shape {list(event_shape)} "
                     f"(flows for these: {', '.join(others)})")
  kwargs = {k: v for k, v in defaults.items() if v is not None}
  if num_layers:
    kwargs[family.layers_arg] = int(num_layers)
  if hidden_units:
    if "hidden_units" not in defaults:
      raise UsageError(f"flow {flow!r} has no networks: --hidden_units does not apply")
    units = _parse_units(hidden_units)
    kwargs["hidden_units"] = units[0] if image else units
  return kwargs


def _parse_units(text):
  try:
    units = [int(u) for u in str(text).split(",") if u.strip()]
  except ValueError:
    raise UsageError(f"--hidden_units must be comma-separated ints, got {text!r}") from None
  if not units or min(units) < 1:
    raise UsageError(f"--hidden_units must be positive ints, got {text!r}")
  return units


def build_distribution(config):
  """The flow's distribution on the model's scale (after the run's preprocessing)."""
  import tensorflow as tf
  import tensorflow_probability as tfp
  from tfp_flows import bijectors, flows
  flow_name, shape = config["flow"], list(config["event_shape"])
  if flow_name not in FLOWS:
    raise UsageError(f"unknown flow {flow_name!r}: expected one of {', '.join(FLOWS)}")
  builder = getattr(flows, flow_name, None)
  if builder is None:
    raise UsageError(f"flow {flow_name!r} is not available in this tfp_flows build")
  from tfp_flows.flows import _config
  # Runs saved before a builder argument existed rebuild the map they were trained with.
  kwargs = _config.with_added_arguments(flow_name, config["flow_kwargs"])
  try:
    flow = builder(shape, seed=int(config["seed"]), **kwargs)
  except (ValueError, TypeError, NotImplementedError) as e:
    raise UsageError(f"flow {flow_name!r} cannot take data of shape {shape}: "
                     f"{_one_line(e)}") from e
  pre = config["preprocessing"]
  if pre["kind"] == "dequantize":
    flow = tfp.bijectors.Chain([bijectors.Dequantize(int(pre["num_bins"])),
                                bijectors.Logit(float(pre["alpha"])), flow],
                               name="dequantized")
  return flows.distribution(flow, shape, dtype=tf.float32)


class Run:
  """A trained run (the directory ``tfp-flows train`` writes), usable from Python.

      run = tfp_flows.cli.Run.load("runs/moons")
      run.log_prob(x)            # float64 [N], nats, data units
      run.sample(100, seed=0)    # [100, *event_shape], data units
  """

  def __init__(self, config, model):
    self.config = config
    self.model = model
    self.preprocessing = Preprocessing(config["preprocessing"])

  @property
  def event_shape(self):
    return list(self.config["event_shape"])

  @classmethod
  def load(cls, run_dir):
    """Reads ``config.json`` and ``model.weights.h5`` of ``run_dir``."""
    config = _read_config(run_dir)
    _import_tensorflow()
    from tfp_flows import keras as tff_keras
    model = tff_keras.FlowModel(build_distribution(config))
    weights = os.path.join(run_dir, "model.weights.h5")
    try:
      model.load_weights(weights)
    except Exception as e:  # noqa: BLE001
      raise UsageError(f"cannot load {weights}: {_one_line(e)}") from e
    return cls(config, model)

  def log_prob(self, x, seed=0, batch=4096):
    """Log-densities (float64, nats) of the rows of ``x`` in data units.

    Integer images of a dequantised run are dequantised with ``seed`` first (``log p(n + u)``,
    a one-sample estimate of a lower bound of the discrete log-probability). Rows outside the
    model's support or beyond float32 after preprocessing get ``-inf``.
    """
    import numpy as np
    x = np.asarray(x)
    pre = self.preprocessing
    if pre.kind == "dequantize":
      if np.issubdtype(x.dtype, np.integer):
        x = x + np.random.default_rng(seed + 2).uniform(size=x.shape)
      outside = ~np.all((x >= 0) & (x < pre.num_bins), axis=tuple(range(1, x.ndim)))
    else:
      outside = np.zeros(len(x), bool)
    z = np.array(pre.to_model(x), np.float32)  # a copy: rows are overwritten below
    outside |= ~np.all(np.isfinite(z.reshape(len(z), -1)), axis=1)
    z[outside] = 0.
    lp = np.concatenate([np.asarray(self.model.log_prob(z[i:i + batch]), np.float64)
                         for i in range(0, len(z), batch)] or [np.zeros([0])])
    lp = pre.log_prob(lp, self.event_shape)
    lp[outside] = -np.inf
    return lp

  def sample(self, n, seed=0, temperature=1.):
    """``n`` samples in data units (float64 vectors; float32 images in pixel units)."""
    return self.preprocessing.from_model(self.model.sample(n, seed=seed,
                                                           temperature=temperature))


def _read_config(run_dir):
  if not run_dir:
    raise UsageError("--run DIR is required (a directory written by 'tfp-flows train')")
  path = os.path.join(run_dir, "config.json")
  weights = os.path.join(run_dir, "model.weights.h5")
  if not os.path.isfile(path) or not os.path.isfile(weights):
    raise UsageError(f"{run_dir} is not a tfp-flows run (config.json and model.weights.h5 "
                     "are needed; write one with 'tfp-flows train')")
  try:
    with open(path) as f:
      config = json.load(f)
    if "preprocessing" not in config and {"mean", "std"} <= set(config):
      # Runs of the first CLI: a float32 Shift/Scale inside the model, the same density.
      config["preprocessing"] = {"kind": "standardize", "mean": config.pop("mean"),
                                 "std": config.pop("std")}
    for key in ("flow", "event_shape", "flow_kwargs", "preprocessing", "seed"):
      config[key]  # noqa: B018 - presence check
    Preprocessing(config["preprocessing"])
  except (ValueError, KeyError, TypeError) as e:
    raise UsageError(f"{path} is not a valid run config: {_one_line(e)}") from e
  return config


# ------------------------------------------------------------------------------- train


def _check_number(name, value, low=None, high=None, integer=False, open_low=False):
  ok = isinstance(value, int) if integer else isinstance(value, (int, float))
  ok = ok and not isinstance(value, bool) and math.isfinite(value)
  if ok and low is not None:
    ok = value > low if open_low else value >= low
  if ok and high is not None:
    ok = value < high
  if not ok:
    bounds = []
    if low is not None:
      bounds.append(f"{'>' if open_low else '>='} {low}")
    if high is not None:
      bounds.append(f"< {high}")
    kind = "an int" if integer else "a finite number"
    raise UsageError(f"--{name} must be {kind}{' ' + ' and '.join(bounds) if bounds else ''}, "
                     f"got {value}")


def train(data, flow, out, epochs=40, batch_size=256, num_samples=20_000, learning_rate=2e-3,
          num_layers=0, hidden_units="", validation_fraction=0.1, seed=0, verbose=1,
          plots=True, key=None, num_bins=0, distribute="none"):
  """``tfp-flows train``; returns the metrics dict (also written to ``out/metrics.json``)."""
  if not data:
    raise UsageError("--data is required (a toy name, 'digits', or a .npy/.npz/.csv file)")
  if not out:
    raise UsageError("--out DIR is required")
  if flow not in FLOWS:
    raise UsageError(f"unknown flow {flow!r}: expected one of {', '.join(FLOWS)}")
  _check_number("epochs", epochs, 1, integer=True)
  _check_number("batch_size", batch_size, 1, integer=True)
  _check_number("learning_rate", learning_rate, 0, open_low=True)
  _check_number("num_layers", num_layers, 0, integer=True)
  _check_number("num_samples", num_samples, 10, integer=True)
  _check_number("validation_fraction", validation_fraction, 0, 1, open_low=True)
  _check_number("num_bins", num_bins, 0, integer=True)
  _check_number("seed", seed, 0, 2**31 - 3, integer=True)
  _check_number("verbose", verbose, 0, 3, integer=True)
  if distribute not in ("none", "mirrored", "multi_worker"):
    raise UsageError(f"--distribute must be none, mirrored or multi_worker, got {distribute!r}")
  if hidden_units:
    _parse_units(hidden_units)
  chief, num_workers = _cluster(distribute)
  if num_workers > 1 and batch_size % num_workers:
    raise UsageError(f"--batch_size {batch_size} (the global batch) must be a multiple of the "
                     f"{num_workers} workers")
  run_dir = _RunDir(out) if chief else None
  try:
    return _train(run_dir, data, flow, epochs, batch_size, num_samples, learning_rate,
                  num_layers, hidden_units, validation_fraction, seed, verbose if chief else 0,
                  plots and chief, key, num_bins, distribute)
  except BaseException:
    if run_dir is not None:
      run_dir.abort()
    raise


def _train(run_dir, data, flow, epochs, batch_size, num_samples, learning_rate, num_layers,
           hidden_units, validation_fraction, seed, verbose, plots, key, num_bins, distribute):
  import numpy as np
  d = load_training_data(data, key=key, num_samples=num_samples,
                         validation_fraction=validation_fraction, seed=seed, num_bins=num_bins)
  pre = Preprocessing.fit(d)
  config = {"flow": flow, "event_shape": d.event_shape, "seed": int(seed), "data": d.info,
            "flow_kwargs": _flow_kwargs(flow, d.event_shape, num_layers, hidden_units),
            "preprocessing": pre.config()}
  z_train, z_test = pre.to_model(d.x_train), pre.to_model(d.x_test)

  _import_tensorflow()
  import keras
  from tfp_flows import keras as tff_keras
  from tfp_flows.flows import _config
  # Record today's values of arguments added to the builder since the first runs, so that a
  # later default change cannot alter what this run loads into.
  config["flow_kwargs"] = {**_config.current_added_arguments(flow), **config["flow_kwargs"]}
  strategy = _strategy(distribute)  # before any other TF op (multi-worker needs that)
  keras.utils.set_random_seed(seed)
  with strategy.scope():
    distribution = build_distribution(config)
    model = tff_keras.FlowModel(distribution)
    steps = epochs * math.ceil(len(z_train) / batch_size)
    # Linear warm-up from learning_rate / 20, then cosine decay to learning_rate / 50.
    warmup = min(200, steps // 10)
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate / 20., max(1, steps - warmup), alpha=0.02, warmup_target=learning_rate,
        warmup_steps=warmup)
    model.compile(optimizer=keras.optimizers.Adam(schedule, global_clipnorm=10.))
  offset = float(np.mean(pre.log_prob(np.zeros(1), d.event_shape)))  # model -> data units
  num_dims = int(np.prod(d.event_shape))
  bpd = (lambda nll: nll / (num_dims * math.log(2.))) if d.info["dequantized"] else None
  progress = _progress_callback(epochs, math.ceil(len(z_train) / batch_size), verbose,
                                lambda loss: loss - offset, bpd)
  start = time.perf_counter()
  try:
    with warnings.catch_warnings():  # divergence is reported as this command's error below
      warnings.filterwarnings("ignore", message=".*training loss became NaN/inf")
      history = model.fit(z_train, batch_size=batch_size, epochs=epochs, shuffle=True,
                          verbose=0, callbacks=[progress])
  except tff_keras.NonFiniteBatchError as e:
    raise RunError(_one_line(e)) from None
  seconds = time.perf_counter() - start
  losses = [float(v) for v in history.history.get("loss", [])]
  if model.diverged is not None or not all(math.isfinite(v) for v in losses):
    where = model.diverged or {"epoch": len(losses) - 1, "batch": "?"}
    raise RunError(f"training diverged: the loss became NaN/inf at batch {where['batch']} of "
                   f"epoch {where['epoch']} (try a lower --learning_rate, now "
                   f"{learning_rate:g}); nothing was written")

  run = Run(config, model)
  test_lp = run.log_prob(d.x_test)
  bad = int(np.sum(~np.isfinite(test_lp)))
  if bad:
    raise RunError(f"the trained model gives non-finite log-densities for {bad} of "
                   f"{len(test_lp)} held-out rows; nothing was written")
  metrics = {"flow": flow, "data": d.info["name"], "event_shape": d.event_shape,
             "num_train": int(len(z_train)), "num_test": int(len(z_test)), "epochs": epochs,
             "batch_size": batch_size, "learning_rate": learning_rate,
             "distribute": distribute, "num_replicas": int(strategy.num_replicas_in_sync),
             "train_seconds": seconds, "compile_seconds": progress.compile_seconds,
             "train_rows_per_second": len(z_train) * len(losses) / max(seconds, 1e-9),
             "num_parameters": int(model.count_params()),
             "train_nll": [v - offset for v in losses],
             "test_nll": float(-np.mean(test_lp))}
  if d.info["dequantized"]:
    ln2 = math.log(2.)
    metrics["train_bits_per_dim"] = [v / (num_dims * ln2) for v in metrics["train_nll"]]
    metrics["test_bits_per_dim"] = metrics["test_nll"] / (num_dims * ln2)
  if d.toy is not None and d.toy.has_log_prob:
    true_lp = d.toy.log_prob(d.x_test)
    metrics["kl_data_model"] = float(np.mean(true_lp - test_lp))
    metrics["test_nll_true_density"] = float(-np.mean(true_lp))
  if run_dir is None:  # a non-chief worker of a multi-worker run writes nothing
    return metrics
  model.save_weights(run_dir.path("model.weights.h5"))
  if plots:
    metrics["plots"] = _plots(run, d, run_dir, flow)
  _write_json(run_dir.path("metrics.json"), metrics)
  _write_json(run_dir.path("config.json"), config)
  run_dir.commit()
  summary = f"test NLL {metrics['test_nll']:.4f} nats"
  if "kl_data_model" in metrics:
    summary += f", KL(data || model) {metrics['kl_data_model']:.4f}"
  if "test_bits_per_dim" in metrics:
    summary += f", {metrics['test_bits_per_dim']:.4f} bits/dim"
  print(f"tfp-flows: trained {flow} on {d.info['name']} in {seconds:.1f}s: {summary}; wrote "
        f"{run_dir.out}")
  return metrics


def _progress_callback(epochs, steps_per_epoch, verbose, to_nll, to_bpd):
  """A Keras callback printing progress (NLL in data units); the first step is announced as
  compiling, and the ETA leaves it out."""
  import keras

  class Progress(keras.callbacks.Callback):

    def __init__(self):
      super().__init__()
      self.compile_seconds = None
      self._tty = sys.stdout.isatty()
      self._last = 0.

    def _print(self, text, end="\n"):
      if verbose:
        print(text, end=end, flush=True)

    def on_train_begin(self, logs=None):
      self._start = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
      if self.compile_seconds is None:
        self._print("tfp-flows: compiling the training step (the first step traces and "
                    "compiles; progress and ETA follow)...")

    def on_train_batch_end(self, batch, logs=None):
      now = time.perf_counter()
      if self.compile_seconds is None:
        self.compile_seconds = now - self._start
        self._after_first, self._steps = now, 0
        self._print(f"tfp-flows: compiled in {self.compile_seconds:.1f}s")
        return
      self._steps += 1
      if verbose == 1 and self._tty and now - self._last > 0.5:
        self._last = now
        per_step = (now - self._after_first) / self._steps
        left = epochs * steps_per_epoch - 1 - self._steps
        self._print(f"\r  epoch {self._epoch + 1}/{epochs}  step {batch + 1}/{steps_per_epoch}"
                    f"  {self._loss(logs)}  ETA {_duration(per_step * max(left, 0))}   ",
                    end="")

    def on_epoch_begin(self, epoch, logs=None):
      self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
      if verbose and self._tty and verbose == 1:
        print("\r", end="")
      self._print(f"  epoch {epoch + 1}/{epochs}: {self._loss(logs)} "
                  f"({_duration(time.perf_counter() - self._start)} elapsed)" + " " * 10)

    def _loss(self, logs):
      nll = to_nll(float((logs or {}).get("loss", float("nan"))))
      return f"NLL {nll:.4f}" + (f" ({to_bpd(nll):.4f} bits/dim)" if to_bpd else "")

  return Progress()


def _duration(seconds):
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def _plots(run, d, run_dir, flow):
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    warnings.warn("matplotlib is not installed; no plots written", RuntimeWarning)
    return []
  import numpy as np
  written = []
  name = d.info["name"] if d.info["kind"] != "file" else os.path.basename(d.info["name"])
  if d.event_shape == [2]:
    x_test = d.x_test
    samples = run.sample(2000, seed=run.config["seed"])
    lo, hi = np.percentile(x_test, 0.5, axis=0), np.percentile(x_test, 99.5, axis=0)
    pad = 0.15 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    grid = np.stack([g0.ravel(), g1.ravel()], 1)
    density = np.exp(run.log_prob(grid)).reshape(g0.shape)
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(np.nan_to_num(density), origin="lower", extent=[lo[0], hi[0], lo[1], hi[1]],
                      cmap="magma", aspect="auto")
    fig.colorbar(image, ax=ax, label="density")
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]")
    ax.set_title(f"{flow} density on {name}")
    written.append(_save(fig, run_dir, "density.png"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), sharex=True, sharey=True)
    for ax, pts, title in ((axes[0], x_test[:2000], "data (held out)"),
                           (axes[1], samples, "samples")):
      ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
      ax.set_title(title)
      ax.set_xlabel("x[0]")
      ax.set_xlim(lo[0], hi[0])
      ax.set_ylim(lo[1], hi[1])
    axes[0].set_ylabel("x[1]")
    written.append(_save(fig, run_dir, "samples.png"))
  elif d.image:
    samples = run.sample(64, seed=run.config["seed"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    for ax, imgs, title in ((axes[0], d.x_test[:64], "data (held out)"),
                            (axes[1], samples, "samples")):
      ax.imshow(_grid(imgs, 8), cmap="gray")
      ax.set_title(title)
      ax.axis("off")
    fig.suptitle(f"{flow} on {name}")
    written.append(_save(fig, run_dir, "samples.png"))
  plt.close("all")
  return [os.path.join(run_dir.out, os.path.basename(p)) for p in written]


def _grid(images, cols):
  import numpy as np
  images = np.asarray(images, np.float64)
  n, h, w, c = images.shape
  lo, hi = np.percentile(images, 1), np.percentile(images, 99)
  images = np.clip((images - lo) / max(hi - lo, 1e-9), 0., 1.)
  rows = int(np.ceil(n / cols))
  canvas = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1, c))
  for i, img in enumerate(images):
    r, k = divmod(i, cols)
    canvas[r * (h + 1):r * (h + 1) + h, k * (w + 1):k * (w + 1) + w] = img
  return canvas[..., 0] if c == 1 else canvas[..., :3]


def _save(fig, run_dir, name):
  path = run_dir.path(name)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  return path


# ------------------------------------------------------------------------------- sample, logprob


def sample(run_dir, n, out, seed=0, temperature=1.):
  """``tfp-flows sample``: ``n`` samples of a saved run into ``out`` (.npy)."""
  _check_number("n", n, 1, integer=True)
  _check_number("seed", seed, 0, 2**31 - 3, integer=True)
  _check_number("temperature", temperature, 0, open_low=True)
  if not out:
    raise UsageError("--out FILE.npy is required")
  if not out.endswith(".npy"):
    raise UsageError(f"--out must name a .npy file, got {out!r}")
  _read_config(run_dir)
  target = _OutFile(out)
  try:
    run = Run.load(run_dir)
    x = run.sample(n, seed=seed, temperature=temperature)
    if not _all_finite(x):
      raise RunError("the run's samples contain NaN or inf values; nothing was written")
    target.commit(x)
  except BaseException:
    target.abort()
    raise
  print(f"tfp-flows: wrote {n} samples of shape {list(x.shape[1:])} to {out}")
  return x


def _all_finite(x):
  import numpy as np
  return bool(np.all(np.isfinite(x)))


def logprob(run_dir, data, out=None, key=None, seed=0):
  """``tfp-flows logprob``: log-densities (nats) of the rows of ``data`` under a saved run."""
  import numpy as np
  if not data:
    raise UsageError("--data FILE is required (.npy, .npz or .csv)")
  _check_number("seed", seed, 0, 2**31 - 3, integer=True)
  if out and not out.endswith(".npy"):
    raise UsageError(f"--out must name a .npy file, got {out!r}")
  config = _read_config(run_dir)
  x = read_array(data, key)
  shape = list(config["event_shape"])
  if len(shape) == 3 and x.ndim == 3:
    x = x[..., None]
  if list(x.shape[1:]) != shape:
    raise UsageError(f"{data}: rows of shape {list(x.shape[1:])} do not match the run's event "
                     f"shape {shape}")
  target = _OutFile(out) if out else None
  try:
    lp = Run.load(run_dir).log_prob(x, seed=seed)
    if target is not None:
      target.commit(lp)
  except BaseException:
    if target is not None:
      target.abort()
    raise
  finite = np.isfinite(lp)
  mean = f"{np.mean(lp[finite]):.4f}" if finite.any() else "nan"
  print(f"tfp-flows: mean log_prob {mean} nats over {int(finite.sum())} of {len(lp)} rows"
        + (f" ({len(lp) - int(finite.sum())} outside the model's support: -inf)"
           if not finite.all() else "") + (f"; wrote {out}" if out else ""))
  return lp


# ------------------------------------------------------------------------------- entry


def main(argv):
  """Runs the command ``argv[1]`` with the already parsed flags."""
  args = argv[1:]
  if len(args) != 1 or args[0] not in COMMANDS:
    got = " ".join(args) if args else "nothing"
    raise UsageError(f"expected one command ({', '.join(COMMANDS)}), got {got}; see "
                     "'tfp-flows --help'")
  command = args[0]
  foreign = [name for name in FLAGS if FLAGS[name].present
             and name not in _COMMAND_FLAGS[command]]
  if foreign:
    raise UsageError(f"--{foreign[0]} does not apply to '{command}' (its flags: "
                     f"{', '.join('--' + f for f in _COMMAND_FLAGS[command])})")
  if command == "train":
    train(FLAGS.data, FLAGS.flow, FLAGS.out, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
          num_samples=FLAGS.num_samples, learning_rate=FLAGS.learning_rate,
          num_layers=FLAGS.num_layers, hidden_units=FLAGS.hidden_units,
          validation_fraction=FLAGS.validation_fraction, seed=FLAGS.seed,
          verbose=FLAGS.verbose, plots=FLAGS.plots, key=FLAGS.key, num_bins=FLAGS.num_bins,
          distribute=FLAGS.distribute)
  elif command == "sample":
    sample(FLAGS.run, FLAGS.n, FLAGS.out, seed=FLAGS.seed, temperature=FLAGS.temperature)
  else:
    logprob(FLAGS.run, FLAGS.data, FLAGS.out, key=FLAGS.key, seed=FLAGS.seed)


def _fail(message, status):
  sys.stdout.flush()
  print(f"tfp-flows: error: {_one_line(message)}", file=sys.stderr, flush=True)
  sys.exit(status)


def _show_warning(message, category, filename, lineno, file=None, line=None):
  print(f"tfp-flows: warning: {_one_line(message)}", file=sys.stderr, flush=True)


_HELP_ARGS = ("-h", "--help", "-help", "--helpfull", "--helpshort", "-?")


def run(argv=None):
  """The console entry point (``tfp-flows``)."""
  argv = list(sys.argv if argv is None else argv)
  args = argv[1:]
  positional = [a for a in args if not a.startswith("-")]
  if any(a in _HELP_ARGS for a in args) or (args and args[0] == "help"):
    topic = positional[1] if positional[:1] == ["help"] and len(positional) > 1 else (
        positional[0] if positional and positional[0] in COMMANDS else None)
    if topic is not None and topic not in COMMANDS:
      _fail(f"no help for {topic!r}: commands are {', '.join(COMMANDS)}", 2)
    sys.stdout.write(_help(topic))
    sys.exit(0)
  if args == ["--version"]:
    from tfp_flows import __version__
    print(f"tfp-flows {__version__}")
    sys.exit(0)
  FLAGS.unparse_flags()  # defaults again: run() may be called more than once in a process
  try:
    remaining = FLAGS(argv)
  except flags.Error as e:
    _fail(e, 2)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    warnings.simplefilter("always", RuntimeWarning)
    old_show, warnings.showwarning = warnings.showwarning, _show_warning
    try:
      main(remaining)
    except UsageError as e:
      _fail(e, 2)
    except RunError as e:
      _fail(e, 1)
    except KeyboardInterrupt:
      _fail("interrupted", 130)
    except Exception as e:  # noqa: BLE001 - the command's contract is one line, not a traceback
      if os.environ.get("TFP_FLOWS_TRACEBACK"):
        raise
      _fail(f"{type(e).__name__}: {e} (set TFP_FLOWS_TRACEBACK=1 for the traceback)", 1)
    finally:
      warnings.showwarning = old_show
  sys.exit(0)


if __name__ == "__main__":
  run()
