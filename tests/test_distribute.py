"""FlowModel and the CLI under tf.distribute: Mirrored (two logical CPUs) and two local workers.

Every check runs in fresh processes: logical devices must be configured, and a multi-worker
strategy created, before TensorFlow initialises. Workers talk over free localhost ports; each
process has a timeout and is killed if it overruns.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 300

# Builds the same model in every process: ActNorm (data-dependent init) + a small RealNVP,
# trained by SGD so that the comparison is not blurred by Adam's normalisation of tiny
# gradients (float rounding of the all-reduce order is then all that differs).
COMMON = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import tensorflow as tf

    def data():
      import tfp_flows as tff
      return tff.datasets.toy("moons").sample(512, seed=0)

    def build():
      import keras
      import tensorflow_probability as tfp
      import tfp_flows as tff
      flow = tfp.bijectors.Chain([
          tff.bijectors.ActNorm([2], name="actnorm"),
          tff.flows.realnvp([2], num_layers=2, hidden_units=[16], seed=3)])
      model = tff.keras.FlowModel(tff.flows.distribution(flow, [2]))
      model.compile(keras.optimizers.SGD(0.05))
      return model

    def report(model, history, path):
      out = {"loss": history.history["loss"],
             "weights": [np.asarray(w, np.float64).tolist() for w in model.get_weights()],
             "replicas": int(model.distribute_strategy.num_replicas_in_sync)}
      with open(path, "w") as f:
        json.dump(out, f)
""")

WORKER = COMMON + textwrap.dedent("""
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
      model = build()
    history = model.fit(data(), batch_size=64, epochs=2, shuffle=False, verbose=0)
    report(model, history, sys.argv[1])
    sys.stdout.flush()
    os._exit(0)  # skip the collective runtime's teardown, which may wait on the other worker
""")

SINGLE = COMMON + textwrap.dedent("""
    model = build()
    history = model.fit(data(), batch_size=64, epochs=2, shuffle=False, verbose=0)
    report(model, history, sys.argv[1])
""")

MIRRORED = COMMON + textwrap.dedent("""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    for name, devices in (("one", ["/cpu:0"]), ("two", ["/cpu:0", "/cpu:1"])):
      with tf.distribute.MirroredStrategy(devices).scope():
        model = build()
      history = model.fit(data()[:256], batch_size=64, epochs=2, shuffle=False, verbose=0)
      report(model, history, sys.argv[1] + "." + name)
""")

MIRRORED_GUARD = COMMON + textwrap.dedent("""
    import warnings
    import tfp_flows as tff
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    results = {}
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x = data()
    x[70] = np.nan  # global batch 1
    with strategy.scope():
      model = build()
    try:
      model.fit(tf.data.Dataset.from_tensor_slices(x).batch(64), epochs=1, verbose=0)
    except tff.keras.NonFiniteBatchError as e:
      results["guard"] = str(e)
    with strategy.scope():
      model = build()
      model.optimizer.learning_rate.assign(1e30)
    with warnings.catch_warnings(record=True):
      warnings.simplefilter("always")
      model.fit(data(), batch_size=64, epochs=2, verbose=0)
    results["diverged"] = model.diverged
    results["finite"] = all(bool(np.all(np.isfinite(w))) for w in model.get_weights())
    with strategy.scope():
      try:
        build().compile("adam", jit_compile=True)
      except ValueError as e:
        results["jit"] = str(e)
    with open(sys.argv[1], "w") as f:
      json.dump(results, f)
""")


def _env(extra=None):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
  env.pop("TF_CONFIG", None)
  env.update(extra or {})
  return env


def _python(script, path, env=None):
  proc = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, env=_env(env),
                        capture_output=True, text=True, timeout=TIMEOUT)
  assert proc.returncode == 0, proc.stderr[-3000:]


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _cluster(command_for_worker, attempts=2):
  """Runs two workers (TF_CONFIG on free localhost ports); returns their CompletedProcesses."""
  for attempt in range(attempts):
    ports = _free_ports(2)
    workers = [f"localhost:{p}" for p in ports]
    procs = []
    for i in range(2):
      tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker",
                                                                       "index": i}})
      procs.append(subprocess.Popen(command_for_worker(i), cwd=ROOT,
                                    env=_env({"TF_CONFIG": tf_config}),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
      for p in procs:
        out, err = p.communicate(timeout=TIMEOUT)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    finally:
      for p in procs:
        if p.poll() is None:
          p.kill()
          p.communicate()
    if all(r.returncode == 0 for r in results):
      return results
    if attempt + 1 == attempts or not any("already in use" in r.stderr.lower()
                                          for r in results):
      raise AssertionError("\n".join(r.stderr[-2000:] for r in results))
  return results


def _load(path):
  with open(path) as f:
    return json.load(f)


def test_mirrored_on_two_devices_matches_one_device(tmp_path):
  path = tmp_path / "mirrored.json"
  _python(MIRRORED, path)
  one, two = _load(str(path) + ".one"), _load(str(path) + ".two")
  assert (one["replicas"], two["replicas"]) == (1, 2)
  # Each replica's loss is its share of the global-batch mean: the same updates as one device
  # (a replica's own mean would double the step: Keras sums the replicas' gradients).
  np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
  for a, b in zip(one["weights"], two["weights"]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_guard_divergence_and_jit_under_mirrored_on_two_devices(tmp_path):
  path = tmp_path / "guard.json"
  _python(MIRRORED_GUARD, path)
  results = _load(path)
  assert "batch 1 of epoch 0 has NaN or inf" in results["guard"]
  assert results["diverged"]["epoch"] == 0 and results["finite"]
  assert "jit_compile=True does not work under a distribution strategy" in results["jit"]


@pytest.mark.slow
def test_two_workers_train_one_flow_like_one_process(tmp_path):
  _python(SINGLE, tmp_path / "single.json")
  _cluster(lambda i: [sys.executable, "-c", WORKER, str(tmp_path / f"worker{i}.json")])
  single = _load(tmp_path / "single.json")
  w0, w1 = _load(tmp_path / "worker0.json"), _load(tmp_path / "worker1.json")
  assert w0["replicas"] == w1["replicas"] == 2
  for a, b in zip(w0["weights"], w1["weights"]):
    np.testing.assert_array_equal(a, b)  # one model, trained together
  np.testing.assert_array_equal(w0["loss"], w1["loss"])
  np.testing.assert_allclose(w0["loss"], single["loss"], rtol=1e-5)
  for a, b in zip(w0["weights"], single["weights"]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_cli_multi_worker_run_is_written_by_the_chief_only(tmp_path):
  args = ["train", "--data", "moons", "--flow", "realnvp", "--num_samples", "1024",
          "--epochs", "2", "--batch_size", "128", "--num_layers", "2", "--hidden_units", "8",
          "--verbose", "0", "--noplots"]
  single = subprocess.run([sys.executable, "-m", "tfp_flows.cli", *args, "--out",
                           str(tmp_path / "single")], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=TIMEOUT)
  assert single.returncode == 0, single.stderr
  _cluster(lambda i: [sys.executable, "-m", "tfp_flows.cli", *args, "--distribute",
                      "multi_worker", "--out", str(tmp_path / f"run{i}")])
  assert os.path.isfile(tmp_path / "run0" / "config.json")
  assert not os.path.exists(tmp_path / "run1")  # the other worker writes nothing
  ref, got = _load(tmp_path / "single" / "metrics.json"), _load(tmp_path / "run0" /
                                                                  "metrics.json")
  assert got["num_replicas"] == 2 and got["distribute"] == "multi_worker"
  np.testing.assert_allclose(got["train_nll"], ref["train_nll"], rtol=1e-3)
  np.testing.assert_allclose(got["test_nll"], ref["test_nll"], rtol=1e-3)
