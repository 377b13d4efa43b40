"""Data for the ``tfp-flows`` command: reading, checking, splitting and preprocessing (numpy only).

Nothing here imports TensorFlow, so that a bad file or flag is reported before TensorFlow's
start-up. Every user error is a ``UsageError`` with a one-line message.

Preprocessing (what the flow sees, recorded in the run's ``config.json``):

* vectors ``[N, D]``: standardised per column in float64, ``z = (x - mean) / std``; the flow
  models ``z`` in float32 and ``log p(x) = log p(z) - sum(log std)``. Computing the moments
  in float64 (scaled, so that data near 1e300 do not overflow) keeps data far from 0 (e.g.
  ``1e20 + N(0, 1)``) exact: the float32 model never sees the offset.
* integer images ``[N, H, W(, C)]`` with ``K`` levels (256 for uint8): dequantised,
  ``u = n + U[0, 1)``; the model is ``Chain([Dequantize(K), Logit(alpha), flow])`` on ``u``
  (exact log-dets), so ``log p(u)`` is in pixel units and ``bits/dim = -log p(u) / (D ln 2)``
  (Theis et al. 2016).
* float images: one mean and one scale for all pixels (in float64), as for vectors.
"""

import os

__all__ = ["UsageError", "Data", "load_training_data", "read_array", "Preprocessing"]

_LOGIT_ALPHA = 0.05


class UsageError(Exception):
  """A user error: reported as one line on stderr, exit status 2."""


def _one_line(message):
  return " ".join(str(message).split())


def read_array(path, key=None, what="--data"):
  """The numeric array in a .npy, .npz or .csv file, checked (dtype, rank, rows, finiteness)."""
  import numpy as np
  if not os.path.exists(path):
    raise UsageError(f"{what}: no such file: {path}")
  if not os.path.isfile(path):
    raise UsageError(f"{what}: {path} is not a file")
  ext = os.path.splitext(path)[1].lower()
  if key and ext != ".npz":
    raise UsageError(f"--key applies to .npz files only; {path} is a {ext or 'extensionless'} "
                     "file")
  try:
    if ext == ".npy":
      x = np.load(path, allow_pickle=False)
    elif ext == ".npz":
      x = _read_npz(path, key)
    elif ext == ".csv":
      x = _read_csv(path)
    else:
      raise UsageError(f"{what}: unsupported file {path!r}: expected a .npy, .npz or .csv file, "
                       "or a data set name")
  except UsageError:
    raise
  except Exception as e:  # noqa: BLE001 - any parse failure is a user error here.
    raise UsageError(f"cannot read {path}: {_one_line(e)}") from e
  if not isinstance(x, np.ndarray) or x.dtype == bool or not (
      np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
    raise UsageError(f"{path}: expected numbers, got an array of dtype "
                     f"{getattr(x, 'dtype', type(x).__name__)}")
  if x.ndim < 2:
    raise UsageError(f"{path}: expected an array of rows [N, D] or images [N, H, W(, C)], got "
                     f"shape {list(x.shape)}")
  if x.ndim > 4:
    raise UsageError(f"{path}: arrays of rank {x.ndim} are not supported (shape "
                     f"{list(x.shape)}); expected [N, D] or [N, H, W(, C)]")
  if x.shape[0] == 0 or x.size == 0:
    raise UsageError(f"{path}: no data (shape {list(x.shape)})")
  if np.issubdtype(x.dtype, np.floating):
    bad = ~np.all(np.isfinite(x.reshape(len(x), -1)), axis=1)
    if bad.any():
      rows = np.flatnonzero(bad)
      raise UsageError(f"{path}: {len(rows)} row(s) contain NaN or inf values (rows "
                       f"{', '.join(map(str, rows[:5]))}{', ...' if len(rows) > 5 else ''})")
  return x


def _read_npz(path, key):
  import numpy as np
  with np.load(path, allow_pickle=False) as f:
    keys = list(f.keys())
    if key:
      if key not in keys:
        raise UsageError(f"{path} has no array {key!r}; its arrays: {', '.join(keys) or 'none'}")
      return f[key]
    if len(keys) != 1:
      raise UsageError(f"{path} holds {len(keys)} arrays ({', '.join(keys) or 'none'}); choose "
                       "one with --key")
    return f[keys[0]]


def _read_csv(path):
  import numpy as np
  with open(path) as f:
    first = f.readline()
  skip = 0
  try:
    [float(v) for v in first.strip().split(",") if v.strip()]
  except ValueError:
    skip = 1  # a header row
  return np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)


class Data:
  """Training data: ``x_train``/``x_test`` (float64 vectors or float32 dequantised images),
  ``info`` (JSON-ready description) and ``toy`` (a ``ToyDensity`` or None)."""

  def __init__(self, x_train, x_test, info, toy=None):
    self.x_train, self.x_test, self.info, self.toy = x_train, x_test, info, toy

  @property
  def event_shape(self):
    return list(self.x_train.shape[1:])

  @property
  def image(self):
    return len(self.event_shape) == 3


def load_training_data(spec, key=None, num_samples=20_000, validation_fraction=0.1, seed=0,
                       num_bins=0):
  """A ``Data`` for ``--data`` (a toy name, ``digits``, or a file); images are ``[N, H, W, C]``."""
  import numpy as np
  from tfp_flows import datasets
  if not 0. < validation_fraction < 1.:
    raise UsageError(f"--validation_fraction must be in (0, 1), got {validation_fraction}")
  name = spec.strip()
  is_file = bool(os.path.splitext(spec)[1]) or os.path.exists(spec)
  if not is_file and key:
    raise UsageError("--key applies to .npz files only")
  if not is_file and name.lower() != "digits":
    if name not in datasets.TOY_NAMES:
      raise UsageError(f"unknown data {spec!r}: expected a toy name "
                       f"({', '.join(datasets.TOY_NAMES)}), 'digits', or a .npy/.npz/.csv file")
    if num_bins:
      raise UsageError("--num_bins applies to integer images, not to toy data")
    if num_samples < 10:
      raise UsageError(f"--num_samples must be at least 10, got {num_samples}")
    toy = datasets.toy(name)
    n_test = max(1000, int(round(num_samples * validation_fraction)))
    x_train = toy.sample(num_samples, seed=seed).astype(np.float64)
    x_test = toy.sample(n_test, seed=seed + 1).astype(np.float64)
    return Data(x_train, x_test, {"kind": "toy", "name": toy.name, "dequantized": False}, toy)
  if not is_file:
    try:
      x_train, x_test = datasets.digits(test_fraction=validation_fraction, seed=seed)
    except ImportError as e:
      raise UsageError(f"'digits' needs scikit-learn ({_one_line(e)})") from e
    info = {"kind": "digits", "name": "digits"}
    x = np.concatenate([x_train, x_test])
    n_test = len(x_test)
  else:
    x = read_array(spec, key)
    info = {"kind": "file", "name": os.path.abspath(spec), "spec": spec}
    if key:
      info["key"] = key
    if len(x) < 10:
      raise UsageError(f"{spec}: need at least 10 rows to train, got {len(x)}")
    n_test = max(1, int(round(validation_fraction * len(x))))
    if n_test >= len(x):
      raise UsageError(f"--validation_fraction {validation_fraction} leaves no training rows "
                       f"of {len(x)}")
  if x.ndim == 3:
    x = x[..., None]
  integer = np.issubdtype(x.dtype, np.integer)
  if num_bins and not (integer and x.ndim == 4):
    raise UsageError("--num_bins applies to integer images only")
  if x.ndim == 4 and integer:
    levels = _levels(x, num_bins, spec)
    info.update(num_bins=levels, dequantized=True)
  else:
    info["dequantized"] = False
  if info["kind"] == "digits":
    x_train, x_test = x[:-n_test], x[-n_test:]
  else:
    order = np.random.default_rng(seed).permutation(len(x))
    x_train, x_test = x[order[n_test:]], x[order[:n_test]]
  if len(x_train) < 10:
    raise UsageError(f"{spec}: --validation_fraction {validation_fraction} leaves "
                     f"{len(x_train)} training rows; at least 10 are needed")
  if info["dequantized"]:
    rng = np.random.default_rng(seed + 2)
    x_train = (x_train + rng.uniform(size=x_train.shape)).astype(np.float32)
    x_test = (x_test + rng.uniform(size=x_test.shape)).astype(np.float32)
  else:
    x_train, x_test = x_train.astype(np.float64), x_test.astype(np.float64)
  return Data(x_train, x_test, info)


def _levels(x, num_bins, spec):
  import numpy as np
  lo, hi = int(x.min()), int(x.max())
  if lo < 0:
    raise UsageError(f"{spec}: integer images must hold levels 0..K-1, found {lo}")
  if num_bins:
    if num_bins < 2 or hi >= num_bins:
      raise UsageError(f"--num_bins {num_bins} does not cover the images' levels 0..{hi}")
    return int(num_bins)
  if x.dtype == np.uint8:
    return 256
  if hi < 1:
    raise UsageError(f"{spec}: every pixel is {hi}; there is nothing to model")
  return hi + 1


class Preprocessing:
  """The fixed map between data and what the flow models (module docstring), from the config."""

  def __init__(self, config):
    self.kind = config["kind"]
    if self.kind == "standardize":
      import numpy as np
      self.mean = np.asarray(config["mean"], np.float64)
      self.std = np.asarray(config["std"], np.float64)
    elif self.kind == "dequantize":
      self.num_bins = int(config["num_bins"])
      self.alpha = float(config.get("alpha", _LOGIT_ALPHA))
    else:
      raise ValueError(f"unknown preprocessing {self.kind!r}")

  @classmethod
  def fit(cls, data):
    """Preprocessing for ``data`` (checks: no constant columns, moments representable)."""
    if data.info.get("dequantized"):
      return cls({"kind": "dequantize", "num_bins": data.info["num_bins"],
                  "alpha": _LOGIT_ALPHA})
    mean, std = _moments(data.x_train, per_column=not data.image)
    _check_spread(data.x_train, mean, std, data.image, data.info.get("spec", data.info["name"]))
    return cls({"kind": "standardize", "mean": mean.tolist(), "std": std.tolist()})

  def config(self):
    if self.kind == "standardize":
      return {"kind": self.kind, "mean": self.mean.tolist(), "std": self.std.tolist()}
    return {"kind": self.kind, "num_bins": self.num_bins, "alpha": self.alpha}

  def to_model(self, x):
    """Data -> the float32 values the flow models (rows that overflow float32 become inf)."""
    import numpy as np
    if self.kind == "dequantize":
      return np.asarray(x, np.float32)
    with np.errstate(over="ignore"):
      return ((np.asarray(x, np.float64) - self.mean) / self.std).astype(np.float32)

  def from_model(self, z):
    import numpy as np
    if self.kind == "dequantize":
      return np.asarray(z, np.float32)
    return self.mean + self.std * np.asarray(z, np.float64)

  def log_prob(self, model_log_prob, event_shape):
    """Log-densities in data units from the model's: ``log p(z) - sum(log std)``."""
    import numpy as np
    lp = np.asarray(model_log_prob, np.float64)
    if self.kind == "dequantize":
      return lp  # the Dequantize/Logit chain inside the model has the log-dets
    log_std = np.log(self.std)
    return lp - (np.sum(log_std) if log_std.ndim else int(np.prod(event_shape)) * log_std)


def _moments(x, per_column):
  """Mean and std in float64, scaled so that data near the float64 limit do not overflow."""
  import numpy as np
  x = np.asarray(x, np.float64)
  axes = 0 if per_column else None
  scale = np.max(np.abs(x), axis=axes)
  scale = np.where(scale > 0, scale, 1.)
  mean = scale * np.mean(x / scale, axis=axes)
  dev = np.max(np.abs(x - mean), axis=axes)
  dev = np.where(dev > 0, dev, 1.)
  std = dev * np.std((x - mean) / dev, axis=axes)
  return np.asarray(mean, np.float64), np.asarray(std, np.float64)


def _check_spread(x, mean, std, image, name):
  import numpy as np
  if not np.all(np.isfinite(std)) or not np.all(np.isfinite(mean)):
    raise UsageError(f"{name}: the data's spread overflows float64; rescale the data")
  if image:
    if not std > 0:
      raise UsageError(f"{name}: every pixel of every image has the same value "
                       f"({float(mean):g}); there is nothing to model")
    return
  constant = np.flatnonzero(~(std > 0))
  if len(constant) == len(std):
    raise UsageError(f"{name}: every column is constant; there is nothing to model")
  if len(constant):
    cols = ", ".join(f"{c} (= {mean[c]:g})" for c in constant[:5])
    raise UsageError(f"{name}: column(s) {cols} are constant; a density on them is degenerate "
                     "(it would grow without bound). Drop those columns.")
  few = [c for c in range(x.shape[1]) if len(np.unique(x[:, c])) < min(20, len(x) // 10)]
  if few:
    import warnings
    warnings.warn(f"{name}: column(s) {', '.join(map(str, few[:5]))} take only a few distinct "
                  "values (discrete data); a continuous density on them can grow without "
                  "bound (add uniform noise to dequantise them).", RuntimeWarning, stacklevel=3)
