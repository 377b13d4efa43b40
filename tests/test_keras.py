"""Tests of tff.keras.FlowModel: tracking, training, metrics, saving, export, conditioning."""

import json
import math
import os
import subprocess
import warnings
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfp_flows as tff

tfb, tfd = tfp.bijectors, tfp.distributions

# Shared by this process and the fresh-process checks (exec'd there): the same call builds
# the same variables, in the same order, with the same initial values.
BUILD = textwrap.dedent("""
    import tensorflow_probability as tfp
    import tfp_flows as tff

    def build_model(bin_width=None):
      flow = tfp.bijectors.Chain([
          tff.bijectors.ActNorm([2], name="actnorm"),    # data-side: data-dependent init
          tff.flows.realnvp([2], num_layers=2, hidden_units=[16], seed=3)])
      return tff.keras.FlowModel(tff.flows.distribution(flow, [2]), bin_width=bin_width)
""")
exec(BUILD)  # defines build_model  # pylint: disable=exec-used


def moons(n, seed=0):
  return tff.datasets.toy("moons").sample(n, seed=seed)


def small_realnvp(seed=0, **kwargs):
  kwargs.setdefault("num_layers", 2)
  kwargs.setdefault("hidden_units", [16])
  return tff.flows.realnvp([2], seed=seed, **kwargs)


def values(model):
  return [np.array(w) for w in model.get_weights()]


def run_fresh(script, tmp_path):
  """Runs ``script`` in a fresh Python; returns its last stdout line parsed as JSON."""
  path = tmp_path / "script.py"
  path.write_text(script)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
  out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ tracking and training


def test_every_variable_is_tracked_trained_and_reported():
  keras_net = keras.Sequential([keras.Input([1]), keras.layers.Dense(8, activation="tanh"),
                                keras.layers.Dense(2, kernel_initializer="zeros")])
  flow = tfb.Chain([
      tff.bijectors.ActNorm([2]),
      tff.bijectors.AffineCoupling(tff.masks.half(2), keras_net, name="keras3_coupling"),
      tfb.Permute([1, 0]),
      tff.flows.maf([2], num_layers=1, hidden_units=[8], seed=1),
      small_realnvp(num_layers=1)])
  dist = tff.flows.distribution(flow, [2])
  model = tff.keras.FlowModel(dist)
  tf_vars = dist.variables
  # Keras sees exactly the flow's tf.Variables, trainable and not (ActNorm's flag).
  assert len(model.trainable_weights) == len(dist.trainable_variables) == 14
  assert len(model.weights) == len(tf_vars)
  assert {id(w.value) for w in model.weights} == {id(v) for v in tf_vars}
  assert [w.dtype for w in model.non_trainable_weights] == ["bool"]
  assert model.count_params() == sum(int(np.prod(v.shape)) for v in tf_vars)
  lines = []
  model.summary(print_fn=lambda line, *a, **k: lines.append(line))
  assert f"Total params: {model.count_params():,}" in "\n".join(lines)
  assert "keras3_coupling" in "\n".join(lines)

  before = [v.numpy().copy() for v in tf_vars]
  model.compile(keras.optimizers.Adam(1e-2))
  history = model.fit(moons(512), batch_size=64, epochs=2, verbose=0)
  after = [v.numpy() for v in tf_vars]
  changed = [not np.array_equal(a, b) for a, b in zip(before, after)]
  assert all(changed), [v.name for v, c in zip(tf_vars, changed) if not c]
  assert bool(flow.bijectors[0].initialized.numpy())
  assert history.history["loss"][-1] < history.history["loss"][0]


def _tfp_made_flow(inverse):
  """TFP's own MAF (or IAF) on TFP's MADE, which keeps its masks in kernel constraints."""
  made = tfb.AutoregressiveNetwork(params=2, hidden_units=[8], event_shape=[3])
  maf = tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=made)
  return tfb.Invert(maf) if inverse else maf


def test_tfp_maf_and_iaf_train_and_keep_their_autoregressive_masks():
  for inverse in (False, True):
    flow = _tfp_made_flow(inverse)
    dist = tff.flows.distribution(flow, [3])
    dist.log_prob(tf.zeros([1, 3]))  # TFP's MADE builds its variables on the first call
    kernels = [v for v in dist.trainable_variables if "kernel" in v.name]
    masked = [v.numpy() == 0. for v in kernels]  # MADE masks: zero at construction
    assert sum(m.sum() for m in masked) > 0
    model = tff.keras.FlowModel(dist)
    model.compile(keras.optimizers.Adam(5e-2))
    x = np.random.default_rng(0).normal(size=(128, 3)).astype(np.float32) * [1., 2., .5]
    start = [v.numpy().copy() for v in kernels]
    model.fit(x, batch_size=32, epochs=1, verbose=0)
    for v, m, s in zip(kernels, masked, start):
      assert not np.array_equal(v.numpy(), s)  # trained
      np.testing.assert_array_equal(v.numpy()[m], 0.)  # the constraint was applied
    z = np.random.default_rng(1).normal(size=(16, 3)).astype(np.float32)
    y = flow.forward(tf.constant(z))
    back = flow.inverse(tf.constant(np.array(y)))  # fresh tensor: no bijector cache
    np.testing.assert_allclose(back, z, atol=2e-4)


def test_our_maf_and_iaf_stay_autoregressive_after_training():
  """Our MADE applies constant masks in its call: the Jacobian stays triangular."""
  for builder in (tff.flows.maf, tff.flows.iaf):
    flow = builder([3], num_layers=1, hidden_units=[8], seed=2)
    model = tff.keras.FlowModel(tff.flows.distribution(flow, [3]))
    model.compile(keras.optimizers.Adam(5e-2))
    x = np.random.default_rng(0).normal(size=(128, 3)).astype(np.float32) * [1., 2., .5]
    model.fit(x, batch_size=32, epochs=1, verbose=0)
    point = tf.constant(x[:1], tf.float32)
    with tf.GradientTape() as tape:
      tape.watch(point)
      z = flow.inverse(point)
    jac = tape.jacobian(z, point).numpy().reshape(3, 3)
    upper = jac[np.triu_indices(3, 1)]  # output i depends on inputs <= i only (or >= i)
    lower = jac[np.tril_indices(3, -1)]
    assert np.all(upper == 0.) or np.all(lower == 0.), jac


def test_fit_matches_a_hand_written_gradient_tape_loop():
  x = moons(256)
  flow_a, flow_b = small_realnvp(seed=5), small_realnvp(seed=5)
  dist_a, dist_b = tff.flows.distribution(flow_a, [2]), tff.flows.distribution(flow_b, [2])
  model = tff.keras.FlowModel(dist_a)
  model.compile(keras.optimizers.SGD(0.05))
  history = model.fit(x, batch_size=32, epochs=2, shuffle=False, verbose=0)

  opt = keras.optimizers.SGD(0.05)
  variables = dist_b.trainable_variables

  @tf.function
  def step(batch):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(dist_b.log_prob(batch))
    opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  losses = []
  for _ in range(2):
    losses.append(np.mean([step(tf.constant(x[i:i + 32])).numpy() for i in range(0, 256, 32)]))
  np.testing.assert_allclose(history.history["loss"], losses, rtol=1e-5)
  for a, b in zip(dist_a.trainable_variables, variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(model.evaluate(x, verbose=0),
                             -np.mean(dist_b.log_prob(x).numpy()), rtol=1e-5)


def test_keras_weight_averaging_ends_fit_with_the_average_in_the_flow():
  # Keras' own EMA (use_ema=True): the optimizer averages the iterates it produced and fit
  # ends by writing the average into the model's weights; it must reach the flow's variables.
  x = moons(256)
  momentum = 0.8
  runs = {}
  for use_ema in (False, True):
    dist = tff.flows.distribution(small_realnvp(seed=5), [2])
    model = tff.keras.FlowModel(dist)
    model.compile(keras.optimizers.SGD(0.05, use_ema=use_ema, ema_momentum=momentum))
    iterates = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs, d=dist,
                                            i=iterates: i.append([v.numpy() for v in
                                                                  d.trainable_variables]))
    model.fit(x, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[record])
    runs[use_ema] = dist, model, iterates
  plain = runs[False][2]
  assert len(plain) == 16
  average = plain[0]  # Keras starts the average at the first iterate
  for weights in plain[1:]:
    average = [momentum * a + (1. - momentum) * w for a, w in zip(average, weights)]
  dist, model, iterates = runs[True]
  for a, b in zip(iterates[-1], plain[-1]):  # averaging does not change the trajectory
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for v, a in zip(dist.trainable_variables, average):
    np.testing.assert_allclose(v.numpy(), a, rtol=1e-4, atol=1e-6)
  assert max(np.abs(a - w).max() for a, w in zip(average, plain[-1])) > 1e-3
  np.testing.assert_allclose(model.evaluate(x, verbose=0),
                             -np.mean(dist.log_prob(x).numpy()), rtol=1e-5)


def test_fit_takes_datasets_generators_validation_and_bits_per_dim():
  x = moons(512)
  model = build_model(bin_width=1. / 17)
  model.compile(keras.optimizers.Adam(1e-2))
  ds = tf.data.Dataset.from_tensor_slices(x).batch(128)

  def gen():
    while True:
      for i in range(0, 512, 128):
        yield (x[i:i + 128],)

  h1 = model.fit(ds, epochs=1, validation_data=(x[:128],), verbose=0)
  h2 = model.fit(gen(), steps_per_epoch=4, epochs=1, validation_data=(x[:128],), verbose=0)
  for h in (h1, h2):
    assert set(h.history) == {"loss", "bits_per_dim", "val_loss", "val_bits_per_dim"}
    d = 2
    for key in ("loss", "val_loss"):
      bpd = h.history[key.replace("loss", "bits_per_dim")][0]
      expect = (h.history[key][0] - d * math.log(1. / 17)) / (d * math.log(2.))
      assert bpd == pytest.approx(expect, rel=1e-5)
  logs = model.evaluate(x, verbose=0, return_dict=True)
  nll = -np.mean(model.log_prob(x).numpy())
  assert logs["loss"] == pytest.approx(nll, rel=1e-5)
  assert logs["bits_per_dim"] == pytest.approx((nll + 2 * math.log(17)) / (2 * math.log(2)),
                                               rel=1e-5)


def test_log_prob_predict_and_sample_with_seed_and_temperature():
  flow = small_realnvp(seed=1)
  tff.testing.randomize_variables(flow, seed=0)
  dist = tff.flows.distribution(flow, [2])
  model = tff.keras.FlowModel(dist)
  x = moons(64)
  expect = dist.log_prob(x).numpy()
  np.testing.assert_allclose(model.log_prob(x), expect, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(model.predict(x, batch_size=16, verbose=0), expect, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(model(x), expect, rtol=1e-5, atol=1e-5)
  s1, s2 = model.sample(100, seed=7), model.sample(100, seed=7)
  np.testing.assert_array_equal(s1, s2)
  assert s1.shape == (100, 2) and not np.array_equal(s1, model.sample(100, seed=8))
  # Temperature scales the base draws: inverse(sample(T)) = T * inverse(sample(1)).
  s_hot = model.sample(100, seed=7, temperature=0.5)
  z1 = flow.inverse(tf.constant(np.array(s1)))
  z_hot = flow.inverse(tf.constant(np.array(s_hot)))
  np.testing.assert_allclose(z_hot, 0.5 * z1.numpy(), atol=1e-4)
  with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
    model.sample(3, temperature=0.)


# ------------------------------------------------------------------ saving and callbacks


def test_save_and_load_weights_restores_init_state_without_reinitialising(tmp_path):
  x = moons(256)
  model = build_model()
  model.compile(keras.optimizers.Adam(1e-2))
  model.fit(x, batch_size=64, epochs=1, verbose=0)
  path = str(tmp_path / "flow.weights.h5")
  model.save_weights(path)
  expect = model.log_prob(x).numpy()

  fresh = build_model()
  actnorm = fresh.flow_distribution.bijector.bijectors[0]
  assert not bool(actnorm.initialized.numpy())
  fresh.load_weights(path)
  assert bool(actnorm.initialized.numpy())
  np.testing.assert_array_equal(fresh.log_prob(x).numpy(), expect)
  # Data with other statistics do not re-run the initialisation.
  shift = actnorm.shift.numpy().copy()
  fresh.log_prob(x * 10. + 3.)
  np.testing.assert_array_equal(actnorm.shift.numpy(), shift)


@pytest.mark.slow
def test_load_weights_in_a_fresh_process_is_bit_identical(tmp_path):
  x = moons(128)
  model = build_model()
  model.compile(keras.optimizers.Adam(1e-2))
  model.fit(x, batch_size=64, epochs=1, verbose=0)
  model.save_weights(str(tmp_path / "w.weights.h5"))
  np.save(tmp_path / "x.npy", x)
  script = BUILD + textwrap.dedent(f"""
      import json, numpy as np
      model = build_model()
      model.load_weights({str(tmp_path / "w.weights.h5")!r})
      lp = model.log_prob(np.load({str(tmp_path / "x.npy")!r})).numpy()
      print(json.dumps(lp.astype(float).tolist()))
  """)
  got = np.array(run_fresh(script, tmp_path), np.float32)
  np.testing.assert_array_equal(got, model.log_prob(x).numpy())


def test_model_checkpoint_and_early_stopping_restore_best_weights(tmp_path):
  x = moons(256)
  model = build_model()
  model.compile(keras.optimizers.Adam(3e-2))
  per_epoch = []
  keep = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: per_epoch.append(
      (logs["val_loss"], values(model))))
  path = str(tmp_path / "best.weights.h5")
  ckpt = keras.callbacks.ModelCheckpoint(path, save_weights_only=True, save_best_only=True)
  stop = keras.callbacks.EarlyStopping(patience=1, restore_best_weights=True)
  # Validation on a different distribution, so the validation loss soon rises.
  val = (moons(128, seed=1) * np.float32([1., 3.]),)
  model.fit(x, batch_size=32, epochs=8, validation_data=val, callbacks=[keep, ckpt, stop],
            verbose=0)
  best = int(np.argmin([v for v, _ in per_epoch]))
  assert len(per_epoch) < 8 and best < len(per_epoch) - 1  # stopped after a worse epoch
  for got, want in zip(values(model), per_epoch[best][1]):
    np.testing.assert_array_equal(got, want)
  fresh = build_model()
  fresh.load_weights(path)
  for got, want in zip(values(fresh), per_epoch[best][1]):
    np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match="save_weights"):  # hand-built: no .keras config
    model.save(str(tmp_path / "m.keras"))


def test_export_writes_log_prob_and_sample_signatures(tmp_path):
  model = build_model()
  x = moons(64)
  model.log_prob(x)  # runs ActNorm's data-dependent init
  model.sample(2, seed=0, temperature=0.5)  # compiled helpers must not leak into the export
  tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))  # tf.train.Checkpoint works too
  export_dir = str(tmp_path / "saved")
  model.export(export_dir, verbose=False)
  loaded = tf.saved_model.load(export_dir)
  assert set(loaded.signatures) == {"serving_default", "log_prob", "sample"}
  lp = loaded.signatures["log_prob"](x=tf.constant(x))["log_prob"]
  np.testing.assert_allclose(lp, model.log_prob(x), rtol=1e-5, atol=1e-5)
  s = loaded.signatures["sample"](n=tf.constant(5), seed=tf.constant(3),
                                  temperature=tf.constant(1.))["samples"]
  np.testing.assert_allclose(s, model.sample(5, seed=3), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_savedmodel_serves_log_prob_and_sample_without_our_code(tmp_path):
  model = build_model()
  model.compile(keras.optimizers.Adam(1e-2))
  x = moons(128)
  model.fit(x, batch_size=64, epochs=1, verbose=0)
  export_dir = str(tmp_path / "saved")
  model.export(export_dir, verbose=False)
  np.save(tmp_path / "x.npy", x)
  script = textwrap.dedent(f"""
      import json, sys
      import numpy as np, tensorflow as tf
      loaded = tf.saved_model.load({export_dir!r})
      lp = loaded.signatures["log_prob"](x=tf.constant(np.load({str(tmp_path / "x.npy")!r})))
      s = loaded.signatures["sample"](n=tf.constant(5), seed=tf.constant(11),
                                      temperature=tf.constant(0.7))
      ours = [m for m in sys.modules if m.startswith(("tfp_flows", "tensorflow_probability"))]
      print(json.dumps({{"lp": lp["log_prob"].numpy().tolist(),
                        "s": s["samples"].numpy().tolist(), "ours": ours}}))
  """)
  out = run_fresh(script, tmp_path)
  assert out["ours"] == []
  np.testing.assert_allclose(out["lp"], model.log_prob(x), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["s"], model.sample(5, seed=11, temperature=0.7), rtol=1e-5,
                             atol=1e-5)


# ------------------------------------------------------------------ compilation and devices


@pytest.mark.slow
@pytest.mark.parametrize("builder", ["realnvp", "nice", "maf"])
def test_jit_compile_training_matches_graph_mode(builder):
  x = moons(256)
  losses = []
  for jit in (False, True):
    flow = getattr(tff.flows, builder)([2], num_layers=2, hidden_units=[16], seed=4)
    model = tff.keras.FlowModel(tff.flows.distribution(flow, [2]))
    model.compile(keras.optimizers.SGD(0.02), jit_compile=jit)
    losses.append(model.fit(x, batch_size=64, epochs=2, shuffle=False,
                            verbose=0).history["loss"])
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)


def _tiny_flow(family):
  if family in ("masked_conv", "realnvp_image"):
    shape = [4, 4, 1]
    flow = (tff.flows.masked_conv(shape, num_layers=1) if family == "masked_conv"
            else tff.flows.realnvp(shape, num_layers=2))
  elif family in ("planar", "radial"):
    shape, flow = [2], getattr(tff.flows, family)([2], num_layers=2)
  elif family == "gaussianization":
    shape, flow = [2], tff.flows.gaussianization([2], num_layers=1, num_components=4)
  else:
    shape, flow = [2], getattr(tff.flows, family)([2], num_layers=2, hidden_units=[8])
  return shape, flow


@pytest.mark.slow
@pytest.mark.parametrize("family", ["nice", "realnvp", "maf", "iaf", "planar", "radial",
                                    "gaussianization", "masked_conv", "realnvp_image"])
def test_every_family_trains_under_xla(family):
  shape, flow = _tiny_flow(family)
  rng = np.random.default_rng(0)
  x = (moons(256) if shape == [2] else rng.normal(size=[256] + shape).astype(np.float32))
  model = tff.keras.FlowModel(tff.flows.distribution(flow, shape))
  model.compile(keras.optimizers.Adam(1e-3), jit_compile=True)
  history = model.fit(x, batch_size=64, epochs=1, verbose=0)
  assert np.isfinite(history.history["loss"][0])


@pytest.mark.slow
@pytest.mark.parametrize("builder", ["realnvp", "maf"])
def test_conditional_export_serves_context(builder, tmp_path):
  flow = getattr(tff.flows, builder)([2], num_layers=2, hidden_units=[8],
                                     conditional_shape=[2], seed=0)
  tff.testing.randomize_variables(flow, seed=0)
  model = tff.keras.FlowModel(tff.flows.distribution(flow, [2]))
  x, c = moons(8), np.eye(2, dtype=np.float32)[np.arange(8) % 2]
  model.export(str(tmp_path / "saved"), verbose=False)
  loaded = tf.saved_model.load(str(tmp_path / "saved"))
  lp = loaded.signatures["log_prob"](x=tf.constant(x), context=tf.constant(c))["log_prob"]
  np.testing.assert_allclose(lp, model.log_prob(x, context=c), rtol=1e-5, atol=1e-5)
  s = loaded.signatures["sample"](n=tf.constant(4), seed=tf.constant(2),
                                  temperature=tf.constant(1.), context=tf.constant([0., 1.]))
  np.testing.assert_allclose(s["samples"], model.sample(4, seed=2, context=[0., 1.]),
                             rtol=1e-5, atol=1e-5)


def test_jit_compile_and_mirrored_strategy():
  x = moons(256)
  strategy = tf.distribute.MirroredStrategy(tf.config.list_logical_devices("CPU")[:1])
  with strategy.scope():
    flow = small_realnvp(seed=6, num_layers=1)
    model = tff.keras.FlowModel(tff.flows.distribution(flow, [2]))
    model.compile(keras.optimizers.Adam(1e-2), jit_compile=True)
  before = values(model)
  history = model.fit(x, batch_size=64, epochs=2, verbose=0)
  assert np.all(np.isfinite(history.history["loss"]))
  assert history.history["loss"][1] < history.history["loss"][0]
  assert any(not np.array_equal(a, b) for a, b in zip(values(model), before))


# ------------------------------------------------------------------ conditional flows


def test_conditional_flow_fits_pairs_and_samples_given_context():
  n = 512
  x = moons(n)
  labels = (np.arange(n) >= n // 2).astype(np.int64)  # the sampler's first half: moon 0
  onehot = np.eye(2, dtype=np.float32)[labels]
  flow = tff.flows.realnvp([2], num_layers=2, hidden_units=[32], conditional_shape=[2],
                           seed=0)
  model = tff.keras.FlowModel(tff.flows.distribution(flow, [2]))
  assert model.context_shape == (2,)
  model.compile(keras.optimizers.Adam(2e-2))
  model.fit(x, onehot, batch_size=64, epochs=5, verbose=0)
  ds = tf.data.Dataset.from_tensor_slices((x, onehot)).shuffle(n, seed=0).batch(64)
  model.fit(ds, epochs=1, verbose=0)
  # The right label explains a point better than the wrong one.
  right = model.log_prob(x, context=onehot).numpy()
  wrong = model.log_prob(x, context=onehot[:, ::-1]).numpy()
  assert np.mean(right > wrong) > 0.9
  s0 = model.sample(500, seed=0, context=[1., 0.]).numpy()
  s1 = model.sample(500, seed=0, context=np.float32([0., 1.])).numpy()
  # Upper moon (label 0) sits above the lower one on average.
  assert s0[:, 1].mean() > s1[:, 1].mean() + 0.5
  per_row = model.sample(4, seed=0, context=np.eye(2, dtype=np.float32)[[0, 1, 0, 1]])
  assert per_row.shape == (4, 2)
  np.testing.assert_allclose(model.predict((x[:8], onehot[:8]), verbose=0), right[:8],
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="needs a context"):
    model.log_prob(x)
  with pytest.raises(ValueError, match=r"context with trailing shape \[2\]"):
    model.log_prob(x, context=np.zeros([n, 3], np.float32))


def test_conditional_maf_and_iaf_route_the_context():
  for builder in (tff.flows.maf, tff.flows.iaf):
    flow = builder([2], num_layers=2, hidden_units=[8], conditional_shape=[3], seed=0)
    tff.testing.randomize_variables(flow, seed=1)
    model = tff.keras.FlowModel(tff.flows.distribution(flow, [2]))
    assert model.context_shape == (3,)
    x = moons(8)
    c = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    a, b = model.log_prob(x, context=c).numpy(), model.log_prob(x, context=-c).numpy()
    assert np.all(np.isfinite(a)) and not np.allclose(a, b)


# ------------------------------------------------------------------ robustness


def small_model(seed=0, **kwargs):
  return tff.keras.FlowModel(tff.flows.distribution(small_realnvp(seed, num_layers=1), [2]),
                             **kwargs)


def test_nan_rows_in_arrays_are_named_before_training_and_skip_option():
  x = moons(256)
  x[100, 0] = np.nan
  x[101, 1] = np.inf
  model = small_model()
  model.compile(keras.optimizers.Adam(1e-2))
  before = values(model)
  with pytest.raises(tff.keras.NonFiniteBatchError,
                     match=r"x has 2 row\(s\) with NaN or inf values \(rows 100, 101\)"):
    model.fit(x, batch_size=32, epochs=1, shuffle=False, verbose=0)
  for got, want in zip(values(model), before):
    np.testing.assert_array_equal(got, want)  # nothing trained

  model = small_model(nonfinite="skip")
  model.compile(keras.optimizers.Adam(1e-2))
  with pytest.warns(RuntimeWarning, match="skipped 2 training row"):
    history = model.fit(x, batch_size=32, epochs=1, shuffle=False, verbose=0)
  assert model.skipped_rows == 2 and np.isfinite(history.history["loss"][0])
  assert all(np.all(np.isfinite(w)) for w in values(model))
  # Data without a single finite row are no success, not a loss of 0.0.
  with pytest.raises(tff.keras.NonFiniteBatchError, match="every row of x has NaN"):
    model.fit(np.full([64, 2], np.nan, np.float32), batch_size=32, verbose=0)
  nan_ds = tf.data.Dataset.from_tensor_slices(np.full([64, 2], np.nan, np.float32)).batch(32)
  with pytest.raises(tff.keras.NonFiniteBatchError, match="epoch 0 had no training row"):
    model.fit(nan_ds, epochs=1, verbose=0)


def test_nan_batch_of_a_dataset_is_named_by_the_guard():
  x = moons(256)
  x[100, 0] = np.nan  # batch 3 of size 32
  x[101, 1] = np.inf
  ds = tf.data.Dataset.from_tensor_slices(x).batch(32)
  model = small_model()
  model.compile(keras.optimizers.Adam(1e-2))
  with pytest.raises(tff.keras.NonFiniteBatchError,
                     match=r"batch 3 of epoch 0 has NaN or inf.*2 row\(s\)"):
    model.fit(ds, epochs=1, verbose=0)
  assert all(np.all(np.isfinite(w)) for w in values(model))
  # check_every=1 stops at that very batch.
  model = small_model(check_every=1)
  model.compile(keras.optimizers.Adam(1e-2))
  seen = []
  count = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(b))
  with pytest.raises(tff.keras.NonFiniteBatchError, match="batch 3 of epoch 0"):
    model.fit(ds, epochs=1, verbose=0, callbacks=[count])
  assert seen == [0, 1, 2]  # the guard runs first and raised at batch 3


def test_divergence_restores_weights_and_optimizer_state_so_fit_can_go_on():
  x = moons(512)
  flow = tff.flows.nice([2], num_layers=2, hidden_units=[16], seed=0)
  model = tff.keras.FlowModel(tff.flows.distribution(flow, [2]))
  model.compile(keras.optimizers.Adam(1e-2))
  epoch_end = []
  keep = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: epoch_end.append(
      values(model)))
  # Epoch 0 trains normally; epoch 1 uses an absurd learning rate and diverges.
  blow_up = keras.callbacks.LearningRateScheduler(lambda e, lr: 1e-2 if e == 0 else 1e30)
  with pytest.warns(RuntimeWarning, match="became NaN/inf"):
    history = model.fit(x, batch_size=64, epochs=5, callbacks=[blow_up, keep], verbose=0)
  assert model.diverged is not None and model.diverged["epoch"] == 1
  assert len(history.history["loss"]) == 2  # stopped in epoch 1
  for got, want in zip(values(model), epoch_end[0]):
    np.testing.assert_array_equal(got, want)  # the weights from before the divergence
  assert all(np.all(np.isfinite(np.array(v))) for v in model.optimizer.variables)
  model.optimizer.learning_rate.assign(1e-2)
  history = model.fit(x, batch_size=64, epochs=1, verbose=0)
  assert model.diverged is None and np.isfinite(history.history["loss"][0])


def test_divergence_with_weight_averaging_leaves_finite_averages_and_fit_goes_on():
  x = moons(512)
  dist = tff.flows.distribution(tff.flows.nice([2], num_layers=2, hidden_units=[16], seed=0),
                                [2])
  model = tff.keras.FlowModel(dist)
  model.compile(keras.optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.9))
  blow_up = keras.callbacks.LearningRateScheduler(lambda e, lr: 1e-2 if e == 0 else 1e30)
  with pytest.warns(RuntimeWarning, match="became NaN/inf"):
    model.fit(x, batch_size=64, epochs=5, callbacks=[blow_up], verbose=0)
  assert model.diverged is not None and model.diverged["epoch"] == 1
  # fit ended by writing the average into the flow: it must not carry the divergence
  assert all(np.all(np.isfinite(v.numpy())) for v in dist.trainable_variables)
  assert all(np.all(np.isfinite(np.array(v))) for v in model.optimizer.variables)
  assert np.isfinite(model.evaluate(x, verbose=0))
  model.optimizer.learning_rate.assign(1e-2)
  history = model.fit(x, batch_size=64, epochs=1, verbose=0)
  assert model.diverged is None and np.isfinite(history.history["loss"][0])


def test_wrong_event_size_after_a_good_fit_raises_for_every_input_form():
  x = moons(256)
  model = small_model()
  model.compile(keras.optimizers.Adam(1e-2))
  model.fit(x, batch_size=32, epochs=1, verbose=0)
  before = values(model)
  x3 = np.random.default_rng(0).normal(size=[64, 3]).astype(np.float32)
  shape_error = r"expected .* of shape \[batch, 2\].*got shape \[64, 3\]"
  with pytest.raises(ValueError, match=shape_error):
    model.fit(x3, batch_size=32, verbose=0)  # used to train silently
  with pytest.raises(ValueError, match=r"batches of shape \[batch, 2\].*\[None, 3\]"):
    model.fit(tf.data.Dataset.from_tensor_slices(x3).batch(32), verbose=0)
  with pytest.raises(ValueError, match=r"single event"):
    model.fit(tf.data.Dataset.from_tensor_slices(x), verbose=0)  # not batched
  with pytest.raises(ValueError, match=r"first batch of x of shape \[batch, 2\]"):
    model.fit((b for b in [x3[:32], x3[32:]]), steps_per_epoch=2, verbose=0)
  # A dataset whose static shape hides the event size: caught in the step (tf.ensure_shape).
  hidden = tf.data.Dataset.from_generator(
      lambda: iter([x3[:32], x3[32:]]), output_signature=tf.TensorSpec([None, None]))
  with pytest.raises(ValueError, match=r"event shape \[2\]\), got a batch of shape \[32,3\]"):
    model.fit(hidden, verbose=0)
  for got, want in zip(values(model), before):
    np.testing.assert_array_equal(got, want)
  for call in (model.evaluate, model.predict):
    with pytest.raises(ValueError, match=shape_error):
      call(x3, verbose=0)
  with pytest.raises(ValueError, match=r"expected data of shape \[batch, 2\].*\[5\]"):
    model.log_prob(np.zeros([5], np.float32))
  history = model.fit(x, batch_size=32, epochs=1, verbose=0)  # still trains
  assert np.isfinite(history.history["loss"][0])


def test_a_first_fit_that_fails_leaves_the_model_usable():
  x = moons(256)
  x3 = np.zeros([64, 3], np.float32)
  model = small_model()
  model.compile(keras.optimizers.Adam(1e-2))
  with pytest.raises(ValueError, match="expected x of shape"):
    model.fit(x3, batch_size=32, verbose=0)
  # A failure inside the very first traced step (the shape is unknown until run time) used to
  # leave a traced function that had created the optimizer's variables: every later fit then
  # failed with "Creating variables on a non-first call to a function".
  model = small_model()
  model.compile(keras.optimizers.Adam(1e-2))
  hidden = tf.data.Dataset.from_generator(lambda: iter([x3[:32]]),
                                          output_signature=tf.TensorSpec([None, None]))
  with pytest.raises(ValueError, match=r"event shape \[2\]"):
    model.fit(hidden, verbose=0)
  history = model.fit(x.tolist(), batch_size=32, epochs=2, verbose=0)  # lists are arrays too
  assert history.history["loss"][1] < history.history["loss"][0]
  assert np.isfinite(model.evaluate(x, verbose=0))


def test_context_rows_validation_nan_and_other_bad_arguments():
  flow = tff.flows.realnvp([2], num_layers=1, hidden_units=[8], conditional_shape=[2], seed=0)
  model = tff.keras.FlowModel(tff.flows.distribution(flow, [2]))
  model.compile(keras.optimizers.Adam(1e-2))
  x, c = moons(64), np.eye(2, dtype=np.float32)[np.arange(64) % 2]
  with pytest.raises(ValueError, match="x has 64 rows but its context has 63 rows"):
    model.fit(x, c[:63], batch_size=32, verbose=0)
  with pytest.raises(ValueError, match=r"context's batch shape \[63\] does not match"):
    model.log_prob(x, context=c[:63])
  with pytest.raises(ValueError, match="needs a context"):
    model.fit(x, batch_size=32, verbose=0)
  x_val = x.copy()
  x_val[5] = np.nan
  with pytest.raises(tff.keras.NonFiniteBatchError, match=r"validation_data has 1 row.*rows 5"):
    model.fit(x, c, batch_size=32, validation_data=(x_val, c), verbose=0)
  val_ds = tf.data.Dataset.from_tensor_slices((x_val, c)).batch(16)
  with pytest.raises(ValueError, match="1 row.* of validation_data have NaN"):
    model.fit(x, c, batch_size=32, validation_data=val_ds, verbose=0)
  with pytest.raises(ValueError, match="1 row.* of evaluate data have NaN"):
    model.evaluate(val_ds, verbose=0)
  with pytest.raises(ValueError, match="sample_weight must be finite and >= 0"):
    model.fit(x, c, sample_weight=-np.ones(64), verbose=0)
  with pytest.raises(ValueError, match="class_weight"):
    model.fit(x, c, class_weight={0: 1.}, verbose=0)
  with pytest.raises(TypeError, match="must be numeric"):
    model.fit(np.array([["a", "b"]] * 4), c[:4], verbose=0)
  with pytest.raises(TypeError, match="must be numeric"):
    model.log_prob(np.ones([4, 2], bool), context=c[:4])
  history = model.fit(x, c, batch_size=32, validation_data=(x, c), verbose=0)
  assert np.isfinite(history.history["val_loss"][0])
  lp = model.predict((x_val, c), verbose=0)  # predict gives NaN for a NaN row, finite elsewhere
  assert np.isnan(lp[5]) and np.all(np.isfinite(np.delete(lp, 5)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=2.7), "number of samples must be an int"),
    (dict(n=-1), "number of samples must be an int"),
    (dict(n=True), "number of samples must be an int"),
    (dict(n="3"), "number of samples must be an int"),
    (dict(n=3, temperature=float("inf")), "temperature must be a finite number > 0"),
    (dict(n=3, temperature=float("nan")), "temperature must be a finite number > 0"),
    (dict(n=3, temperature=-1.), "temperature must be a finite number > 0"),
    (dict(n=3, temperature=True), "temperature must be a finite number > 0"),
    (dict(n=3, seed=True), "seed must be"),
    (dict(n=3, seed=2.5), "seed must be"),
    (dict(n=3, seed=2**40), "fit in int32"),
    (dict(n=3, context=[1., 0.]), "not conditional"),
])
def test_invalid_sample_arguments_raise(kwargs, match):
  model = _SAMPLE_MODEL
  with pytest.raises(ValueError, match=match):
    model.sample(**kwargs)


_SAMPLE_MODEL = small_model()


def test_samples_that_overflow_are_reported():
  # exp(100) ~ 2.7e43 is beyond float32 (max 3.4e38): every sample overflows in one entry.
  flow = tff.bijectors.Scaling([2], log_scale=tf.Variable([100., 0.]))
  model = tff.keras.FlowModel(tff.flows.distribution(flow, [2]))
  with pytest.warns(RuntimeWarning, match="samples are NaN or inf"):
    model.sample(200, seed=1)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    _SAMPLE_MODEL.sample(200, seed=1)  # finite samples: no warning


def test_sample_counts_and_seeds_that_are_valid():
  model = _SAMPLE_MODEL
  assert model.sample(0, seed=1).shape == (0, 2)
  assert model.sample(np.int64(3), seed=np.int32(1)).shape == (3, 2)
  assert model.sample(tf.constant(2), seed=tf.constant([1, 2])).shape == (2, 2)
  np.testing.assert_array_equal(model.sample(4, seed=(1, 2)), model.sample(4, seed=[1, 2]))


def test_data_dependent_init_runs_eagerly_on_the_first_usable_batch():
  x = moons(256)
  model = build_model()
  actnorm = model.flow_distribution.bijector.bijectors[0]
  assert [m.name for m in model.pending_data_init()] == ["actnorm"]
  # An empty batch neither initialises nor poisons the model.
  assert model.log_prob(x[:0]).shape == (0,)
  assert not bool(actnorm.initialized.numpy())
  # A first batch with NaN is an error and leaves the flag unset.
  bad = x.copy()
  bad[3] = np.nan
  with pytest.raises(ValueError, match=r"first batch of log_prob.*rows 3.*initialise actnorm"):
    model.log_prob(bad[:32])
  model.compile(keras.optimizers.Adam(1e-2))
  with pytest.raises(ValueError, match=r"x has 1 row"):
    model.fit(bad, batch_size=32, shuffle=False, verbose=0)
  assert not bool(actnorm.initialized.numpy())
  with pytest.warns(RuntimeWarning, match="before the data-dependent"):
    model.sample(2, seed=0)
  # fit initialises eagerly from its first batch, before the first step.
  seen = {}

  def probe(layer):
    def at_start(logs):
      seen["flag"] = bool(layer.initialized.numpy())
      seen["shift"] = layer.shift.numpy().copy()
    return keras.callbacks.LambdaCallback(on_train_begin=at_start)

  model.fit(x, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[probe(actnorm)])
  assert seen["flag"]
  np.testing.assert_allclose(seen["shift"], x[:32].mean(0), rtol=1e-5, atol=1e-6)
  assert np.all(np.isfinite(model.log_prob(x).numpy()))
  # skip mode initialises from the finite rows of the first batch.
  skip = tff.keras.FlowModel(build_model().flow_distribution, nonfinite="skip")
  skip.compile(keras.optimizers.Adam(1e-2))
  with pytest.warns(RuntimeWarning, match="skipped 1 training row"):
    skip.fit(bad, batch_size=32, epochs=1, shuffle=False, verbose=0,
             callbacks=[probe(skip.flow_distribution.bijector.bijectors[0])])
  np.testing.assert_allclose(seen["shift"], np.delete(x[:32], 3, axis=0).mean(0), rtol=1e-5,
                             atol=1e-6)


def test_wrong_shapes_and_arguments_give_clear_errors():
  model = small_model()
  with pytest.raises(RuntimeError, match="compile"):
    model.fit(moons(64), verbose=0)
  model.compile("adam")
  with pytest.raises(ValueError, match="not conditional"):
    model.log_prob(np.zeros([5, 2]), context=np.zeros([5, 1]))
  with pytest.raises(ValueError, match="not conditional"):
    model.fit(np.zeros([5, 2]), np.zeros([5, 1]), verbose=0)
  with pytest.raises(ValueError, match="has no rows"):
    model.fit(np.zeros([0, 2], np.float32), verbose=0)
  with pytest.raises(ValueError, match="epochs"):
    model.fit(moons(64), epochs=0, verbose=0)
  with pytest.raises(ValueError, match="batch_size"):
    model.fit(moons(64), batch_size=2.5, verbose=0)
  with pytest.raises(ValueError, match="leaves no training rows"):
    model.fit(moons(2), validation_split=0.9, verbose=0)
  with pytest.raises(ValueError, match="takes no loss"):
    model.compile("adam", loss="mse")
  with pytest.raises(ValueError, match="nonfinite"):
    tff.keras.FlowModel(model.flow_distribution, nonfinite="ignore")
  with pytest.raises(ValueError, match="bin_width"):
    tff.keras.FlowModel(model.flow_distribution, bin_width=float("inf"))
  with pytest.raises(ValueError, match="check_every"):
    tff.keras.FlowModel(model.flow_distribution, check_every=0)
  with pytest.raises(TypeError, match="tf.Module"):
    tff.keras.FlowModel(lambda x: x)
  with pytest.raises(ValueError, match="no trainable variables"):
    tff.keras.FlowModel(tfd.MultivariateNormalDiag(tf.zeros(2))).compile("adam")


# ------------------------------------------------------------------ interop


def test_tf_keras_model_can_hold_and_train_our_bijectors():
  import tf_keras  # pylint: disable=import-outside-toplevel

  class TfKerasFlow(tf_keras.Model):

    def __init__(self, flow):
      super().__init__()
      self.flow = flow
      self.dist = tff.flows.distribution(flow, [2])

    def call(self, x):
      lp = self.dist.log_prob(x)
      self.add_loss(-tf.reduce_mean(lp))
      return lp

  flow = small_realnvp(seed=2)
  model = TfKerasFlow(flow)
  model(moons(4))
  assert len(model.trainable_weights) == len(flow.trainable_variables)
  before = [v.numpy().copy() for v in flow.trainable_variables]
  model.compile(tf_keras.optimizers.Adam(1e-2))
  model.fit(moons(256), batch_size=64, epochs=2, verbose=0)
  assert all(not np.array_equal(v.numpy(), b) for v, b in zip(flow.trainable_variables, before))


def test_mixture_of_flows_trains_through_flow_model():
  parts = [tff.flows.distribution(small_realnvp(seed=s, num_layers=1), [2]) for s in (0, 1)]
  logits = tf.Variable([0., 0.], name="mixture_logits")
  dist = tfd.Mixture(tfd.Categorical(logits=logits), parts)
  model = tff.keras.FlowModel(dist)
  assert len(model.trainable_weights) == 1 + sum(len(p.trainable_variables) for p in parts)
  model.compile(keras.optimizers.Adam(2e-2))
  history = model.fit(moons(256), batch_size=64, epochs=2, verbose=0)
  assert history.history["loss"][1] < history.history["loss"][0]
  assert not np.array_equal(logits.numpy(), [0., 0.])
