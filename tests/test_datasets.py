"""Toy densities: samples, determinism, exact log-densities (normalised and consistent)."""

import numpy as np
import pytest

import tfp_flows as tff
from tfp_flows import testing


@pytest.mark.parametrize("name", tff.datasets.TOY_NAMES)
def test_samples(name):
  toy = tff.datasets.toy(name)
  a, b = toy.sample(500, seed=3), toy.sample(500, seed=3)
  assert a.shape == (500, 2) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, toy.sample(500, seed=4))
  assert np.all(np.isfinite(a)) and np.abs(a).max() < 10.


@pytest.mark.parametrize("name", ["8gaussians", "checkerboard"])
def test_exact_log_prob_integrates_to_one(name):
  toy = tff.datasets.toy(name)
  total = testing.integrate_density(toy.log_prob, [-6., -6.], [6., 6.], 1200)
  assert abs(total - 1.) < 2e-3, total


@pytest.mark.parametrize("name", ["8gaussians", "checkerboard"])
def test_exact_log_prob_matches_samples(name):
  """Samples land where the density is: the histogram agrees with the density."""
  toy = tff.datasets.toy(name)
  x = toy.sample(200_000, seed=0)
  assert np.all(np.isfinite(toy.log_prob(x)))
  hist, xe, ye = np.histogram2d(x[:, 0], x[:, 1], bins=24, range=[[-6, 6], [-6, 6]])
  centers = np.stack(np.meshgrid((xe[:-1] + xe[1:]) / 2, (ye[:-1] + ye[1:]) / 2,
                                 indexing="ij"), -1)
  expected = np.exp(toy.log_prob(centers)) * 0.5 ** 2 * len(x)
  busy = expected > 2000
  np.testing.assert_allclose(hist[busy], expected[busy], rtol=0.25)


def test_errors():
  with pytest.raises(ValueError, match="unknown toy density"):
    tff.datasets.toy("swissroll")
  with pytest.raises(NotImplementedError, match="no closed-form"):
    tff.datasets.toy("moons").log_prob(np.zeros((1, 2)))
  with pytest.raises(ValueError, match=r"\[\.\.\., 2\]"):
    tff.datasets.toy("8gaussians").log_prob(np.zeros((1, 3)))
  assert tff.datasets.toy("two_moons").name == "moons"
