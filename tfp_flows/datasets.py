"""Toy 2-D densities, generated on the fly (nothing is downloaded).

``toy(name)`` returns a ``ToyDensity`` with ``sample(n, seed)`` (a float32 numpy array
``[n, 2]``) and, where the density is known in closed form, an exact ``log_prob(x)``:

=============  ===============================================  ==============
name           what                                             exact log_prob
=============  ===============================================  ==============
8gaussians     8 isotropic Gaussians (std 0.5/sqrt 2) on a       yes
               circle of radius 4/sqrt 2
checkerboard   uniform on 8 of the 16 2x2 cells of [-4, 4]^2     yes
6gaussians     6 anisotropic Gaussians with unequal weights      yes
               (0.30 .. 0.05) and covariances at 6 angles
moons          two interleaved half circles with noise (0.05)    no
rings          4 concentric noisy circles                        no
pinwheel       5 curved Gaussian arms                            no
2spirals       two interleaved spirals with noise (0.1)           yes (quadrature)
=============  ===============================================  ==============

``2spirals``: the spiral parameter ``t = 3 pi sqrt(u)`` (``u`` uniform), so ``t`` has density
``2t / (3 pi)^2`` on ``[0, 3 pi]``; a point is ``+-c(t) + 0.1 n`` with
``c(t) = (-t cos t, t sin t) / 3`` and ``n`` standard normal. Its density is the 1-D integral
``p(x) = sum_(+-) 1/2 int p(t) N(x; +-c(t), 0.01 I) dt``, computed by composite 12-point
Gauss-Legendre quadrature in log space on panels of width 0.1 in ``t`` (the noise seen along
the curve is at least ``0.1 / |c'(t)| >= 0.03`` wide in ``t``): wherever ``log p > -30`` the
absolute error of ``log p`` is below ``1e-10`` (``tests/test_datasets.py`` checks it against
a 20 times finer rule).

These are the standard benchmarks of the flow literature (e.g. FFJORD, Grathwohl et al. 2019);
KL(data || model) is ``mean(data.log_prob(x) - model.log_prob(x))`` over fresh data samples.

Images: ``digits()`` is scikit-learn's bundled 8x8 handwritten digits (1797 images, pixel
values 0..16, i.e. ``DIGITS_NUM_BINS = 17`` levels; shipped inside scikit-learn, nothing is
downloaded), split into train and test sets with a fixed seed.

Targets for variational inference (``Target``: a differentiable unnormalised ``log_prob`` in
TensorFlow, and ``log_normalizer()`` where it is known): ``potential("U1")`` .. ``"U4"`` (the
2-D energies of Rezende & Mohamed 2015), ``funnel(dim)`` (Neal's funnel, normalised) and
``logistic_regression()`` (a 31-D Bayesian logistic-regression posterior on scikit-learn's
breast-cancer data).

#### References

[1] Grathwohl et al. FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative
    Models. ICLR 2019 (the 2-D toy densities).
[2] Rezende, Mohamed. Variational Inference with Normalizing Flows. ICML 2015 (U1-U4).
[3] Neal. Slice sampling. Annals of Statistics 2003 (the funnel).
"""

import numpy as np

__all__ = ["toy", "TOY_NAMES", "ToyDensity", "digits", "DIGITS_NUM_BINS", "Target", "potential",
           "POTENTIAL_NAMES", "funnel", "logistic_regression"]

_R8 = 4. / np.sqrt(2.)
_S8 = 0.5 / np.sqrt(2.)
_CENTERS8 = _R8 * np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], 1)


class ToyDensity:
  """A named 2-D toy density: ``sample(n, seed)`` and, if known, ``log_prob(x)``."""

  def __init__(self, name, sampler, log_prob=None):
    self.name = name
    self._sampler = sampler
    self._log_prob = log_prob
    self.event_shape = (2,)

  @property
  def has_log_prob(self):
    return self._log_prob is not None

  def sample(self, n, seed=None):
    """``n`` samples as a float32 array ``[n, 2]`` (deterministic for an int ``seed``)."""
    n = int(n)
    if n < 0:
      raise ValueError(f"number of samples must be >= 0, got {n}.")
    return self._sampler(n, np.random.default_rng(seed)).astype(np.float32)

  def log_prob(self, x):
    """Exact log-density (float64 numpy) at ``x`` of shape ``[..., 2]``."""
    if self._log_prob is None:
      raise NotImplementedError(f"the {self.name!r} toy density has no closed-form log_prob; "
                                f"those that do: {[k for k, v in _TOYS.items() if v[1]]}.")
    x = np.asarray(x, np.float64)
    if x.shape[-1] != 2:
      raise ValueError(f"toy densities are 2-D: expected shape [..., 2], got {list(x.shape)}.")
    return self._log_prob(x)

  def __repr__(self):
    return f"ToyDensity({self.name!r}, exact_log_prob={self.has_log_prob})"


def _gaussians8(n, rng):
  return _CENTERS8[rng.integers(0, 8, n)] + _S8 * rng.standard_normal((n, 2))


def _gaussians8_log_prob(x):
  d2 = np.sum((x[..., None, :] - _CENTERS8) ** 2, axis=-1) / _S8 ** 2
  comp = -0.5 * d2 - np.log(2 * np.pi * _S8 ** 2) - np.log(8.)
  m = comp.max(-1, keepdims=True)
  return (m + np.log(np.sum(np.exp(comp - m), -1, keepdims=True)))[..., 0]


# Checkerboard cells (column, row) in units of 2, over [-4, 4)^2: column + row even.
_CELLS = np.array([(i, j) for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 0])


def _checkerboard(n, rng):
  cells = _CELLS[rng.integers(0, len(_CELLS), n)]
  return 2. * (cells + rng.uniform(size=(n, 2)))


def _checkerboard_log_prob(x):
  cell = np.floor(x / 2.)
  inside = (np.all(np.abs(x) < 4., -1) & ((cell[..., 0] + cell[..., 1]) % 2 == 0))
  return np.where(inside, -np.log(32.), -np.inf)


# Six anisotropic Gaussians with unequal weights: centres on a circle of radius 2.5, principal
# standard deviations (0.6, 0.12) .. (0.3, 0.15), each rotated by its own angle.
_W6 = np.array([0.30, 0.22, 0.16, 0.13, 0.12, 0.07])
_ANGLES6 = np.arange(6) * np.pi / 3 + np.pi / 6
_CENTERS6 = 2.5 * np.stack([np.cos(_ANGLES6), np.sin(_ANGLES6)], 1)
_STDS6 = np.array([[0.6, 0.12], [0.5, 0.1], [0.4, 0.2], [0.7, 0.15], [0.3, 0.15], [0.45, 0.08]])
_ROT6 = np.arange(6) * 0.7  # rotation of each component's principal axes
_R6 = np.stack([np.stack([np.cos(_ROT6), -np.sin(_ROT6)], -1),
                np.stack([np.sin(_ROT6), np.cos(_ROT6)], -1)], -2)  # [6, 2, 2]
_CHOL6 = _R6 * _STDS6[:, None, :]  # L = R diag(std): cov = L L^T


def _gaussians6(n, rng):
  k = rng.choice(6, size=n, p=_W6)
  z = rng.standard_normal((n, 2))
  return _CENTERS6[k] + np.einsum("nij,nj->ni", _CHOL6[k], z)


def _gaussians6_log_prob(x):
  diff = x[..., None, :] - _CENTERS6  # [..., 6, 2]
  # Whitened coordinates: L^-1 diff = diag(1/std) R^T diff.
  white = np.einsum("kji,...kj->...ki", _R6, diff) / _STDS6
  comp = (-0.5 * np.sum(white ** 2, -1) - np.log(2 * np.pi) - np.sum(np.log(_STDS6), -1)
          + np.log(_W6))
  return _logsumexp(comp, -1)


def _logsumexp(a, axis):
  m = np.max(a, axis=axis, keepdims=True)
  m = np.where(np.isfinite(m), m, 0.)
  return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def _moons(n, rng):
  n1 = n // 2
  t = np.pi * rng.uniform(size=n)
  upper = np.stack([np.cos(t), np.sin(t)], 1)
  lower = np.stack([1. - np.cos(t), 0.5 - np.sin(t)], 1)
  x = np.where((np.arange(n) < n1)[:, None], upper, lower)
  x = x + 0.05 * rng.standard_normal((n, 2))
  return 2. * (x - np.array([0.5, 0.25]))


def _rings(n, rng):
  radii = np.array([0.75, 1.5, 2.25, 3.0]) * 1.25
  which = rng.integers(0, 4, n)
  t = 2 * np.pi * rng.uniform(size=n)
  x = radii[which, None] * np.stack([np.cos(t), np.sin(t)], 1)
  return x + 0.08 * rng.standard_normal((n, 2))


def _pinwheel(n, rng, arms=5, radial_std=0.3, tangential_std=0.1, rate=0.25):
  base_angles = np.linspace(0., 2 * np.pi, arms, endpoint=False)
  feats = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
  feats[:, 0] += 1.
  arm = rng.integers(0, arms, n)
  angle = base_angles[arm] + rate * np.exp(feats[:, 0])
  cos, sin = np.cos(angle), np.sin(angle)
  x = np.stack([cos * feats[:, 0] - sin * feats[:, 1], sin * feats[:, 0] + cos * feats[:, 1]], 1)
  return 2. * x


def _spirals(n, rng):
  t = np.sqrt(rng.uniform(size=n)) * 3 * np.pi
  sign = np.where(rng.uniform(size=n) < 0.5, 1., -1.)[:, None]
  x = sign * np.stack([-np.cos(t) * t, np.sin(t) * t], 1) / 3.
  return x + 0.1 * rng.standard_normal((n, 2))


_SPIRAL_T_MAX = 3 * np.pi
_SPIRAL_NOISE = 0.1


def _spiral_nodes(panel_width, order):
  """Gauss-Legendre nodes ``t`` on ``[0, 3 pi]`` and log(weight * p(t)), composite panels."""
  num_panels = int(np.ceil(_SPIRAL_T_MAX / panel_width))
  edges = np.linspace(0., _SPIRAL_T_MAX, num_panels + 1)
  g, w = np.polynomial.legendre.leggauss(order)
  half = 0.5 * np.diff(edges)[:, None]
  t = ((edges[:-1, None] + edges[1:, None]) / 2 + half * g).ravel()
  weights = (half * w).ravel()
  return t, np.log(weights) + np.log(2. * t / _SPIRAL_T_MAX ** 2)


def _spirals_log_prob(x, panel_width=0.1, order=12):
  t, log_wp = _spiral_nodes(panel_width, order)
  curve = np.stack([-np.cos(t) * t, np.sin(t) * t], 1) / 3.  # [T, 2]
  var = _SPIRAL_NOISE ** 2
  flat = x.reshape(-1, 2)
  out = np.empty(len(flat))
  for i in range(0, len(flat), 2048):  # [chunk, T] at a time
    xb = flat[i:i + 2048]
    terms = []
    for sign in (1., -1.):
      d2 = np.sum((xb[:, None, :] - sign * curve) ** 2, -1)
      terms.append(log_wp - 0.5 * d2 / var)
    out[i:i + 2048] = (_logsumexp(np.concatenate(terms, 1), 1)
                       + np.log(0.5) - np.log(2 * np.pi * var))
  return out.reshape(x.shape[:-1])


_TOYS = {
    "8gaussians": (_gaussians8, _gaussians8_log_prob),
    "6gaussians": (_gaussians6, _gaussians6_log_prob),
    "checkerboard": (_checkerboard, _checkerboard_log_prob),
    "moons": (_moons, None),
    "rings": (_rings, None),
    "pinwheel": (_pinwheel, None),
    "2spirals": (_spirals, _spirals_log_prob),
}
TOY_NAMES = tuple(_TOYS)
_ALIASES = {"two_moons": "moons", "twomoons": "moons", "2moons": "moons",
            "spirals": "2spirals", "eight_gaussians": "8gaussians",
            "six_gaussians": "6gaussians"}


def toy(name):
  """The toy density called ``name`` (see the module docstring for the list)."""
  key = _ALIASES.get(str(name).lower(), str(name).lower())
  if key not in _TOYS:
    raise ValueError(f"unknown toy density {name!r}; expected one of {list(TOY_NAMES)}.")
  sampler, log_prob = _TOYS[key]
  return ToyDensity(key, sampler, log_prob)


DIGITS_NUM_BINS = 17  # pixel values 0..16


def digits(test_fraction=0.2, seed=0, return_labels=False):
  """scikit-learn's 8x8 digits as ``(x_train, x_test)`` int32 arrays ``[N, 8, 8, 1]``, values 0..16.

  Args:
    test_fraction: fraction of the 1797 images held out (a seeded random permutation).
    seed: seed of the split; the same seed gives the same split.
    return_labels: also return the class labels: ``(x_train, y_train, x_test, y_test)``.

  Requires scikit-learn (``pip install "tfp_flows[examples]"``).
  """
  try:
    from sklearn.datasets import load_digits
  except ImportError as e:
    raise ImportError("digits() needs scikit-learn: pip install scikit-learn") from e
  if not 0. < float(test_fraction) < 1.:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
  data = load_digits()
  images = np.asarray(data.images).astype(np.int32)[..., None]
  labels = np.asarray(data.target).astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(images))
  num_test = int(round(float(test_fraction) * len(images)))
  test, train = order[:num_test], order[num_test:]
  if return_labels:
    return images[train], labels[train], images[test], labels[test]
  return images[train], images[test]


# --- Unnormalised targets for variational inference -------------------------------------------


class Target:
  """An unnormalised log-density to fit by reverse KL: ``log_prob(z)`` (TensorFlow).

  Attributes:
    name: the target's name.
    event_size: dimension of ``z``.
    log_prob: ``z [..., event_size] -> [...]``, the log-density up to the constant
      ``log_normalizer()`` (differentiable; float32 or float64, following ``z``).
  """

  def __init__(self, name, event_size, log_prob, log_normalizer=None):
    self.name = name
    self.event_size = int(event_size)
    self.log_prob = log_prob
    self._log_normalizer = log_normalizer

  @property
  def event_shape(self):
    return (self.event_size,)

  def log_normalizer(self):
    """``log Z = log ∫ exp(log_prob(z)) dz`` where known (exact or by quadrature), else None.

    With it, a reverse-KL loss ``E_q[log q - log_prob]`` converts to ``KL(q || p)`` by adding
    ``log Z``.
    """
    if callable(self._log_normalizer):
      self._log_normalizer = float(self._log_normalizer())
    return self._log_normalizer

  def __repr__(self):
    return f"Target({self.name!r}, event_size={self.event_size})"


# The energies U1-U4 of Rezende & Mohamed (2015, table 1 and fig. 3), p(z) ∝ exp(-U(z)):
#
#   w1 = sin(2 pi z1 / 4),  w2 = 3 exp(-((z1 - 1) / 0.6)^2 / 2),  w3 = 3 sigmoid((z1 - 1) / 0.3)
#   U1 = ((|z| - 2) / 0.4)^2 / 2 - log(exp(-((z1 - 2) / 0.6)^2 / 2) + exp(-((z1 + 2) / 0.6)^2 / 2))
#   U2 = ((z2 - w1) / 0.4)^2 / 2
#   U3 = -log(exp(-((z2 - w1) / 0.35)^2 / 2) + exp(-((z2 - w1 + w2) / 0.35)^2 / 2))
#   U4 = -log(exp(-((z2 - w1) / 0.4)^2 / 2) + exp(-((z2 - w1 + w3) / 0.35)^2 / 2))
#
# U2-U4 do not confine z1 (exp(-U) is not integrable), so every potential gets the soft wall
# ((|z1| - 4)_+ / 0.2)^2 / 2, zero on the box [-4, 4]^2 where the paper plots them.

POTENTIAL_BOX = 4.
_WALL_WIDTH = 0.2


def _energies():
  import tensorflow as tf  # here, not at the top: the CLI reads TOY_NAMES before TF loads

  def _half_square(t):
    return 0.5 * tf.square(t)

  def w1(z):
    return tf.sin(2. * np.pi * z[..., 0] / 4.)

  def u1(z):
    r = tf.norm(z, axis=-1)
    modes = tf.stack([-_half_square((z[..., 0] - 2.) / 0.6),
                      -_half_square((z[..., 0] + 2.) / 0.6)], -1)
    return _half_square((r - 2.) / 0.4) - tf.reduce_logsumexp(modes, -1)

  def u2(z):
    return _half_square((z[..., 1] - w1(z)) / 0.4)

  def u3(z):
    w2 = 3. * tf.exp(-_half_square((z[..., 0] - 1.) / 0.6))
    a = z[..., 1] - w1(z)
    return -tf.reduce_logsumexp(
        tf.stack([-_half_square(a / 0.35), -_half_square((a + w2) / 0.35)], -1), -1)

  def u4(z):
    w3 = 3. * tf.sigmoid((z[..., 0] - 1.) / 0.3)
    a = z[..., 1] - w1(z)
    return -tf.reduce_logsumexp(
        tf.stack([-_half_square(a / 0.4), -_half_square((a + w3) / 0.35)], -1), -1)

  return {"U1": u1, "U2": u2, "U3": u3, "U4": u4}


POTENTIAL_NAMES = ("U1", "U2", "U3", "U4")


def potential(name):
  """The 2-D target ``exp(-U(z) - wall(z))`` for ``U`` one of ``U1``-``U4`` (Rezende & Mohamed).

  ``log_normalizer()`` integrates the density by the midpoint rule on
  ``[-6, 6] x [-8, 8]`` (1200 x 1600 cells; the wall's tails and U1's ring lie well inside).
  """
  import tensorflow as tf  # lazy: see _energies
  key = str(name).upper()
  energies = _energies()
  if key not in energies:
    raise ValueError(f"unknown potential {name!r}; expected one of {list(POTENTIAL_NAMES)}.")
  energy = energies[key]

  def log_prob(z):
    z = tf.convert_to_tensor(z)
    if z.shape[-1] is not None and z.shape[-1] != 2:
      raise ValueError(f"potential {key}: expected z of shape [..., 2], got {z.shape}.")
    wall = 0.5 * tf.square(tf.nn.relu(tf.abs(z[..., 0]) - POTENTIAL_BOX) / _WALL_WIDTH)
    return -(energy(z) + wall)

  def log_normalizer():
    x1 = np.linspace(-6., 6., 1201)
    x2 = np.linspace(-8., 8., 1601)
    c1, c2 = 0.5 * (x1[1:] + x1[:-1]), 0.5 * (x2[1:] + x2[:-1])
    grid = np.stack(np.meshgrid(c1, c2, indexing="ij"), -1).reshape(-1, 2)
    lp = log_prob(tf.constant(grid, tf.float64)).numpy()
    m = lp.max()
    return m + np.log(np.sum(np.exp(lp - m)) * (x1[1] - x1[0]) * (x2[1] - x2[0]))

  return Target(key, 2, log_prob, log_normalizer)


def funnel(dim=10):
  """Neal's funnel in ``dim`` dimensions: ``v ~ N(0, 3^2)``, ``x_i | v ~ N(0, e^v)``.

  ``z = (v, x_1..x_{dim-1})``; the density is normalised (``log_normalizer() == 0``), so a
  reverse-KL loss is exactly ``KL(q || p)``.
  """
  import tensorflow as tf  # lazy: see _energies
  if int(dim) < 2:
    raise ValueError(f"funnel: dim must be >= 2, got {dim}.")
  log_2pi = np.log(2. * np.pi)

  def log_prob(z):
    z = tf.convert_to_tensor(z)
    v, x = z[..., 0], z[..., 1:]
    log_pv = -0.5 * tf.square(v / 3.) - np.log(3.) - 0.5 * log_2pi
    log_px = tf.reduce_sum(-0.5 * tf.square(x) * tf.exp(-v)[..., None] - 0.5 * v[..., None]
                           - 0.5 * log_2pi, -1)
    return log_pv + log_px

  return Target(f"funnel_{int(dim)}d", dim, log_prob, 0.)


def logistic_regression():
  """Posterior of Bayesian logistic regression on scikit-learn's breast-cancer data.

  569 patients, 30 features standardised (full-data mean and std) plus an intercept: ``w`` in
  R^31 with prior ``N(0, I)``; ``log_prob(w) = log N(w; 0, I) + sum_n log Bernoulli(y_n;
  sigmoid(x_n . w))`` (unnormalised: the evidence is unknown). Float32 or float64 ``w``.
  Requires scikit-learn.
  """
  import tensorflow as tf  # lazy: see _energies
  try:
    from sklearn.datasets import load_breast_cancer  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("logistic_regression() needs scikit-learn: pip install scikit-learn") from e
  x, y = load_breast_cancer(return_X_y=True)
  x = np.concatenate([np.ones((len(x), 1)), (x - x.mean(0)) / x.std(0)], 1)
  sign = 2. * y - 1.  # log Bernoulli(y; sigmoid(l)) = log_sigmoid((2y - 1) l)
  d = x.shape[1]

  def log_prob(w):
    w = tf.convert_to_tensor(w)
    logits = tf.tensordot(w, tf.constant(x, w.dtype), [[-1], [-1]])  # [..., N]
    prior = tf.reduce_sum(-0.5 * tf.square(w), -1) - 0.5 * d * np.log(2. * np.pi)
    return prior + tf.reduce_sum(tf.math.log_sigmoid(tf.constant(sign, w.dtype) * logits), -1)

  return Target("logistic_regression", d, log_prob)
