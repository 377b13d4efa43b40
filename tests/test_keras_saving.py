"""Whole-model ``.keras`` files: every builder-made flow round-trips in a fresh process.

Each model is trained for a few steps (so the weights, the data-dependent-init state and the
optimizer state are not their initial values), saved with ``FlowModel.save``, and loaded by
``keras.saving.load_model`` in a separate Python process that has imported nothing but
``keras`` and ``tfp_flows.keras``; its log-probabilities must be bit-identical. Flows that no
builder made are refused before anything is written, with a message naming the reason.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows as tff

tfb = tfp.bijectors
tfd = tfp.distributions

# name -> (builder call as source text, event shape, context size). Small sizes: the point is
# the config and the weights, not the model.
CASES = {
    "nice": ("tff.flows.nice([3], num_layers=2, hidden_units=[8])", [3], 0),
    "realnvp": ("tff.flows.realnvp([3], num_layers=2, hidden_units=[8], permutation='random')",
                [3], 0),
    "realnvp_conditional": ("tff.flows.realnvp([2], num_layers=2, hidden_units=[8], "
                            "conditional_shape=[3])", [2], 3),
    "realnvp_image": ("tff.flows.realnvp([4, 4, 1], num_layers=1, hidden_units=4, num_blocks=0)",
                      [4, 4, 1], 0),
    "maf_float64": ("tff.flows.maf([3], num_layers=2, hidden_units=[8], dtype=tf.float64)",
                    [3], 0),
    "iaf": ("tff.flows.iaf([2], num_layers=2, hidden_units=[8])", [2], 0),
    "nsf": ("tff.flows.nsf([2], num_layers=2, hidden_units=[8], num_bins=4)", [2], 0),
    "nsf_autoregressive": ("tff.flows.nsf([3], num_layers=2, hidden_units=[8], num_bins=4, "
                           "autoregressive=True)", [3], 0),
    "planar": ("tff.flows.planar([2], num_layers=3)", [2], 0),
    "radial": ("tff.flows.radial([2], num_layers=3)", [2], 0),
    "gaussianization": ("tff.flows.gaussianization([2], num_layers=2, num_components=4)", [2], 0),
    "rbig": ("tff.flows.rbig(np.random.default_rng(0).standard_normal((64, 2)), num_layers=2, "
             "num_components=4)", [2], 0),
    "masked_conv": ("tff.flows.masked_conv([4, 4, 1], num_layers=1, hidden_units=4)",
                    [4, 4, 1], 0),
    "glow": ("tff.flows.glow([4, 4, 1], num_levels=2, num_steps=1, hidden_units=4)",
             [4, 4, 1], 0),
}

LOAD = r"""
import json, sys
import numpy as np
import keras
import tfp_flows.keras  # registers FlowModel with Keras
out = {}
for name in json.loads(sys.argv[2]):
  d = np.load(f"{sys.argv[1]}/{name}.npz")
  model = keras.saving.load_model(f"{sys.argv[1]}/{name}.keras")
  args = (d["x"], d["c"]) if "c" in d else (d["x"],)
  lp = model.log_prob(*args).numpy()
  model.fit(*args, epochs=1, batch_size=64, verbose=0)  # compiled and trainable as saved
  out[name] = dict(identical=bool(np.array_equal(lp, d["lp"])),
                   max_diff=float(np.max(np.abs(lp - d["lp"]))),
                   dtype=str(lp.dtype), iterations=int(model.optimizer.iterations.numpy()))
print("RESULT" + json.dumps(out))
"""


def _data(shape, context, dtype, rng):
  x = rng.standard_normal([64] + shape)
  if len(shape) == 3:  # images: values in a logit-like range
    x = 0.5 * x
  c = rng.standard_normal([64, context]) if context else None
  return x.astype(dtype), (None if c is None else c.astype(dtype))


# The default suite round-trips two representative flows (conditional couplings, a float64
# MADE); -m slow runs every builder (multi-scale image flows and data-initialised
# Gaussianization included).
QUICK = ("realnvp_conditional", "maf_float64")


@pytest.mark.parametrize("names", [
    pytest.param(QUICK, id="representative"),
    pytest.param(tuple(n for n in CASES if n not in QUICK), id="the_rest",
                 marks=pytest.mark.slow)])
def test_builder_flows_round_trip_in_a_fresh_process(tmp_path, names):
  rng = np.random.default_rng(0)
  steps = {}
  for name in names:
    call, shape, context = CASES[name]
    flow = eval(call)  # pylint: disable=eval-used
    dist = tff.flows.distribution(flow, shape)
    model = tff.keras.FlowModel(dist)
    model.compile(keras.optimizers.Adam(1e-3))
    x, c = _data(shape, context, dist.dtype.as_numpy_dtype, rng)
    args = (x, c) if context else (x,)
    model.fit(*args, epochs=1, batch_size=64, verbose=0)
    steps[name] = int(model.optimizer.iterations.numpy())
    model.save(str(tmp_path / f"{name}.keras"))
    np.savez(tmp_path / f"{name}.npz", x=x, lp=model.log_prob(*args).numpy(),
             **({"c": c} if context else {}))
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  run = subprocess.run([sys.executable, "-c", LOAD, str(tmp_path), json.dumps(list(names))],
                       capture_output=True, text=True, env=env, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  line = [l for l in run.stdout.splitlines() if l.startswith("RESULT")][-1]
  results = json.loads(line[len("RESULT"):])
  for name, r in results.items():
    assert r["identical"], (name, r)
    # The optimizer came back with its state: its step count continues from the saved one.
    assert r["iterations"] == 2 * steps[name], (name, r)
  if "maf_float64" in results:
    assert results["maf_float64"]["dtype"] == "float64"


def test_config_is_the_builder_call():
  flow = tff.flows.realnvp([2], num_layers=2, hidden_units=(8,), dtype=tf.float64)
  config = tff.flows.get_config(tff.flows.distribution(flow, [2]))
  json.dumps(config)  # plain JSON
  kwargs = config["kwargs"]["bijector"]["kwargs"]
  assert config["kwargs"]["bijector"]["builder"] == "realnvp"
  assert {k: kwargs[k] for k in ("event_shape", "num_layers", "hidden_units", "dtype")} == {
      "event_shape": [2], "num_layers": 2, "hidden_units": [8], "dtype": {"dtype": "float64"}}
  # Defaults are recorded too, so a later change of a default cannot change a saved model.
  assert kwargs["log_scale_bound"] == 3. and kwargs["seed"] == 0
  image = tff.flows.get_config(tff.flows.realnvp([4, 4, 1], num_layers=1, hidden_units=4))
  assert image["builder"] == "realnvp_image" and "scale_offset" in image["kwargs"]
  again = tff.flows.from_config(config)
  assert [v.shape for v in again.variables] == [v.shape for v in flow.variables]
  assert again.dtype == tf.float64
  # A rebuilt flow has its config too, so a loaded model can be saved again.
  assert tff.flows.get_config(again) == config
  assert tff.flows.get_config(tff.flows.from_config(image)) == image


def _refused(model, tmp_path, *needles):
  path = tmp_path / "m.keras"
  with pytest.raises(ValueError) as info:
    model.save(str(path))
  for needle in needles:
    assert needle in str(info.value), str(info.value)
  assert not path.exists()
  model.save_weights(str(tmp_path / "m.weights.h5"))  # still usable, and the fallback works


def test_hand_built_flows_are_refused_with_the_reason(tmp_path):
  flow = tff.flows.realnvp([2], num_layers=2, hidden_units=[8])
  hand = tfb.Chain([tff.bijectors.Scaling([2]), flow])
  _refused(tff.keras.FlowModel(tff.flows.distribution(hand, [2])), tmp_path,
           "not made by a tff.flows builder", "save_weights", "export")
  # A builder's flow in a distribution made by hand.
  dist = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0., 1.), [2]), flow)
  _refused(tff.keras.FlowModel(dist), tmp_path, "tff.flows.distribution")
  # A builder argument that is not a JSON value is named.
  odd = tff.flows.realnvp([2], num_layers=2, hidden_units=[8], activation=tf.nn.relu)
  _refused(tff.keras.FlowModel(tff.flows.distribution(odd, [2])), tmp_path,
           "activation")

