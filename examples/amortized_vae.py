"""Amortised planar-flow VAE (Rezende & Mohamed 2015, section 6.2) on binarised digits.

The approximate posterior of a VAE is a diagonal Gaussian refined by K planar layers whose
parameters the encoder outputs *per data point*::

    (mu, log sigma, {u_k, w_k, b_k}_k) = encoder(x)
    z_0 ~ q_0(z | x) = N(mu, diag sigma^2),    z_K = f_K(... f_1(z_0)),
    f_k(z) = z + û_k tanh(w_kᵀ z + b_k)         (tff.bijectors.Planar, û_k keeps f_k invertible)
    log q_K(z_K | x) = log q_0(z_0 | x) - sum_k log|1 + h'(w_kᵀ z_{k-1} + b_k) w_kᵀ û_k|

The planar layers are built from the encoder's output tensors at every step (inside
``tf.function``), so each layer has batch shape ``[N]`` (one flow per data point) and the
gradients of the bound reach the encoder through u, w and b. ``q`` is an ordinary
``tfd.TransformedDistribution``; ``experimental_sample_and_log_prob`` runs the flow forward only.
K = 0 is the plain VAE with the diagonal-Gaussian posterior.

Model: decoder ``p(x | z) = prod_j Bernoulli(x_j; logits_j(z))``, prior ``N(0, I)``; encoder
and decoder are Keras 3 MLPs (two hidden layers, softplus... ReLU here). Bounds per test image
(nats, higher is better)::

    ELBO = E_q[log p(x | z_K) + log p(z_K) - log q_K(z_K | x)]
    IWAE_k = E[log (1/k) sum_i p(x, z_i) / q_K(z_i | x)]  (k importance samples; -> log p(x))

Training maximises the ELBO with the KL-type terms annealed (``beta`` from 0.01 to 1 over
``--warmup_steps``, as in the paper) on dynamically binarised images (pixels drawn as
Bernoulli(intensity) at every step); the test images are binarised once with a fixed seed.
Data: ``--data`` (an ``.npz`` with key ``images``, uint8 ``[N, H, W]``); by default the
shared 8k-image MNIST file when present (7,000 train / 1,000 test), else scikit-learn's 8x8
digits (1,438 / 359). The paper trained far larger models for far longer on the full 60k MNIST
(its table: -ln p(x) 89.9 for K = 0 ... 85.1 for K = 80); the figures here are a scaled-down
run on a CPU, compared across K under identical budgets.

Run (the full run took 25 minutes on 2 heavily shared CPU cores)::

    python examples/amortized_vae.py                      # K = 0, 2, 8, 16; writes JSON
    python examples/amortized_vae.py --quick              # smoke run, well under a minute
    python examples/amortized_vae.py --flow_lengths=0,8 --epochs=50 --data=/path/mnist.npz

Writes ``metrics.json`` into ``--out`` (default ``runs/amortized_vae``) and prints a table; the
recorded runs are ``benchmarks/results/amortized_vae*.json``.

#### References

[1] Rezende, Mohamed. Variational Inference with Normalizing Flows. ICML 2015.
[2] Burda, Grosse, Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
"""

import json
import os
import platform
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import keras
import tfp_flows as tff

tfb = tfp.bijectors
tfd = tfp.distributions

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
# The project's shared data folder, next to the repository (or inside it).
SHARED_MNIST = [os.path.normpath(os.path.join(_ROOT, *parts, "data", "mnist_8k.npz"))
                for parts in ((os.pardir, "shared"), ("shared",))]


def load_data(path=None, num_test=1000, seed=0):
  """``(train_intensities, test_binary, source)``: float32 ``[N, D]`` arrays in [0, 1].

  ``path``: an ``.npz`` with key ``images`` (uint8 ``[N, H, W]``); None: the shared MNIST file
  when present, else scikit-learn's digits. Test images are binarised once (seeded); training
  intensities are binarised afresh at every step (``binarize``).
  """
  if path is None:
    path = next((p for p in SHARED_MNIST if os.path.exists(p)), None)
  if path is not None:
    with np.load(path) as f:
      images = f["images"].astype(np.float32) / 255.
    order = np.random.default_rng(seed).permutation(len(images))
    images = images[order].reshape(len(images), -1)
    if not 0 < num_test < len(images):
      raise ValueError(f"num_test must be in (0, {len(images)}), got {num_test}.")
    train, test = images[num_test:], images[:num_test]
    source = os.path.basename(path)
  else:
    x_train, x_test = tff.datasets.digits(seed=seed)
    train = x_train.reshape(len(x_train), -1).astype(np.float32) / 16.
    test = x_test.reshape(len(x_test), -1).astype(np.float32) / 16.
    source = "sklearn digits"
  rng = np.random.default_rng(seed + 1)
  test = (rng.uniform(size=test.shape) < test).astype(np.float32)
  return train, test, source


def binarize(intensities, seed):
  """Bernoulli(intensity) pixels, stateless in ``seed``."""
  u = tf.random.stateless_uniform(tf.shape(intensities), seed, dtype=intensities.dtype)
  return tf.cast(u < intensities, intensities.dtype)


class AmortizedPlanarVAE:
  """Encoder (Gaussian + K planar layers per data point), Bernoulli decoder, N(0, I) prior."""

  def __init__(self, data_dim, latent_dim=40, hidden=300, num_flows=0, dtype="float32",
               seed=0):
    if num_flows < 0:
      raise ValueError(f"num_flows must be >= 0, got {num_flows}.")
    keras.utils.set_random_seed(seed)
    self.data_dim, self.latent_dim, self.num_flows = data_dim, latent_dim, num_flows
    self.dtype = tf.as_dtype(dtype)
    d, k = latent_dim, num_flows

    def mlp(inputs, outputs, name):
      return keras.Sequential([
          keras.Input([inputs], dtype=dtype),
          keras.layers.Dense(hidden, activation="relu", dtype=dtype),
          keras.layers.Dense(hidden, activation="relu", dtype=dtype),
          keras.layers.Dense(outputs, dtype=dtype)], name=name)

    # Encoder: [mu, log sigma] and, per planar layer, [u (d), w (d), b (1)].
    self.encoder = mlp(data_dim, 2 * d + k * (2 * d + 1), "encoder")
    self.decoder = mlp(d, data_dim, "decoder")
    self.prior = tfd.MultivariateNormalDiag(tf.zeros([d], self.dtype))

  @property
  def trainable_variables(self):
    return self.encoder.trainable_variables + self.decoder.trainable_variables

  def posterior(self, x):
    """``q_K(z | x)``: a ``TransformedDistribution`` with batch shape ``[N]``."""
    d, k = self.latent_dim, self.num_flows
    out = self.encoder(x)
    mu, log_sigma = out[:, :d], out[:, d:2 * d]
    base = tfd.MultivariateNormalDiag(mu, tf.exp(log_sigma))
    if k == 0:
      return base
    flow = tf.reshape(out[:, 2 * d:], [-1, k, 2 * d + 1])
    layers = [tff.bijectors.Planar(d, u=flow[:, i, :d], w=flow[:, i, d:2 * d],
                                   b=flow[:, i, 2 * d], dtype=self.dtype, name=f"planar_{i}")
              for i in range(k)]
    return tfd.TransformedDistribution(base, tfb.Chain(layers[::-1]))

  def log_weights(self, x, num_samples, seed):
    """``log p(x, z_i) - log q_K(z_i | x)`` for ``num_samples`` draws: ``[num_samples, N]``."""
    q = self.posterior(x)
    z, log_q = q.experimental_sample_and_log_prob(num_samples, seed=seed)
    logits = self.decoder(tf.reshape(z, [-1, self.latent_dim]))
    logits = tf.reshape(logits, [num_samples, -1, self.data_dim])
    log_lik = -tf.reduce_sum(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.broadcast_to(x, tf.shape(logits)),
                                                logits=logits), axis=-1)
    return log_lik, self.prior.log_prob(z) - log_q

  def bounds(self, x, num_samples, seed):
    """Per data point ``(ELBO, IWAE_k)`` estimated from the same ``num_samples`` draws."""
    log_lik, log_ratio = self.log_weights(x, num_samples, seed)
    log_w = log_lik + log_ratio
    elbo = tf.reduce_mean(log_w, axis=0)
    iwae = tf.reduce_logsumexp(log_w, axis=0) - tf.math.log(tf.cast(num_samples, log_w.dtype))
    return elbo, iwae

  def loss(self, x, beta, seed):
    """Negative annealed ELBO (one sample): ``-E[log p(x|z) + beta (log p(z) - log q)]``."""
    log_lik, log_ratio = self.log_weights(x, 1, seed)
    return -tf.reduce_mean(log_lik + beta * log_ratio)


def train(model, train_x, *, epochs, batch_size, learning_rate, warmup_steps, seed,
          log_every=0):
  """Adam on the annealed ELBO; returns ``(losses per epoch, seconds)``."""
  optimizer = keras.optimizers.Adam(learning_rate)
  variables = model.trainable_variables
  optimizer.build(variables)
  data = tf.constant(train_x, model.dtype)
  n = len(train_x)
  steps_per_epoch = max(1, n // batch_size)

  @tf.function
  def step(x_intensity, t):
    t = tf.cast(t, model.dtype)
    beta = tf.minimum(1., 0.01 + t / float(max(warmup_steps, 1)))
    seeds = tf.random.experimental.stateless_split(
        tf.stack([tf.constant(seed, tf.int64), tf.cast(t, tf.int64)]), 2)
    x = binarize(x_intensity, tf.cast(seeds[0], tf.int32))
    with tf.GradientTape() as tape:
      loss = model.loss(x, beta, tf.cast(seeds[1], tf.int32))
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    return loss

  rng = np.random.default_rng(seed)
  history, start, t = [], time.perf_counter(), 0
  for epoch in range(epochs):
    order = rng.permutation(n)
    total = 0.
    for i in range(steps_per_epoch):
      batch = tf.gather(data, order[i * batch_size:(i + 1) * batch_size])
      loss = step(batch, tf.constant(t))
      total += float(loss)
      t += 1
    history.append(total / steps_per_epoch)
    if not np.isfinite(history[-1]):
      raise FloatingPointError(f"training diverged at epoch {epoch} (loss {history[-1]}).")
    if log_every and (epoch + 1) % log_every == 0:
      print(f"  epoch {epoch + 1}: annealed loss {history[-1]:.2f} "
            f"({time.perf_counter() - start:.0f} s)", flush=True)
  return history, time.perf_counter() - start


def evaluate(model, test_x, *, num_samples, chunk, seed):
  """Mean test ``(ELBO, IWAE_k)`` in nats per image (the same k draws for both)."""
  bounds = tf.function(lambda x, s: model.bounds(x, num_samples, s))
  elbos, iwaes = [], []
  for i in range(0, len(test_x), chunk):
    e, w = bounds(tf.constant(test_x[i:i + chunk], model.dtype),
                  tf.constant([seed, i], tf.int32))
    elbos.append(e.numpy())
    iwaes.append(w.numpy())
  return float(np.mean(np.concatenate(elbos))), float(np.mean(np.concatenate(iwaes)))


def run(flow_lengths, *, data=None, num_test=1000, latent_dim=40, hidden=300, epochs=120,
        batch_size=100, learning_rate=1e-3, warmup_steps=2000, num_samples=500,
        eval_chunk=25, seed=0, log_every=10):
  train_x, test_x, source = load_data(data, num_test=num_test, seed=seed)
  rows = []
  for k in flow_lengths:
    print(f"K = {k}: training {epochs} epochs on {len(train_x)} images ({source})", flush=True)
    model = AmortizedPlanarVAE(train_x.shape[1], latent_dim=latent_dim, hidden=hidden,
                               num_flows=k, seed=seed)
    history, seconds = train(model, train_x, epochs=epochs, batch_size=batch_size,
                             learning_rate=learning_rate, warmup_steps=warmup_steps,
                             seed=seed, log_every=log_every)
    start = time.perf_counter()
    elbo, iwae = evaluate(model, test_x, num_samples=num_samples, chunk=eval_chunk,
                          seed=seed + 7)
    rows.append(dict(K=k, test_elbo=elbo, test_iwae=iwae, final_train_loss=history[-1],
                     train_seconds=seconds, eval_seconds=time.perf_counter() - start))
    print(f"K = {k}: test ELBO {elbo:.2f}, IWAE_{num_samples} {iwae:.2f} nats "
          f"({seconds:.0f} s training)", flush=True)
  config = dict(data=source, train_images=len(train_x), test_images=len(test_x),
                latent_dim=latent_dim, hidden=hidden, epochs=epochs, batch_size=batch_size,
                learning_rate=learning_rate, warmup_steps=warmup_steps,
                importance_samples=num_samples, seed=seed)
  return dict(config=config, rows=rows)


def print_table(result):
  k = result["config"]["importance_samples"]
  print(f"\n| K | test ELBO (nats) | test IWAE, k = {k} (nats) | train s |")
  print("|---|---|---|---|")
  for r in result["rows"]:
    print(f"| {r['K']} | {r['test_elbo']:.2f} | {r['test_iwae']:.2f} | "
          f"{r['train_seconds']:.0f} |")


def _define_flags():
  flags.DEFINE_list("flow_lengths", ["0", "2", "8", "16"], "Numbers K of planar layers.")
  flags.DEFINE_string("data", None, "An .npz with key 'images' (uint8 [N, H, W]); default: "
                      "the shared MNIST file when present, else scikit-learn's digits.")
  flags.DEFINE_integer("num_test", 1000, "Test images held out of an .npz file.")
  flags.DEFINE_integer("latent_dim", 40, "Latent dimension (40 in the paper).")
  flags.DEFINE_integer("hidden", 300, "Hidden units of the encoder's and decoder's layers.")
  flags.DEFINE_integer("epochs", 120, "Training epochs per model.")
  flags.DEFINE_integer("batch_size", 100, "Minibatch size.")
  flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
  flags.DEFINE_integer("warmup_steps", 2000, "Steps over which beta goes from 0.01 to 1.")
  flags.DEFINE_integer("num_samples", 500, "Importance samples k per test image.")
  flags.DEFINE_integer("seed", 0, "Seed of the split, initial weights and noise.")
  flags.DEFINE_bool("quick", False, "Smoke run: 2 epochs, small nets, K = 0, 2.")
  flags.DEFINE_string("out", "runs/amortized_vae", "Output folder (metrics.json).")


def main(argv):
  del argv
  f = flags.FLAGS
  kwargs = dict(data=f.data, num_test=f.num_test, latent_dim=f.latent_dim, hidden=f.hidden,
                epochs=f.epochs, batch_size=f.batch_size, learning_rate=f.learning_rate,
                warmup_steps=f.warmup_steps, num_samples=f.num_samples, seed=f.seed)
  lengths = [int(k) for k in f.flow_lengths]
  if f.quick:
    lengths = [k for k in lengths if k <= 2] or [0, 2]
    kwargs.update(num_test=min(f.num_test, 200), latent_dim=8, hidden=64, epochs=2,
                  num_samples=50, warmup_steps=100)
  start = time.perf_counter()
  result = run(lengths, log_every=0 if f.quick else 10, **kwargs)
  result["environment"] = dict(
      date=time.strftime("%Y-%m-%d"), machine=platform.machine(), processor=platform.processor(),
      cpus=os.cpu_count(), python=platform.python_version(), tensorflow=tf.__version__,
      tensorflow_probability=tfp.__version__, keras=keras.__version__,
      total_seconds=time.perf_counter() - start)
  print_table(result)
  os.makedirs(f.out, exist_ok=True)
  out = os.path.join(f.out, "metrics.json")
  with open(out, "w") as fh:
    json.dump(result, fh, indent=1, allow_nan=False)
  print(f"wrote {out}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
