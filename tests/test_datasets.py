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
                                      # ~60 s: its log_prob integrates along the spiral.
                                      pytest.param("2spirals", 6, marks=pytest.mark.slow)])
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


# --- VI targets ----------------------------------------------------------------------------------

def _potentials_numpy(z):
  """U1-U4 of Rezende & Mohamed (2015, table 1), written independently in numpy."""
  z1, z2 = z[..., 0], z[..., 1]
  w1 = np.sin(2 * np.pi * z1 / 4)
  w2 = 3 * np.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
  w3 = 3 / (1 + np.exp(-(z1 - 1) / 0.3))
  u1 = (0.5 * ((np.linalg.norm(z, axis=-1) - 2) / 0.4) ** 2
        - np.log(np.exp(-0.5 * ((z1 - 2) / 0.6) ** 2) + np.exp(-0.5 * ((z1 + 2) / 0.6) ** 2)))
  u2 = 0.5 * ((z2 - w1) / 0.4) ** 2
  u3 = -np.log(np.exp(-0.5 * ((z2 - w1) / 0.35) ** 2) + np.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2))
  u4 = -np.log(np.exp(-0.5 * ((z2 - w1) / 0.4) ** 2) + np.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2))
  wall = 0.5 * (np.maximum(np.abs(z1) - 4., 0.) / 0.2) ** 2
  return {"U1": u1 + wall, "U2": u2 + wall, "U3": u3 + wall, "U4": u4 + wall}


@pytest.mark.parametrize("name", tff.datasets.POTENTIAL_NAMES)
def test_potentials_match_the_paper_formulas(name):
  z = np.random.default_rng(0).uniform(-5., 5., size=(3, 50, 2))  # also outside the box
  target = tff.datasets.potential(name)
  assert target.event_size == 2
  expected = -_potentials_numpy(z)[name]
  np.testing.assert_allclose(target.log_prob(z).numpy(), expected, rtol=1e-10, atol=1e-10)
  got32 = target.log_prob(z.astype(np.float32))
  assert got32.dtype == np.float32
  np.testing.assert_allclose(got32, expected, rtol=1e-4, atol=1e-4)


def test_potential_normalizer_by_independent_quadrature():
  # scipy's adaptive quadrature of exp(-U1) on the plane (U1's ring lies inside |z| < 4).
  integrate = pytest.importorskip("scipy.integrate")
  target = tff.datasets.potential("U1")
  density = lambda z2, z1: np.exp(-_potentials_numpy(np.array([z1, z2]))["U1"])
  z, _ = integrate.dblquad(density, -5., 5., -5., 5., epsabs=1e-10)
  np.testing.assert_allclose(target.log_normalizer(), np.log(z), atol=1e-4)
  with pytest.raises(ValueError, match="unknown potential"):
    tff.datasets.potential("U5")
  with pytest.raises(ValueError, match=r"\[\.\.\., 2\]"):
    target.log_prob(np.zeros((4, 3)))


def test_funnel_is_neals_funnel_and_normalised():
  scipy_stats = pytest.importorskip("scipy.stats")
  target = tff.datasets.funnel(5)
  assert target.event_shape == (5,) and target.log_normalizer() == 0.
  w = np.random.default_rng(1).normal(size=(4, 5)) * [3., 1., 1., 1., 1.]
  expected = (scipy_stats.norm.logpdf(w[:, 0], 0., 3.)
              + scipy_stats.norm.logpdf(w[:, 1:], 0., np.exp(w[:, :1] / 2.)).sum(-1))
  np.testing.assert_allclose(target.log_prob(w), expected, rtol=1e-12)
  # Normalised: in 2-D, integrating out x at fixed v leaves the N(0, 3^2) density of v, and
  # that integrates to 1.
  two = tff.datasets.funnel(2)
  for v in (-3., 0., 2.5):
    width = 12. * np.exp(v / 2.)
    marginal = testing.integrate_density(
        lambda x: two.log_prob(np.concatenate([np.full_like(x, v), x], -1)).numpy(),
        [-width], [width], 4000)
    np.testing.assert_allclose(marginal, scipy_stats.norm.pdf(v, 0., 3.), rtol=1e-6)


def test_logistic_regression_posterior_matches_numpy():
  pytest.importorskip("sklearn")
  scipy_stats = pytest.importorskip("scipy.stats")
  from sklearn.datasets import load_breast_cancer
  target = tff.datasets.logistic_regression()
  x, y = load_breast_cancer(return_X_y=True)
  x = np.c_[np.ones(len(x)), (x - x.mean(0)) / x.std(0)]
  assert target.event_size == x.shape[1] == 31 and target.log_normalizer() is None
  w = np.random.default_rng(0).normal(size=(3, 31))
  logits = w @ x.T
  expected = scipy_stats.norm.logpdf(w).sum(-1) + np.sum(y * logits - np.logaddexp(0., logits), -1)
  np.testing.assert_allclose(target.log_prob(w), expected, rtol=1e-10)
  np.testing.assert_allclose(target.log_prob(w[0].astype(np.float32)), expected[0], rtol=1e-4)
