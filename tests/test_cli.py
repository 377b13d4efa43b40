"""The ``tfp-flows`` command: train / sample / logprob on tiny budgets, and every error path."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfp_flows import cli

TINY = ["--epochs", "2", "--batch_size", "128", "--num_layers", "2", "--hidden_units", "8",
        "--verbose", "0"]


def _run(capsys, *args):
  """Runs the command in-process: (exit code, stdout, stderr)."""
  with pytest.raises(SystemExit) as e:
    cli.run(["tfp-flows", *args])
  out, err = capsys.readouterr()
  return e.value.code or 0, out, err


def _assert_usage_error(capsys, *args, match):
  code, _, err = _run(capsys, *args)
  lines = err.strip().splitlines()
  assert code == 2, (code, err)
  assert len(lines) == 1 and lines[0].startswith("tfp-flows: error: "), err
  assert match in lines[0], lines[0]
  return lines[0]


def test_train_sample_logprob_on_a_toy(tmp_path, capsys):
  run = str(tmp_path / "run")
  code, out, _ = _run(capsys, "train", "--data", "8gaussians", "--flow", "realnvp", "--out", run,
                      "--num_samples", "600", *TINY)
  assert code == 0 and "KL(data || model)" in out
  for name in ("model.weights.h5", "config.json", "metrics.json", "density.png", "samples.png"):
    assert os.path.getsize(os.path.join(run, name)) > 0, name
  with open(os.path.join(run, "metrics.json")) as f:
    metrics = json.load(f)
  assert len(metrics["train_loss"]) == 2 and np.isfinite(metrics["test_nll"])
  assert np.isfinite(metrics["kl_data_model"]) and metrics["test_nonfinite"] == 0

  samples = str(tmp_path / "s.npy")
  code, _, _ = _run(capsys, "sample", "--run", run, "--n", "7", "--out", samples)
  x = np.load(samples)
  assert code == 0 and x.shape == (7, 2) and np.all(np.isfinite(x))

  # The saved model is a normalised density in the data's units (the standardisation is part of
  # it): integrate the CLI's log-densities over a grid that holds the mass.
  g = np.linspace(-12., 12., 241)
  grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2).astype(np.float32)
  np.save(tmp_path / "grid.npy", grid)
  code, out, _ = _run(capsys, "logprob", "--run", run, "--data", str(tmp_path / "grid.npy"),
                      "--out", str(tmp_path / "lp.npy"))
  lp = np.load(tmp_path / "lp.npy")
  assert code == 0 and lp.shape == (len(grid),) and "mean log_prob" in out
  mass = np.exp(lp).sum() * (g[1] - g[0]) ** 2
  assert abs(mass - 1.) < 0.03, mass


def test_train_csv_with_header_and_logprob_csv(tmp_path, capsys):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 3)) @ np.array([[1., 0., 0.], [0.5, 1., 0.], [0., 0.3, 2.]]) + 5.
  path = tmp_path / "data.csv"
  np.savetxt(path, x, delimiter=",", header="a,b,c", comments="")
  run = str(tmp_path / "run")
  code, _, _ = _run(capsys, "train", "--data", str(path), "--flow", "maf", "--out", run, *TINY)
  assert code == 0
  with open(os.path.join(run, "config.json")) as f:
    assert json.load(f)["event_shape"] == [3]
  code, out, _ = _run(capsys, "logprob", "--run", run, "--data", str(path))
  assert code == 0 and "over 200 of 200 rows" in out
  # Two epochs barely move the flow: the density is near the fitted standardised Gaussian.
  mean_lp = float(out.split("mean log_prob ")[1].split()[0])
  gauss = -0.5 * 3 * np.log(2 * np.pi * np.e) - np.sum(np.log(x.std(0)))
  assert abs(mean_lp - gauss) < 0.5, (mean_lp, gauss)


def test_train_integer_images_writes_a_sample_grid(tmp_path, capsys):
  rng = np.random.default_rng(1)
  images = rng.integers(0, 17, size=(40, 4, 4)).astype(np.int64)
  np.save(tmp_path / "img.npy", images)
  run = str(tmp_path / "run")
  code, out, _ = _run(capsys, "train", "--data", str(tmp_path / "img.npy"), "--flow",
                      "masked_conv",
                      "--out", run, "--epochs", "1", "--batch_size", "16", "--num_layers", "1",
                      "--hidden_units", "4", "--verbose", "0")
  assert code == 0 and "bits/dim" in out
  with open(os.path.join(run, "metrics.json")) as f:
    metrics = json.load(f)
  assert metrics["event_shape"] == [4, 4, 1] and np.isfinite(metrics["test_bits_per_dim"])
  assert os.path.getsize(os.path.join(run, "samples.png")) > 0
  assert not os.path.exists(os.path.join(run, "density.png"))
  code, _, _ = _run(capsys, "sample", "--run", run, "--n", "3", "--out", str(tmp_path / "s.npy"))
  assert code == 0 and np.load(tmp_path / "s.npy").shape == (3, 4, 4, 1)


@pytest.fixture
def bad_files(tmp_path):
  paths = {}
  (tmp_path / "corrupt.npy").write_bytes(b"this is not a numpy file")
  paths["corrupt"] = str(tmp_path / "corrupt.npy")
  (tmp_path / "words.csv").write_text("a,b\n1,2\nx,y\n")
  paths["words"] = str(tmp_path / "words.csv")
  nan = np.random.default_rng(0).normal(size=(50, 2))
  nan[3, 1] = np.nan
  np.save(tmp_path / "nan.npy", nan)
  paths["nan"] = str(tmp_path / "nan.npy")
  np.save(tmp_path / "flat.npy", np.arange(50.))
  paths["flat"] = str(tmp_path / "flat.npy")
  np.save(tmp_path / "one_col.npy", np.random.default_rng(0).normal(size=(50, 1)))
  paths["one_col"] = str(tmp_path / "one_col.npy")
  np.save(tmp_path / "img.npy", np.random.default_rng(0).uniform(size=(50, 4, 4, 1)))
  paths["img"] = str(tmp_path / "img.npy")
  np.save(tmp_path / "vec3.npy", np.random.default_rng(0).normal(size=(5, 3)))
  paths["vec3"] = str(tmp_path / "vec3.npy")
  (tmp_path / "data.txt").write_text("1,2\n")
  paths["txt"] = str(tmp_path / "data.txt")
  paths["missing"] = str(tmp_path / "missing.npy")
  paths["out"] = str(tmp_path / "out")
  paths["tmp"] = str(tmp_path)
  return paths


@pytest.mark.parametrize("args, match", [
    (["train", "--data", "nosuchtoy", "--flow", "realnvp"], "unknown data 'nosuchtoy'"),
    (["train", "--data", "8gaussians", "--flow", "glow"], "unknown flow 'glow'"),
    (["train", "--data", "{missing}", "--flow", "realnvp"], "no such file"),
    (["train", "--data", "{corrupt}", "--flow", "realnvp"], "cannot read"),
    (["train", "--data", "{words}", "--flow", "realnvp"], "cannot read"),
    (["train", "--data", "{txt}", "--flow", "realnvp"], "expected a .npy or .csv file"),
    (["train", "--data", "{nan}", "--flow", "realnvp"], "1 row(s) contain NaN"),
    (["train", "--data", "{flat}", "--flow", "realnvp"], "expected an array of rows"),
    (["train", "--data", "{one_col}", "--flow", "realnvp"], "cannot take data of shape [1]"),
    (["train", "--data", "{img}", "--flow", "maf"], "takes vectors"),
    (["train", "--data", "8gaussians", "--flow", "masked_conv"], "takes images"),
    (["train", "--data", "8gaussians", "--flow", "planar", "--hidden_units", "8"], "no networks"),
    (["train", "--data", "8gaussians", "--hidden_units", "a,b"], "comma-separated ints"),
    (["train", "--data", "8gaussians", "--epochs", "0"], "must be positive"),
    (["train", "--flow", "realnvp"], "--data is required"),
    (["train", "--data", "8gaussians", "--flow", "realnvp", "--nosuchflag", "1"], "nosuchflag"),
    (["train", "--data", "8gaussians", "--epochs", "many"], "epochs"),
    (["fly"], "expected one command"),
    ([], "expected one command"),
    (["sample", "--run", "{tmp}", "--out", "{out}.npy"], "is not a tfp-flows run"),
    (["sample", "--run", "{tmp}", "--out", "{out}.txt"], "must name a .npy file"),
    (["logprob", "--run", "{tmp}", "--data", "{missing}"], "is not a tfp-flows run"),
])
def test_usage_errors_exit_2_with_one_line(capsys, bad_files, args, match):
  args = [a.format(**bad_files) for a in args]
  if args and args[0] == "train" and "--out" not in args:
    args += ["--out", bad_files["out"]]
  _assert_usage_error(capsys, *args, match=match)
  assert not os.path.exists(bad_files["out"])  # nothing written on a user error


def test_logprob_shape_mismatch_and_corrupt_run(tmp_path, capsys, bad_files):
  run = str(tmp_path / "run")
  code, _, _ = _run(capsys, "train", "--data", "moons", "--flow", "nice", "--out", run,
                    "--num_samples", "300", "--plots=false", *TINY)
  assert code == 0
  _assert_usage_error(capsys, "logprob", "--run", run, "--data", bad_files["vec3"],
                      match="do not match the run's event shape [2]")
  with open(os.path.join(run, "config.json"), "w") as f:
    f.write("{not json")
  _assert_usage_error(capsys, "sample", "--run", run, "--out", str(tmp_path / "s.npy"),
                      match="is not a valid run config")


def test_installed_entry_point_reports_errors(tmp_path):
  exe = os.path.join(os.path.dirname(sys.executable), "tfp-flows")
  assert os.path.isfile(exe), "the tfp-flows entry point is not installed (pip install -e .)"
  proc = subprocess.run([exe, "train", "--data", "nosuchtoy", "--flow", "realnvp", "--out",
                         str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  # TensorFlow's C++ start-up may log to stderr first; our message is the last line.
  assert proc.stderr.strip().splitlines()[-1].startswith("tfp-flows: error: unknown data")
