"""The ``tfp-flows`` command: train / sample / logprob on tiny budgets, and every failure path.

In-process calls (``cli.run``) check results and messages; subprocesses check what is about the
process: exit status, that stderr holds only our line, and that TensorFlow is not imported
before a bad call is reported.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfp_flows as tff
from tfp_flows import cli
from tfp_flows import cli_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--epochs", "2", "--batch_size", "128", "--num_layers", "2", "--hidden_units", "8",
        "--verbose", "0"]


def _run(capsys, *args):
  """Runs the command in-process: (exit code, stdout, stderr)."""
  with pytest.raises(SystemExit) as e:
    cli.run(["tfp-flows", *args])
  out, err = capsys.readouterr()
  return e.value.code or 0, out, err


def _our_lines(err):
  # In-process, TensorFlow (imported by conftest) may log to the real stderr; ours is the last.
  return [line for line in err.strip().splitlines() if line.startswith("tfp-flows:")]


def _assert_error(capsys, *args, match, code=2):
  status, _, err = _run(capsys, *args)
  lines = _our_lines(err)
  assert status == code, (status, err)
  assert len(lines) == 1 and lines[0].startswith("tfp-flows: error: "), err
  assert match in lines[0], lines[0]
  return lines[0]


def _strict_json(path):
  def bad(constant):
    raise ValueError(f"{path} holds {constant}: not strict JSON")
  with open(path) as f:
    return json.load(f, parse_constant=bad)


def _subprocess(*args, env=None, script=None):
  """``python -m tfp_flows.cli ARGS`` (or a script) in a fresh process, from the repository."""
  command = [sys.executable, "-c", script] if script else [sys.executable, "-m",
                                                          "tfp_flows.cli", *args]
  env = dict(os.environ, **(env or {}))
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the command silences TensorFlow by itself
  return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env,
                        timeout=300)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
  """A run trained once for the tests that only read it."""
  run = str(tmp_path_factory.mktemp("toy") / "run")
  with pytest.raises(SystemExit) as e:
    cli.run(["tfp-flows", "train", "--data", "8gaussians", "--flow", "realnvp", "--out", run,
             "--num_samples", "600", "--distribute", "mirrored", *TINY])
  assert (e.value.code or 0) == 0
  return run


# ------------------------------------------------------------------------------- results


def test_train_sample_logprob_on_a_toy(toy_run, tmp_path, capsys):
  for name in ("model.weights.h5", "config.json", "metrics.json", "density.png", "samples.png"):
    assert os.path.getsize(os.path.join(toy_run, name)) > 0, name
  assert not [n for n in os.listdir(toy_run) if n.startswith(".")]  # no temporary left
  metrics = _strict_json(os.path.join(toy_run, "metrics.json"))
  assert len(metrics["train_nll"]) == 2 and np.isfinite(metrics["test_nll"])
  assert np.isfinite(metrics["kl_data_model"]) and metrics["compile_seconds"] > 0
  assert metrics["distribute"] == "mirrored" and metrics["num_replicas"] >= 1
  samples = str(tmp_path / "s.npy")
  code, out, _ = _run(capsys, "sample", "--run", toy_run, "--n", "7", "--out", samples)
  x = np.load(samples)
  assert code == 0 and x.shape == (7, 2) and np.all(np.isfinite(x))
  # The saved model is a normalised density in the data's units (the standardisation is part of
  # it): integrate the CLI's log-densities over a grid that holds the mass.
  g = np.linspace(-12., 12., 241)
  grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2).astype(np.float32)
  np.save(tmp_path / "grid.npy", grid)
  code, out, _ = _run(capsys, "logprob", "--run", toy_run, "--data", str(tmp_path / "grid.npy"),
                      "--out", str(tmp_path / "lp.npy"))
  lp = np.load(tmp_path / "lp.npy")
  assert code == 0 and lp.shape == (len(grid),) and "mean log_prob" in out
  mass = np.exp(lp).sum() * (g[1] - g[0]) ** 2
  assert abs(mass - 1.) < 0.03, mass
  # The held-out NLL of metrics.json is what logprob gives on the same rows.
  run = cli.Run.load(toy_run)
  assert run.log_prob(grid[:5]) == pytest.approx(lp[:5], abs=1e-5)


def test_runs_record_added_builder_arguments_and_old_runs_rebuild_their_map(toy_run):
  """A builder argument added after runs were saved (the coupling masks, the spline's
  orientation) must not change what an old run loads into: new runs record today's values,
  configs without them rebuild the values those runs were trained with."""
  config = _strict_json(os.path.join(toy_run, "config.json"))
  assert config["flow_kwargs"]["mask"] == "alternating"
  old = dict(config, flow="nsf", event_shape=[4], flow_kwargs={"num_layers": 2,
                                                                "hidden_units": [8]})
  couplings = [b for b in cli.build_distribution(old).bijector.bijectors
               if isinstance(b, tff.bijectors.SplineCoupling)]
  assert couplings and all(b.transformer.direction == "forward" and b.kept_params is None
                           and tuple(b.mask) in {(1, 1, 0, 0), (0, 0, 1, 1)}
                           for b in couplings)
  new = dict(old, flow_kwargs=dict(old["flow_kwargs"], mask="alternating",
                                   spline_direction="inverse", transform_kept=False))
  couplings = [b for b in cli.build_distribution(new).bijector.bijectors
               if isinstance(b, tff.bijectors.SplineCoupling)]
  assert all(b.transformer.direction == "inverse" for b in couplings)
  # RealNVP's affine map: old vector runs rebuild base -> data, old image runs still load.
  old_realnvp = dict(old, flow="realnvp")
  couplings = [b for b in cli.build_distribution(old_realnvp).bijector.bijectors
               if isinstance(b, tff.bijectors.AffineCoupling)]
  assert couplings and all(b.transformer.direction == "forward" for b in couplings)
  old_image = dict(old, flow="realnvp", event_shape=[4, 4, 1],
                   flow_kwargs={"num_layers": 1, "hidden_units": 4})
  assert cli.build_distribution(old_image).event_shape == [4, 4, 1]


def test_train_csv_with_header_and_logprob_csv(tmp_path, capsys):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 3)) @ np.array([[1., 0., 0.], [0.5, 1., 0.], [0., 0.3, 2.]]) + 5.
  path = tmp_path / "data.csv"
  np.savetxt(path, x, delimiter=",", header="a,b,c", comments="")
  run = str(tmp_path / "run")
  code, _, _ = _run(capsys, "train", "--data", str(path), "--flow", "maf", "--out", run,
                    "--noplots", *TINY)
  assert code == 0
  with open(os.path.join(run, "config.json")) as f:
    assert json.load(f)["event_shape"] == [3]
  code, out, _ = _run(capsys, "logprob", "--run", run, "--data", str(path))
  assert code == 0 and "over 200 of 200 rows" in out
  # Two epochs barely move the flow: the density is near the fitted standardised Gaussian.
  mean_lp = float(out.split("mean log_prob ")[1].split()[0])
  gauss = -0.5 * 3 * np.log(2 * np.pi * np.e) - np.sum(np.log(x.std(0)))
  assert abs(mean_lp - gauss) < 0.5, (mean_lp, gauss)


def test_data_far_from_zero_are_standardised_in_float64(tmp_path, capsys):
  # Squares of such data overflow float32 (the old standardisation gave "test NLL inf").
  rng = np.random.default_rng(0)
  x = 1e20 + rng.normal(size=(400, 2)) * np.array([1e18, 3e18])
  np.save(tmp_path / "far.npy", x)
  run = str(tmp_path / "run")
  code, _, _ = _run(capsys, "train", "--data", str(tmp_path / "far.npy"), "--flow", "maf",
                    "--out", run, "--noplots", *TINY)
  assert code == 0
  metrics = _strict_json(os.path.join(run, "metrics.json"))
  gauss = np.log(2 * np.pi * np.e) + np.log(1e18) + np.log(3e18)  # NLL of the fitted Gaussian
  assert abs(metrics["test_nll"] - gauss) < 1., (metrics["test_nll"], gauss)
  code, _, _ = _run(capsys, "sample", "--run", run, "--n", "500", "--out",
                    str(tmp_path / "s.npy"))
  s = np.load(tmp_path / "s.npy")
  assert code == 0 and s.dtype == np.float64
  z = (s - 1e20) / np.array([1e18, 3e18])  # back in units of the data's spread
  assert np.all(np.abs(z.mean(0)) < 0.3) and np.all(np.abs(z.std(0) - 1.) < 0.3), z.std(0)


def _digits_like(n, h, w, seed=0):
  """uint8 images [n, h, w] with strokes on a dark background (like MNIST)."""
  rng = np.random.default_rng(seed)
  images = np.zeros((n, h, w), np.uint8)
  for img in images:
    r = rng.integers(1, h - 1)
    img[r - 1:r + 1, 1:w - 1] = rng.integers(128, 256)
    img[1:h - 1, rng.integers(1, w - 1)] = 255
  return images


def test_train_uint8_images_from_npz_writes_bits_per_dim_and_a_sample_grid(tmp_path, capsys):
  np.savez(tmp_path / "img.npz", images=_digits_like(40, 4, 4), labels=np.arange(40))
  data = str(tmp_path / "img.npz")
  _assert_error(capsys, "train", "--data", data, "--out", str(tmp_path / "x"),
                match="holds 2 arrays (images, labels); choose one with --key")
  run = str(tmp_path / "run")
  code, out, _ = _run(capsys, "train", "--data", data, "--key", "images", "--flow",
                      "masked_conv", "--out", run, "--epochs", "1", "--batch_size", "16",
                      "--num_layers", "1", "--hidden_units", "4", "--verbose", "0")
  assert code == 0 and "bits/dim" in out
  metrics = _strict_json(os.path.join(run, "metrics.json"))
  assert metrics["event_shape"] == [4, 4, 1] and np.isfinite(metrics["test_bits_per_dim"])
  # bits/dim of the dequantised pixels (bin width 1): NLL / (D ln 2).
  assert metrics["test_bits_per_dim"] == pytest.approx(metrics["test_nll"] / (16 * np.log(2)))
  with open(os.path.join(run, "config.json")) as f:
    assert json.load(f)["preprocessing"]["num_bins"] == 256
  assert os.path.getsize(os.path.join(run, "samples.png")) > 0
  assert not os.path.exists(os.path.join(run, "density.png"))
  code, out, _ = _run(capsys, "logprob", "--run", run, "--data", data, "--key", "images",
                      "--out", str(tmp_path / "lp.npy"))
  assert code == 0 and "over 40 of 40 rows" in out
  # Integer images are dequantised with --seed's noise: the held-out rows score as in training.
  lp = np.load(tmp_path / "lp.npy")
  bpd = -lp.mean() / (16 * np.log(2))
  assert np.all(np.isfinite(lp)) and abs(bpd - metrics["test_bits_per_dim"]) < 1., bpd


def test_image_levels_are_inferred_or_given(tmp_path):
  rng = np.random.default_rng(1)
  for array, flag, levels in ((rng.integers(0, 17, size=(20, 4, 4)), 0, 17),
                              (rng.integers(0, 17, size=(20, 4, 4)).astype(np.uint8), 0, 256),
                              (rng.integers(0, 17, size=(20, 4, 4, 1)), 32, 32)):
    np.save(tmp_path / "img.npy", array)
    data = cli_data.load_training_data(str(tmp_path / "img.npy"), num_bins=flag)
    assert data.info["num_bins"] == levels and data.event_shape == [4, 4, 1]
    assert data.x_train.dtype == np.float32 and np.all(data.x_train < array.max() + 1)
    assert np.all(data.x_train != np.floor(data.x_train))  # dequantised
  with pytest.raises(cli.UsageError, match="--num_bins 10 does not cover the images' levels"):
    cli_data.load_training_data(str(tmp_path / "img.npy"), num_bins=10)


def test_preprocessing_of_vectors_in_float64_and_discrete_columns_warn(tmp_path):
  rng = np.random.default_rng(0)
  x = np.c_[rng.normal(size=200) * 1e-9, rng.integers(0, 3, size=200)]  # tiny units; 3 values
  np.save(tmp_path / "x.npy", x)
  data = cli_data.load_training_data(str(tmp_path / "x.npy"))
  with pytest.warns(RuntimeWarning, match=r"column\(s\) 1 take only a few distinct values"):
    pre = cli_data.Preprocessing.fit(data)
  z = pre.to_model(data.x_train)
  assert z.dtype == np.float32
  np.testing.assert_allclose(z.mean(0), 0., atol=1e-6)
  np.testing.assert_allclose(z.std(0), 1., rtol=1e-5)  # data in 1e-9 units are not "constant"
  # Back to data units, to float32 precision in units of each column's spread.
  np.testing.assert_allclose((pre.from_model(z) - data.x_train) / pre.std, 0., atol=1e-6)
  assert pre.log_prob(np.zeros(1), [2])[0] == pytest.approx(-np.sum(np.log(pre.std)))


@pytest.mark.slow
@pytest.mark.parametrize("flow", ["realnvp", "masked_conv"])
def test_28x28_images_train_with_each_image_flow(tmp_path, capsys, flow):
  np.save(tmp_path / "img.npy", _digits_like(48, 28, 28))
  run = str(tmp_path / "run")
  code, out, _ = _run(capsys, "train", "--data", str(tmp_path / "img.npy"), "--flow", flow,
                      "--out", run, "--epochs", "1", "--batch_size", "16", "--num_layers", "1",
                      "--hidden_units", "4", "--verbose", "0")
  assert code == 0 and "bits/dim" in out
  metrics = _strict_json(os.path.join(run, "metrics.json"))
  assert np.isfinite(metrics["test_bits_per_dim"]) and metrics["event_shape"] == [28, 28, 1]


# ------------------------------------------------------------------------------- failures


@pytest.fixture
def bad_files(tmp_path):
  rng = np.random.default_rng(0)
  paths = {}
  (tmp_path / "corrupt.npy").write_bytes(b"this is not a numpy file")
  (tmp_path / "words.csv").write_text("a,b\n1,2\nx,y\n")
  nan = rng.normal(size=(50, 2))
  nan[3, 1] = np.nan
  np.save(tmp_path / "nan.npy", nan)
  np.save(tmp_path / "flat.npy", np.arange(50.))
  np.save(tmp_path / "one_col.npy", rng.normal(size=(50, 1)))
  np.save(tmp_path / "img.npy", rng.uniform(size=(50, 4, 4, 1)))
  np.save(tmp_path / "vec3.npy", rng.normal(size=(5, 3)))
  np.save(tmp_path / "rows12.npy", rng.normal(size=(12, 2)))
  const = rng.normal(size=(50, 3))
  const[:, 1] = 4.
  np.save(tmp_path / "const_col.npy", const)
  np.save(tmp_path / "const.npy", np.full((50, 2), 7.))
  np.save(tmp_path / "neg.npy", -np.ones((50, 4, 4), np.int64))
  np.save(tmp_path / "strings.npy", np.array([["a", "b"]] * 20))
  np.savez(tmp_path / "two.npz", a=const, b=const)
  np.save(tmp_path / "rank5.npy", np.zeros((10, 2, 2, 2, 2)))
  (tmp_path / "data.txt").write_text("1,2\n")
  (tmp_path / "a_file").write_text("x")
  for name in ("corrupt.npy", "words.csv", "nan.npy", "flat.npy", "one_col.npy", "img.npy",
               "vec3.npy", "rows12.npy", "const_col.npy", "const.npy", "neg.npy", "strings.npy",
               "two.npz", "rank5.npy", "data.txt", "a_file"):
    paths[os.path.splitext(name)[0]] = str(tmp_path / name)
  paths["missing"] = str(tmp_path / "missing.npy")
  paths["out"] = str(tmp_path / "out")
  paths["tmp"] = str(tmp_path)
  return paths


@pytest.mark.parametrize("args, match", [
    (["train", "--data", "nosuchtoy"], "unknown data 'nosuchtoy'"),
    (["train", "--data", "8gaussians", "--flow", "nosuchflow"], "unknown flow 'nosuchflow'"),
    (["train", "--data", "{missing}"], "no such file"),
    (["train", "--data", "{tmp}"], "is not a file"),
    (["train", "--data", "{corrupt}"], "cannot read"),
    (["train", "--data", "{words}"], "cannot read"),
    (["train", "--data", "{data}"], "expected a .npy, .npz or .csv file"),
    (["train", "--data", "{nan}"], "1 row(s) contain NaN or inf values (rows 3)"),
    (["train", "--data", "{flat}"], "expected an array of rows"),
    (["train", "--data", "{rank5}"], "rank 5 are not supported"),
    (["train", "--data", "{strings}"], "expected numbers"),
    (["train", "--data", "{const_col}"], "column(s) 1 (= 4) are constant"),
    (["train", "--data", "{const}"], "every column is constant"),
    (["train", "--data", "{neg}", "--flow", "masked_conv"], "levels 0..K-1, found -1"),
    (["train", "--data", "{two}"], "holds 2 arrays (a, b); choose one with --key"),
    (["train", "--data", "{two}", "--key", "c"], "has no array 'c'; its arrays: a, b"),
    (["train", "--data", "{nan}", "--key", "a"], "--key applies to .npz files only"),
    (["train", "--data", "{img}", "--flow", "maf"], "takes vectors [D]"),
    (["train", "--data", "8gaussians", "--flow", "masked_conv"], "takes images [H, W, C]"),
    (["train", "--data", "8gaussians", "--flow", "planar", "--hidden_units", "8"], "no networks"),
    (["train", "--data", "8gaussians", "--hidden_units", "a,b"], "comma-separated ints"),
    (["train", "--data", "8gaussians", "--hidden_units", "0"], "positive ints"),
    (["train", "--data", "8gaussians", "--epochs", "0"], "--epochs must be an int >= 1"),
    (["train", "--data", "8gaussians", "--batch_size", "-3"], "--batch_size must be an int"),
    (["train", "--data", "8gaussians", "--learning_rate", "inf"], "--learning_rate must be a "
                                                                   "finite number > 0, got inf"),
    (["train", "--data", "8gaussians", "--learning_rate", "nan"], "got nan"),
    (["train", "--data", "8gaussians", "--learning_rate", "0"], "finite number > 0"),
    (["train", "--data", "8gaussians", "--validation_fraction", "1.5"],
     "--validation_fraction must be a finite number > 0 and < 1, got 1.5"),
    (["train", "--data", "{nan}", "--validation_fraction", "0"], "--validation_fraction"),
    (["train", "--data", "{rows12}", "--validation_fraction", "0.5"], "leaves 6 training rows"),
    (["train", "--data", "digits", "--validation_fraction", "0.999"], "training rows; at least"),
    (["train", "--data", "8gaussians", "--num_samples", "5"], "--num_samples must be an int"),
    (["train", "--data", "8gaussians", "--seed", "-1"], "--seed must be an int >= 0"),
    (["train", "--data", "8gaussians", "--verbose", "7"], "--verbose must be an int"),
    (["train", "--data", "8gaussians", "--num_bins", "4"], "--num_bins applies to integer"),
    (["train", "--data", "8gaussians", "--distribute", "multi_worker"], "needs the TF_CONFIG"),
    (["train", "--data", "8gaussians", "--distribute", "everywhere"], "distribute"),
    (["train", "--flow", "realnvp"], "--data is required"),
    (["train", "--data", "8gaussians", "--nosuchflag", "1"], "nosuchflag"),
    (["train", "--data", "8gaussians", "--epochs", "many"], "epochs"),
    (["train", "--data", "8gaussians", "--n", "5"], "--n does not apply to 'train'"),
    (["fly"], "expected one command"),
    ([], "expected one command"),
    (["train", "sample"], "expected one command"),
    (["sample", "--run", "{tmp}", "--out", "{out}.npy"], "is not a tfp-flows run"),
    (["sample", "--run", "{tmp}", "--out", "{out}.txt"], "must name a .npy file"),
    (["sample", "--run", "{tmp}", "--out", "{out}.npy", "--n", "0"], "--n must be an int >= 1"),
    (["sample", "--run", "{tmp}", "--out", "{out}.npy", "--temperature", "inf"],
     "--temperature must be a finite number > 0"),
    (["sample", "--run", "{tmp}", "--out", "{out}.npy", "--epochs", "3"],
     "--epochs does not apply to 'sample'"),
    (["sample", "--out", "{out}.npy"], "--run DIR is required"),
    (["logprob", "--run", "{tmp}", "--data", "{missing}"], "is not a tfp-flows run"),
    (["logprob", "--run", "{tmp}"], "--data FILE is required"),
])
def test_usage_errors_exit_2_with_one_line_and_write_nothing(capsys, bad_files, args, match):
  args = [a.format(**bad_files) for a in args]
  if args and args[0] == "train" and "--out" not in args:
    args += ["--out", bad_files["out"]]
  _assert_error(capsys, *args, match=match)
  assert not os.path.exists(bad_files["out"])  # nothing written on a user error


@pytest.mark.parametrize("command", ["train", "sample", "logprob"])
@pytest.mark.parametrize("where", ["/proc/x", "{a_file}/x"])
def test_unwritable_out_is_one_line_for_every_command(toy_run, capsys, bad_files, command,
                                                      where):
  out = where.format(**bad_files)
  args = {"train": ["train", "--data", "8gaussians", "--out", out],
          "sample": ["sample", "--run", toy_run, "--out", out + ".npy"],
          "logprob": ["logprob", "--run", toy_run, "--data", bad_files["vec3"], "--out",
                      out + ".npy"]}[command]
  if command == "logprob":
    np.save(bad_files["vec3"], np.zeros((4, 2)))
  _assert_error(capsys, *args, match=f"cannot write to --out {args[-1]}")


def test_divergence_is_an_error_and_an_earlier_run_stays_usable(toy_run, tmp_path, capsys):
  before = {n: os.path.getmtime(os.path.join(toy_run, n)) for n in os.listdir(toy_run)}
  line = _assert_error(capsys, "train", "--data", "8gaussians", "--flow", "nice", "--out",
                       toy_run, "--num_samples", "600", "--learning_rate", "1e30", *TINY,
                       match="training diverged", code=1)
  assert "--learning_rate" in line and "nothing was written" in line
  assert {n: os.path.getmtime(os.path.join(toy_run, n)) for n in os.listdir(toy_run)} == before
  code, _, _ = _run(capsys, "sample", "--run", toy_run, "--n", "3", "--out",
                    str(tmp_path / "s.npy"))
  assert code == 0  # the earlier run is intact


def test_logprob_shape_mismatch_corrupt_run_and_out_of_range_rows(toy_run, tmp_path, capsys,
                                                                   bad_files):
  _assert_error(capsys, "logprob", "--run", toy_run, "--data", bad_files["vec3"],
                match="do not match the run's event shape [2]")
  # Rows beyond float32 after standardisation have density 0 (-inf), said so, not NaN.
  np.save(tmp_path / "far.npy", np.array([[0., 0.], [1e300, 0.]]))
  code, out, _ = _run(capsys, "logprob", "--run", toy_run, "--data", str(tmp_path / "far.npy"),
                      "--out", str(tmp_path / "lp.npy"))
  lp = np.load(tmp_path / "lp.npy")
  assert code == 0 and np.isfinite(lp[0]) and lp[1] == -np.inf and "1 outside" in out
  broken = tmp_path / "broken"
  broken.mkdir()
  for name in ("config.json", "model.weights.h5"):
    with open(os.path.join(toy_run, name), "rb") as src:
      (broken / name).write_bytes(src.read())
  (broken / "config.json").write_text("{not json")
  _assert_error(capsys, "sample", "--run", str(broken), "--out", str(tmp_path / "s.npy"),
                match="is not a valid run config")
  # A run written by the first CLI (standardisation at the config's top level) still loads.
  config = json.load(open(os.path.join(toy_run, "config.json")))
  config.update(config.pop("preprocessing"))
  (broken / "config.json").write_text(json.dumps(config))
  grid = np.random.default_rng(0).normal(size=(5, 2))
  np.testing.assert_allclose(cli.Run.load(str(broken)).log_prob(grid),
                             cli.Run.load(toy_run).log_prob(grid), rtol=1e-6)
  (broken / "model.weights.h5").write_bytes(b"garbage")
  _assert_error(capsys, "sample", "--run", str(broken), "--out", str(tmp_path / "s.npy"),
                match="cannot load")
  assert not os.path.exists(tmp_path / "s.npy")


# ------------------------------------------------------------------------------- the process


def test_version(capsys):
  from tfp_flows import __version__
  code, out, _ = _run(capsys, "--version")
  assert code == 0 and out.strip() == f"tfp-flows {__version__}"


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["train", "--help"], ["sample", "--help"],
                                  ["logprob", "--help"], ["help", "train"]])
def test_help_is_plain_text_and_exits_0(args):
  proc = _subprocess(*args)
  assert proc.returncode == 0 and proc.stderr == "", proc.stderr
  text = proc.stdout
  assert "``" not in text and "--helpfull" not in text and "absl" not in text
  if args[0] in cli.COMMANDS or args[0] == "help":
    command = args[-1] if args[0] == "help" else args[0]
    assert text.startswith(f"usage: tfp-flows {command} ")
    for name in cli._COMMAND_FLAGS[command]:  # pylint: disable=protected-access
      assert f"  --{name} " in text, name
  else:
    assert text.startswith("usage: tfp-flows COMMAND") and "logprob" in text


def test_bad_calls_fail_before_tensorflow_is_imported_with_only_our_line(tmp_path):
  script = textwrap.dedent(f"""
      import sys
      from tfp_flows import cli
      for args in (["train", "--data", "missing.npy", "--out", {str(tmp_path / "o")!r}],
                   ["train", "--data", "8gaussians", "--learning_rate", "inf", "--out", "o"],
                   ["sample", "--run", {str(tmp_path)!r}, "--out", "s.npy"], ["--help"]):
        try:
          cli.run(["tfp-flows"] + args)
        except SystemExit as e:
          print(e.code)
      print("tensorflow" in sys.modules)
  """)
  proc = _subprocess(script=script)
  results = [t for t in proc.stdout.split() if t in ("0", "1", "2", "True", "False")]
  assert results == ["2", "2", "2", "0", "False"], proc.stdout
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 3 and all(line.startswith("tfp-flows: error: ") for line in lines), lines
  assert not os.path.exists(tmp_path / "o")


def test_an_error_after_tensorflow_loads_is_still_only_our_line(bad_files):
  # The flow rejects the shape only once TensorFlow is imported: its start-up lines must not
  # show (they are printed before TF_CPP_MIN_LOG_LEVEL is read).
  proc = _subprocess("train", "--data", bad_files["one_col"], "--flow", "realnvp", "--out",
                     bad_files["out"])
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
  assert proc.stderr.startswith("tfp-flows: error: flow 'realnvp' cannot take data of shape "
                                "[1]")
  assert not os.path.exists(bad_files["out"])


def test_installed_entry_point_reports_errors(tmp_path):
  exe = os.path.join(os.path.dirname(sys.executable), "tfp-flows")
  assert os.path.isfile(exe), "the tfp-flows entry point is not installed (pip install -e .)"
  proc = subprocess.run([exe, "train", "--data", "nosuchtoy", "--flow", "realnvp", "--out",
                         str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith("tfp-flows: error: unknown data")
