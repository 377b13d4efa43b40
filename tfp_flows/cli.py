"""The ``tfp-flows`` command: train a flow on data, then sample it or score data with it.

    tfp-flows train   --data {toy name | digits | path.npy | path.csv} --flow FLOW --out DIR
    tfp-flows sample  --run DIR --n N --out FILE.npy
    tfp-flows logprob --run DIR --data FILE [--out FILE.npy]

``train`` fits ``tff.keras.FlowModel`` (Keras progress bar) and writes to ``DIR``:

* ``model.weights.h5``: the flow's weights (every variable, data-dependent-init state too);
* ``config.json``: what ``sample`` / ``logprob`` need to rebuild the same flow;
* ``metrics.json``: training curve and held-out metrics: mean NLL (nats), bits/dim for image
  data, and for toy densities with a known density the KL(data || model) estimate;
* ``density.png`` and ``samples.png`` (2-D data) or ``samples.png`` sample grids (images).

Data: a toy name (``tff.datasets.TOY_NAMES``: fresh samples), ``digits`` (scikit-learn's 8x8
digits as ``[8, 8, 1]`` images), a ``.npy`` file (``[N, D]`` vectors, ``[N, H, W]`` or
``[N, H, W, C]`` images) or a ``.csv`` file (``[N, D]`` numbers, one optional header row).
Integer-valued images are dequantised (``n + u``, ``u ~ U[0, 1)``). The model is the flow
after a fixed standardisation (per dimension for vectors, one scale for images) that is part
of the distribution, so every log-density is in the data's own units.

Flows: nice, realnvp, planar, masked_conv (images), gaussianization, maf, iaf; vector-only
flows reject image data and masked_conv rejects vectors. User errors (missing or unreadable
files, unknown names, shapes a flow cannot take, bad numbers) print one line on stderr and
exit with status 2.
"""

import json
import os
import sys
import time

from absl import app
from absl import flags

__all__ = ["run", "main", "UsageError", "FLOWS", "COMMANDS"]

COMMANDS = ("train", "sample", "logprob")
FLOWS = ("nice", "realnvp", "planar", "masked_conv", "gaussianization", "maf", "iaf")
IMAGE_FLOWS = ("realnvp", "masked_conv")
VECTOR_FLOWS = ("nice", "realnvp", "planar", "gaussianization", "maf", "iaf")

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "train: toy name, 'digits', or a .npy/.csv file; "
                    "logprob: a .npy/.csv file of points to score.")
flags.DEFINE_string("flow", "realnvp", f"flow family, one of {', '.join(FLOWS)}.")
flags.DEFINE_string("out", None, "train: output directory; sample/logprob: output .npy file.")
flags.DEFINE_string("run", None, "sample/logprob: a directory written by 'tfp-flows train'.")
flags.DEFINE_integer("n", 1000, "sample: number of samples.")
flags.DEFINE_integer("epochs", 40, "train: passes over the training data.")
flags.DEFINE_integer("batch_size", 256, "train: batch size.")
flags.DEFINE_integer("num_samples", 20_000, "train: samples drawn from a toy density.")
flags.DEFINE_float("learning_rate", 2e-3, "train: peak Adam learning rate (linear warm-up, "
                   "then cosine decay).")
flags.DEFINE_integer("num_layers", 0, "train: layers of the flow (0: the flow's default).")
flags.DEFINE_string("hidden_units", "", "train: comma-separated hidden sizes of the flow's "
                    "networks, e.g. '64,64' (empty: the flow's default).")
flags.DEFINE_float("validation_fraction", 0.1, "train: fraction of a data file held out.")
flags.DEFINE_integer("seed", 0, "seed of the data split, initial weights and samples.")
flags.DEFINE_integer("verbose", 1, "train: Keras verbosity (0 silent, 1 progress bar, 2 lines).")
flags.DEFINE_boolean("plots", True, "train: write the PNG plots.")


class UsageError(Exception):
  """A user error: reported as one line on stderr, exit status 2."""


def _one_line(message):
  return " ".join(str(message).split())


# ------------------------------------------------------------------------------- data


def _read_array(path):
  """The numeric array in a .npy or .csv file (float64 or int), checked."""
  import numpy as np
  if not os.path.isfile(path):
    raise UsageError(f"no such file: {path}")
  ext = os.path.splitext(path)[1].lower()
  try:
    if ext == ".npy":
      x = np.load(path, allow_pickle=False)
    elif ext == ".csv":
      x = _read_csv(path)
    else:
      raise UsageError(f"unsupported data file {path!r}: expected a .npy or .csv file, or a toy "
                       f"name")
  except UsageError:
    raise
  except Exception as e:  # noqa: BLE001 - any parse failure is a user error here.
    raise UsageError(f"cannot read {path}: {_one_line(e)}") from e
  if x.dtype == bool or not (np.issubdtype(x.dtype, np.floating)
                             or np.issubdtype(x.dtype, np.integer)):
    raise UsageError(f"{path}: expected numbers, got an array of dtype {x.dtype}")
  if x.ndim < 2:
    raise UsageError(f"{path}: expected an array of rows [N, D] or images [N, H, W(, C)], got "
                     f"shape {list(x.shape)}")
  if x.ndim > 4:
    raise UsageError(f"{path}: arrays of rank {x.ndim} are not supported (shape "
                     f"{list(x.shape)})")
  if x.shape[0] == 0 or x.size == 0:
    raise UsageError(f"{path}: no data rows")
  if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
    bad = int(np.sum(~np.all(np.isfinite(x.reshape(len(x), -1)), axis=1)))
    raise UsageError(f"{path}: {bad} row(s) contain NaN or inf values")
  return x


def _read_csv(path):
  import numpy as np
  with open(path) as f:
    first = f.readline()
  skip = 0
  try:
    [float(v) for v in first.strip().split(",") if v.strip()]
  except ValueError:
    skip = 1  # a header row
  x = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)
  return x


def _is_image(shape):
  return len(shape) == 3


def _load_training_data(spec, num_samples, validation_fraction, seed):
  """(x_train, x_test, info) for a data spec; images are [N, H, W, C]."""
  import numpy as np
  import tfp_flows as tff
  is_name = not os.path.splitext(spec)[1] and not os.path.exists(spec)
  if is_name and spec.strip().lower() == "digits":
    x_train, x_test = tff.datasets.digits(seed=seed)
    info = {"kind": "digits", "name": "digits"}
  elif is_name:
    try:
      toy = tff.datasets.toy(spec.strip())
    except ValueError:
      raise UsageError(f"unknown data {spec!r}: expected a toy name "
                       f"({', '.join(tff.datasets.TOY_NAMES)}), 'digits', or a .npy/.csv file")
    if num_samples < 10:
      raise UsageError(f"--num_samples must be at least 10, got {num_samples}")
    x_train = toy.sample(num_samples, seed=seed)
    x_test = toy.sample(max(1000, num_samples // 10), seed=seed + 1)
    return x_train, x_test, {"kind": "toy", "name": toy.name, "dequantized": False}
  else:
    x = _read_array(spec)
    if x.ndim == 3:
      x = x[..., None]
    if len(x) < 10:
      raise UsageError(f"{spec}: need at least 10 rows to train, got {len(x)}")
    if not 0. < validation_fraction < 1.:
      raise UsageError(f"--validation_fraction must be in (0, 1), got {validation_fraction}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(validation_fraction * len(x))))
    x_train, x_test = x[order[n_test:]], x[order[:n_test]]
    info = {"kind": "file", "name": os.path.abspath(spec)}
  integer = np.issubdtype(x_train.dtype, np.integer)
  info["dequantized"] = bool(integer and x_train.ndim == 4)
  if info["dequantized"]:
    rng = np.random.default_rng(seed + 2)
    x_train = x_train + rng.uniform(size=x_train.shape)
    x_test = x_test + rng.uniform(size=x_test.shape)
  return x_train.astype(np.float32), x_test.astype(np.float32), info


# ------------------------------------------------------------------------------- models


_DEFAULTS = {  # flow hyper-parameters when --num_layers / --hidden_units are not given
    "nice": dict(num_layers=6, hidden_units=[64, 64]),
    "realnvp": dict(num_layers=12, hidden_units=[64, 64]),
    "planar": dict(num_layers=16),
    "masked_conv": dict(num_layers=4),
    "gaussianization": dict(num_layers=6),
    "maf": dict(num_layers=5, hidden_units=[64, 64]),
    "iaf": dict(num_layers=5, hidden_units=[64, 64]),
}
_IMAGE_DEFAULTS = {"realnvp": dict(num_layers=2, hidden_units=32, num_scales=2)}


def _flow_kwargs(flow, event_shape, num_layers, hidden_units):
  image = _is_image(event_shape)
  kwargs = dict((_IMAGE_DEFAULTS.get(flow) if image else None) or _DEFAULTS[flow])
  if num_layers:
    if num_layers < 1:
      raise UsageError(f"--num_layers must be positive, got {num_layers}")
    kwargs["num_layers"] = int(num_layers)
  if hidden_units:
    if "hidden_units" not in kwargs and flow not in ("masked_conv",):
      raise UsageError(f"flow {flow!r} has no networks: --hidden_units does not apply")
    try:
      units = [int(u) for u in str(hidden_units).split(",") if u.strip()]
    except ValueError:
      raise UsageError(f"--hidden_units must be comma-separated ints, got {hidden_units!r}")
    if not units or min(units) < 1:
      raise UsageError(f"--hidden_units must be positive ints, got {hidden_units!r}")
    kwargs["hidden_units"] = units[0] if (image or flow == "masked_conv") else units
  return kwargs


def _normalizer(x_train, image):
  import numpy as np
  if image:
    mean = np.array(x_train.mean(), np.float64)
    std = np.array(x_train.std(), np.float64)
  else:
    mean, std = x_train.mean(0).astype(np.float64), x_train.std(0).astype(np.float64)
  std = np.where(std > 1e-6, std, 1.)
  return mean, std


def build_distribution(config):
  """The distribution of a run's config: standardisation after the flow, over N(0, I)."""
  import numpy as np
  import tensorflow as tf
  import tensorflow_probability as tfp
  import tfp_flows as tff
  tfb = tfp.bijectors
  flow_name, shape = config["flow"], tuple(config["event_shape"])
  if flow_name not in FLOWS:
    raise UsageError(f"unknown flow {flow_name!r}: expected one of {', '.join(FLOWS)}")
  builder = getattr(tff.flows, flow_name, None)
  if builder is None:
    raise UsageError(f"flow {flow_name!r} is not available in this tfp_flows build")
  if _is_image(shape) and flow_name not in IMAGE_FLOWS:
    raise UsageError(f"flow {flow_name!r} takes vectors [D]; the data are images of shape "
                     f"{list(shape)} (image flows: {', '.join(IMAGE_FLOWS)})")
  if not _is_image(shape) and flow_name not in VECTOR_FLOWS:
    raise UsageError(f"flow {flow_name!r} takes images [H, W, C]; the data are vectors of "
                     f"shape {list(shape)}")
  try:
    flow = builder(list(shape), seed=int(config["seed"]), **config["flow_kwargs"])
  except (ValueError, TypeError, NotImplementedError) as e:
    raise UsageError(f"flow {flow_name!r} cannot take data of shape {list(shape)}: "
                     f"{_one_line(e)}") from e
  mean = tf.constant(np.asarray(config["mean"], np.float32))
  std = tf.constant(np.asarray(config["std"], np.float32))
  bijector = tfb.Chain([tfb.Shift(mean), tfb.Scale(std), flow], name="standardized")
  return tff.flows.distribution(bijector, list(shape), dtype=tf.float32)


def _load_run(run_dir):
  """(config, FlowModel with the saved weights) of a run directory."""
  import tfp_flows as tff
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
    for key in ("flow", "event_shape", "flow_kwargs", "mean", "std", "seed"):
      config[key]  # noqa: B018 - presence check
  except (ValueError, KeyError) as e:
    raise UsageError(f"{path} is not a valid run config: {_one_line(e)}") from e
  model = tff.keras.FlowModel(build_distribution(config))
  try:
    model.load_weights(weights)
  except Exception as e:  # noqa: BLE001
    raise UsageError(f"cannot load {weights}: {_one_line(e)}") from e
  return config, model


# ------------------------------------------------------------------------------- commands


def train(data, flow, out, epochs=40, batch_size=256, num_samples=20_000, learning_rate=2e-3,
          num_layers=0, hidden_units="", validation_fraction=0.1, seed=0, verbose=1,
          plots=True):
  """``tfp-flows train``; returns the metrics dict (also written to ``out/metrics.json``)."""
  if not data:
    raise UsageError("--data is required (a toy name, 'digits', or a .npy/.csv file)")
  if not out:
    raise UsageError("--out DIR is required")
  if flow not in FLOWS:
    raise UsageError(f"unknown flow {flow!r}: expected one of {', '.join(FLOWS)}")
  if epochs < 1 or batch_size < 1:
    raise UsageError(f"--epochs and --batch_size must be positive, got {epochs}, {batch_size}")
  if not learning_rate > 0.:
    raise UsageError(f"--learning_rate must be positive, got {learning_rate}")
  if os.path.exists(out) and not os.path.isdir(out):
    raise UsageError(f"--out {out} exists and is not a directory")
  x_train, x_test, info = _load_training_data(data, num_samples, validation_fraction, seed)
  event_shape = list(x_train.shape[1:])
  mean, std = _normalizer(x_train, _is_image(event_shape))
  config = {"flow": flow, "event_shape": event_shape, "seed": int(seed), "data": info,
            "flow_kwargs": _flow_kwargs(flow, event_shape, num_layers, hidden_units),
            "mean": mean.tolist(), "std": std.tolist()}
  distribution = build_distribution(config)  # shape / flow errors surface before any output

  import keras
  import numpy as np
  import tfp_flows as tff
  keras.utils.set_random_seed(seed)
  os.makedirs(out, exist_ok=True)
  num_dims = int(np.prod(event_shape))
  model = tff.keras.FlowModel(distribution, bin_width=1. if info["dequantized"] else None)
  steps = epochs * int(np.ceil(len(x_train) / batch_size))
  # Linear warm-up from learning_rate / 20, then cosine decay to learning_rate / 50.
  warmup = min(200, steps // 10)
  schedule = keras.optimizers.schedules.CosineDecay(
      learning_rate / 20., max(1, steps - warmup), alpha=0.02, warmup_target=learning_rate,
      warmup_steps=warmup)
  model.compile(optimizer=keras.optimizers.Adam(schedule, clipnorm=10.))
  start = time.perf_counter()
  history = model.fit(x_train, batch_size=batch_size, epochs=epochs, shuffle=True,
                      verbose=verbose)
  seconds = time.perf_counter() - start
  model.save_weights(os.path.join(out, "model.weights.h5"))
  with open(os.path.join(out, "config.json"), "w") as f:
    json.dump(config, f, indent=2)

  test_lp = _batched_log_prob(model, x_test)
  metrics = {"flow": flow, "data": info["name"], "event_shape": event_shape,
             "num_train": int(len(x_train)), "num_test": int(len(x_test)), "epochs": epochs,
             "train_seconds": seconds, "num_parameters": int(model.count_params()),
             "train_loss": [float(v) for v in history.history.get("loss", [])],
             "test_nll": float(-np.mean(test_lp)),
             "test_nonfinite": int(np.sum(~np.isfinite(test_lp))),
             "diverged": model.diverged}
  if info["dequantized"]:
    metrics["test_bits_per_dim"] = metrics["test_nll"] / (num_dims * np.log(2.))
  if info["kind"] == "toy":
    toy = tff.datasets.toy(info["name"])
    if toy.has_log_prob:
      metrics["kl_data_model"] = float(np.mean(toy.log_prob(x_test) - test_lp))
      metrics["test_nll_true_density"] = float(-np.mean(toy.log_prob(x_test)))
  with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2)
  if plots:
    metrics["plots"] = _plot(model, x_test, event_shape, out, seed, flow, info["name"])
  summary = f"test NLL {metrics['test_nll']:.4f} nats"
  if "kl_data_model" in metrics:
    summary += f", KL(data || model) {metrics['kl_data_model']:.4f}"
  if "test_bits_per_dim" in metrics:
    summary += f", {metrics['test_bits_per_dim']:.4f} bits/dim"
  print(f"tfp-flows: trained {flow} on {info['name']} in {seconds:.1f}s: {summary}; wrote {out}")
  return metrics


def _batched_log_prob(model, x, batch=4096):
  import numpy as np
  return np.concatenate([np.asarray(model.log_prob(x[i:i + batch]))
                         for i in range(0, len(x), batch)]).astype(np.float64)


def _plot(model, x_test, event_shape, out, seed, flow, name):
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    print("tfp-flows: matplotlib is not installed; no plots written", file=sys.stderr)
    return []
  import numpy as np
  written = []
  n_show = 2000 if not _is_image(event_shape) else 64
  samples = np.asarray(model.sample(n_show, seed=seed))
  if event_shape == [2]:
    lo = np.percentile(x_test, 0.5, axis=0)
    hi = np.percentile(x_test, 99.5, axis=0)
    pad = 0.15 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    grid = np.stack([g0.ravel(), g1.ravel()], 1).astype(np.float32)
    density = np.exp(_batched_log_prob(model, grid)).reshape(g0.shape)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(np.nan_to_num(density), origin="lower", extent=[lo[0], hi[0], lo[1], hi[1]],
              cmap="magma", aspect="auto")
    ax.set_title(f"{flow} density on {name}")
    ax.set_xticks([]); ax.set_yticks([])
    written.append(_save(fig, out, "density.png"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), sharex=True, sharey=True)
    for ax, pts, title in ((axes[0], x_test[:n_show], "data"), (axes[1], samples, "samples")):
      ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
      ax.set_title(title)
      ax.set_xlim(lo[0], hi[0]); ax.set_ylim(lo[1], hi[1])
    written.append(_save(fig, out, "samples.png"))
  elif _is_image(event_shape):
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    for ax, imgs, title in ((axes[0], x_test[:64], "data"), (axes[1], samples, "samples")):
      ax.imshow(_grid(imgs, 8), cmap="gray")
      ax.set_title(title); ax.axis("off")
    written.append(_save(fig, out, "samples.png"))
  plt.close("all")
  return written


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


def _save(fig, out, name):
  path = os.path.join(out, name)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  return path


def sample(run_dir, n, out, seed=0):
  """``tfp-flows sample``: ``n`` samples of a saved run into ``out`` (.npy)."""
  import numpy as np
  if not out or not out.endswith(".npy"):
    raise UsageError(f"--out must name a .npy file, got {out!r}")
  if n < 1:
    raise UsageError(f"--n must be positive, got {n}")
  _, model = _load_run(run_dir)
  x = np.asarray(model.sample(n, seed=seed))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  np.save(out, x)
  print(f"tfp-flows: wrote {n} samples of shape {list(x.shape[1:])} to {out}")
  return x


def logprob(run_dir, data, out=None):
  """``tfp-flows logprob``: log-densities (nats) of the rows of ``data`` under a saved run."""
  import numpy as np
  if not data:
    raise UsageError("--data FILE is required (.npy or .csv)")
  if out and not out.endswith(".npy"):
    raise UsageError(f"--out must name a .npy file, got {out!r}")
  config, model = _load_run(run_dir)
  x = _read_array(data)
  shape = list(config["event_shape"])
  if _is_image(shape) and x.ndim == 3:
    x = x[..., None]
  if list(x.shape[1:]) != shape:
    raise UsageError(f"{data}: rows of shape {list(x.shape[1:])} do not match the run's event "
                     f"shape {shape}")
  lp = _batched_log_prob(model, x.astype(np.float32))
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    np.save(out, lp)
  finite = np.isfinite(lp)
  print(f"tfp-flows: mean log_prob {np.mean(lp[finite]) if finite.any() else float('nan'):.4f} "
        f"nats over {int(finite.sum())} of {len(lp)} rows"
        + (f"; wrote {out}" if out else ""))
  return lp


# ------------------------------------------------------------------------------- entry


def main(argv):
  """Dispatches ``argv[1]`` (after absl has parsed the flags) to a command."""
  args = argv[1:]
  if len(args) != 1 or args[0] not in COMMANDS:
    got = " ".join(args) if args else "nothing"
    raise UsageError(f"expected one command ({', '.join(COMMANDS)}), got {got}")
  command = args[0]
  if command == "train":
    train(FLAGS.data, FLAGS.flow, FLAGS.out, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
          num_samples=FLAGS.num_samples, learning_rate=FLAGS.learning_rate,
          num_layers=FLAGS.num_layers, hidden_units=FLAGS.hidden_units,
          validation_fraction=FLAGS.validation_fraction, seed=FLAGS.seed,
          verbose=FLAGS.verbose, plots=FLAGS.plots)
  elif command == "sample":
    sample(FLAGS.run, FLAGS.n, FLAGS.out, seed=FLAGS.seed)
  else:
    logprob(FLAGS.run, FLAGS.data, FLAGS.out)


def _fail(message):
  print(f"tfp-flows: error: {_one_line(message)}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv):
  FLAGS.unparse_flags()  # defaults again: run() may be called more than once in a process
  try:
    return FLAGS(argv)
  except flags.Error as e:
    _fail(e)


def _main_with_errors(argv):
  try:
    main(argv)
  except UsageError as e:
    _fail(e)


def run(argv=None):
  """The console entry point (``tfp-flows``)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  argv = list(sys.argv if argv is None else argv)
  if len(argv) > 1 and argv[1] in ("-h", "--help", "help"):
    print(__doc__)
    return
  app.run(_main_with_errors, argv=argv, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
