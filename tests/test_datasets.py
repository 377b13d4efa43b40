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


@pytest.mark.parametrize("name,points", [("8gaussians", 1200), ("checkerboard", 1200),
                                         ("6gaussians", 600), ("2spirals", 160)])
def test_exact_log_prob_integrates_to_one(name, points):
  toy = tff.datasets.toy(name)
  lo, hi = (-4.8, 4.8) if name == "2spirals" else (-6., 6.)
  total = testing.integrate_density(toy.log_prob, [lo, lo], [hi, hi], points)
  assert abs(total - 1.) < 2e-3, total


def test_spiral_quadrature_is_converged():
  """The spirals' log-density (a 1-D integral) against a 20 times finer quadrature rule."""
  from tfp_flows import datasets
  rng = np.random.default_rng(0)
  x = np.concatenate([datasets.toy("2spirals").sample(300, seed=1), rng.uniform(-5, 5, (300, 2))])
  ref = datasets._spirals_log_prob(x, panel_width=0.005, order=16)
  got = datasets.toy("2spirals").log_prob(x)
  where = ref > -30.
  assert where.sum() > 350
  np.testing.assert_allclose(got[where], ref[where], rtol=0, atol=1e-9)


def test_six_gaussians_match_scipy():
  from scipy import stats
  from tfp_flows import datasets
  x = np.random.default_rng(1).normal(0., 3., (50, 2))
  cov = np.einsum("kij,klj->kil", datasets._CHOL6, datasets._CHOL6)
  ref = np.log(sum(w * stats.multivariate_normal(m, c).pdf(x)
                   for w, m, c in zip(datasets._W6, datasets._CENTERS6, cov)))
  np.testing.assert_allclose(tff.datasets.toy("6gaussians").log_prob(x), ref, rtol=1e-10)


@pytest.mark.parametrize("name,sub", [("8gaussians", 4), ("checkerboard", 4), ("6gaussians", 10),
                                      ("2spirals", 6)])
def test_exact_log_prob_matches_samples(name, sub):
  """Samples land where the density is: bin counts agree with the density's bin integrals."""
  toy = tff.datasets.toy(name)
  x = toy.sample(200_000, seed=0)
  assert np.all(np.isfinite(toy.log_prob(x)))
  hist, xe, _ = np.histogram2d(x[:, 0], x[:, 1], bins=24, range=[[-6, 6], [-6, 6]])
  # Midpoint rule on a sub x sub grid inside each 0.5 x 0.5 bin.
  fine = -6. + (np.arange(24 * sub) + 0.5) * 0.5 / sub
  grid = np.stack(np.meshgrid(fine, fine, indexing="ij"), -1)
  mass = np.exp(toy.log_prob(grid)) * (0.5 / sub) ** 2
  expected = mass.reshape(24, sub, 24, sub).sum((1, 3)) * len(x)
  busy = expected > 1000  # (a checkerboard bin holds ~1560)
  assert busy.sum() >= 8
  np.testing.assert_allclose(hist[busy], expected[busy], rtol=0.1)


def test_errors():
  with pytest.raises(ValueError, match="unknown toy density"):
    tff.datasets.toy("swissroll")
  with pytest.raises(NotImplementedError, match="no closed-form"):
    tff.datasets.toy("moons").log_prob(np.zeros((1, 2)))
  assert tff.datasets.toy("2spirals").has_log_prob and tff.datasets.toy("6gaussians").has_log_prob
  with pytest.raises(ValueError, match=r"\[\.\.\., 2\]"):
    tff.datasets.toy("8gaussians").log_prob(np.zeros((1, 3)))
  assert tff.datasets.toy("two_moons").name == "moons"
