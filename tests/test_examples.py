"""Every example runs as a script with ``--quick`` and writes what its docstring promises.

The scripts run in a subprocess (as a user runs them), against this checkout's ``tfp_flows``.
The slower smoke runs are marked ``slow`` (``pytest -m slow``).
"""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
EXAMPLES = os.path.join(ROOT, "examples")

# example -> files it writes into --out (besides metrics.json); slow ones are marked.
OUTPUTS = {
    "planar_density": ["density.png"],
    "planar_vi": ["planar_vi_U1.png", "planar_vi_grid.png"],
    "conditional_moons": ["samples.png"],
    "copula": [],
    "digits": ["samples.png", "interpolation.png"],
    "vae_prior": [],
    "vi_posterior": [],
    "distill": [],
    "amortized_vae": [],
}
# Every quick run takes 20-30 s (a fresh process importing TensorFlow and training): all run
# under -m slow, keeping the default suite's time; test_example_flags_are_checked still starts
# planar_density by default.
FAST = ()


def _numbers(obj):
  if isinstance(obj, dict):
    for v in obj.values():
      yield from _numbers(v)
  elif isinstance(obj, list):
    for v in obj:
      yield from _numbers(v)
  elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
    yield float(obj)


def run_example(name, out, *flags):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
             TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg")
  return subprocess.run([sys.executable, os.path.join(EXAMPLES, f"{name}.py"), "--quick",
                         "--out", str(out), *flags], capture_output=True, text=True, env=env,
                        cwd=str(out.parent), timeout=900, check=False)


def test_every_example_is_registered():
  scripts = {f[:-3] for f in os.listdir(EXAMPLES) if f.endswith(".py")}
  assert scripts == set(OUTPUTS), sorted(scripts ^ set(OUTPUTS))


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in OUTPUTS])
def test_example_quick_run(name, tmp_path):
  out = tmp_path / name
  proc = run_example(name, out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out / "metrics.json") as f:
    metrics = json.load(f)
  values = list(_numbers(metrics))
  assert values and all(math.isfinite(v) for v in values), metrics
  for filename in OUTPUTS[name]:
    assert (out / filename).stat().st_size > 0, filename


def test_example_flags_are_checked(tmp_path):
  """absl rejects an unknown or misspelt flag with a message naming it, before any work."""
  proc = run_example("planar_density", tmp_path / "x", "--learning-rate=0.1")
  assert proc.returncode != 0 and "learning-rate" in proc.stderr
  assert not (tmp_path / "x").exists()
