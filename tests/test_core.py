"""The ground floor: version bounds that the internals we import were checked against."""

import ast
import pathlib
import re
from importlib import metadata

from tfp_flows import core

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _version_tuple(text):
  return tuple(int(p) for p in re.findall(r"\d+", text)[:2])


def test_installed_versions_are_supported():
  for package, (low, high) in core.SUPPORTED_VERSIONS.items():
    installed = _version_tuple(metadata.version(package))
    assert _version_tuple(low) <= installed < _version_tuple(high), (package, installed)


def test_pyproject_bounds_match_core():
  text = (ROOT / "pyproject.toml").read_text()
  for package, (low, high) in core.SUPPORTED_VERSIONS.items():
    assert f'"{package}>={low},<{high}"' in text, package


def test_internals_are_imported_only_in_core():
  """No module but core.py imports TF/TFP internals (``tensorflow.python``, ``...internal``)."""
  offenders = []
  for path in (ROOT / "tfp_flows").rglob("*.py"):
    if path.name == "core.py":
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      names = []
      if isinstance(node, ast.ImportFrom) and node.module:
        names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
      elif isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      if any(n.startswith("tensorflow.python") or
             n.startswith("tensorflow_probability.python") for n in names):
        offenders.append(str(path.relative_to(ROOT)))
  assert not offenders, offenders


# --- helpers every bijector shares ------------------------------------------------------------

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402


def test_check_input_asserts_the_event_shape_when_it_is_not_known_statically():
  check = tf.function(lambda x: core.check_input(x, (2, 3), name="layer", validate_args=False),
                      input_signature=[tf.TensorSpec([None, None, None])])
  assert check(tf.zeros([4, 2, 3])).shape == [4, 2, 3]
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"layer: expected event shape \[2, 3\]"):
    check(tf.zeros([4, 2, 4]))
  with pytest.raises(ValueError, match="layer: expected event shape"):  # static: at once
    core.check_input(tf.zeros([4, 2, 4]), (2, 3), name="layer", validate_args=False)
  # Statically known shapes add nothing to the graph unless validate_args.
  x = tf.zeros([4, 2, 3])
  assert core.check_input(x, (2, 3), name="layer", validate_args=False) is x


def test_flatten_batch_round_trips_any_batch_rank():
  for shape, nd in (([5, 3, 4, 4, 2], 3), ([7, 2], 1), ([2, 3], 0), ([4, 4, 2], 3)):
    x = tf.reshape(tf.range(np.prod(shape), dtype=tf.float32), shape)
    flat, restore = core.flatten_batch(x, nd)
    assert flat.shape[1:] == shape[len(shape) - nd:]
    np.testing.assert_array_equal(restore(flat), x)
    assert restore(flat).shape == shape
  fn = tf.function(lambda t: core.flatten_batch(t, 1)[1](core.flatten_batch(t, 1)[0] * 2.),
                   input_signature=[tf.TensorSpec([None, None, 3])])
  np.testing.assert_array_equal(fn(tf.ones([2, 5, 3])), 2. * np.ones([2, 5, 3]))


def test_seeds_are_reproducible_and_independent():
  assert core.child_seeds(3, 4) == core.child_seeds(3, 4)
  assert len(set(core.child_seeds(3, 8))) == 8
  assert core.child_seeds(3, 2) == core.child_seeds(3, 5)[:2]
  np.testing.assert_array_equal(core.rng(1).normal(size=3), np.random.default_rng(1).normal(size=3))


def test_as_parameter_uses_values_as_given_and_checks_them():
  v = tf.Variable([1., 2.])
  assert core.as_parameter(v, dtype=tf.float32, event_shape=(2,), name="b", what="p") is v
  t = tf.constant([[1., 2.]])
  assert core.as_parameter(t, dtype=tf.float32, event_shape=(2,), name="b", what="p") is t
  made = core.as_parameter(None, dtype=tf.float64, event_shape=(2,), default=lambda: [0., 1.],
                           name="b", what="p")
  assert isinstance(made, tf.Variable) and made.dtype == tf.float64
  assert core.as_parameter(None, dtype=tf.float32, name="b", what="p") is None
  with pytest.raises(TypeError, match="b: p has dtype float64, expected float32"):
    core.as_parameter(tf.constant([1., 2.], tf.float64), dtype=tf.float32, name="b/", what="p")
  with pytest.raises(ValueError, match=r"batch_shape \+ \[3\]"):
    core.as_parameter([1., 2.], dtype=tf.float32, event_shape=(3,), name="b", what="p")


def test_data_init_rule():
  flag = core.init_flag()
  v = tf.Variable([0., 0.])
  compute = lambda x: [(v, tf.reduce_mean(x, 0))]
  with pytest.raises(ValueError, match="at least 3 events.*Got 2"):
    core.data_init(flag, tf.ones([2, 2]), compute, name="lay", event_ndims=1, min_events=3)
  assert not bool(flag.numpy()) and np.all(v.numpy() == 0.)
  with pytest.warns(core.DataInitWarning, match="only 3 events"):
    core.data_init(flag, tf.ones([3, 2]), compute, name="lay", event_ndims=1, min_events=3,
                   recommended_events=10)
  assert bool(flag.numpy()) and np.all(v.numpy() == 1.)
  assert core.data_init(flag, tf.ones([0, 2]), compute, name="lay", event_ndims=1) == []
  assert core.init_state(None).numpy() and core.as_init_flag(None, done=True, name="l") is None
