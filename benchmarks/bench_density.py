"""Density quality per family against zuko: KL on 2-D densities with exact log-densities, and
bits/dim on 8x8 digits, at identical sizes and training budget; NSF vs RealNVP step time.

Every family is trained by maximum likelihood with Adam (learning rate ``--lr``, 1e-3) for
``--steps`` steps (3000) on batches of ``--batch`` (512) fresh samples, the same sample stream
for both libraries; networks are MLPs ``--hidden`` (64x64) with ReLU. Sizes (as in issue 13):

=================  ==========================================  ================================
family             tfp_flows                                   zuko (PyTorch)
=================  ==========================================  ================================
nice               ``nice``: 8 additive couplings + Scaling    8 additive couplings
                                                               (``AdditiveTransform``) + a
                                                               learnt element-wise affine
realnvp            ``realnvp``: 8 affine couplings             ``RealNVP(transforms=8)``
maf                ``maf``: 5 layers                           ``MAF(transforms=5)``
nsf                ``nsf``: 5 spline couplings, 8 bins         ``NSF(transforms=5, passes=2)``
nsf_kept           ``nsf(transform_kept=True)``: 5 spline      ``NSF(transforms=5, passes=2)``
                   couplings that also move the kept half
nsf_ar             ``nsf(autoregressive=True)``: 5 layers      ``NSF(transforms=5)``
gaussianization    ``gaussianization``: 8 layers, 8 comp.      ``GF(transforms=8, components=8)``
planar             ``planar``: 8 layers                        (no zuko counterpart)
=================  ==========================================  ================================

2-D densities (``tff.datasets.toy``, each with an exact log-density): ``8gaussians``,
``checkerboard``, ``2spirals`` and ``6gaussians`` (six anisotropic, unequally weighted
Gaussians). Metric: KL(data || model) = mean over ``--test`` (50k) fresh data points of
``log p_data(x) - log q(x)``, with the standard error of that mean.

Digits: scikit-learn's 8x8 digits as 64-D vectors, dequantised with fresh uniform noise every
step and logit-preprocessed (RealNVP's, alpha = 0.05) in numpy, identically for both
libraries; the flow models the logit-space vector and the preprocessing's exact log-det is
added back. Metric: test bits/dim (one fixed noise draw per test image) on the dequantised
pixels ``u in [0, 17)^64``; uniform = log2(17) = 4.09. Every flow overfits the 1,438
training images long before 3000 steps, so by default 10 % of them are held out
(``--val-fraction``), test, training and validation bits/dim are scored every 50 steps
(``--eval-every``), and rows also carry the early-stopped figure: the test bits/dim at the step
of lowest validation bits/dim (what ``EarlyStopping(restore_best_weights=True)`` restores,
given enough patience).

Step time: the training step of ``nsf`` over that of ``realnvp`` at equal size (5 layers,
the same MLPs, batch 512, D = 2), timed interleaved (``_common.interleaved_times``).

    python benchmarks/bench_density.py                         # everything (one run)
    python benchmarks/bench_density.py --quick                 # smoke run (tiny budget)
    python benchmarks/bench_density.py --only nsf,realnvp --densities 6gaussians --seeds 0,1
    python benchmarks/bench_density.py --only realnvp,nsf --densities digits --libs tfp_flows \
        --mask half --skip-timing --tag _digits_half    # our couplings with half masks
    python benchmarks/bench_density.py --only nsf --densities 2spirals --libs zuko \
        --state-dir /tmp/zuko_state --tag _nsf_2spirals   # rerun until done: resumes zuko

Results: a table per density and ``benchmarks/results/density.json`` (``density_quick.json``
for ``--quick``; ``--tag`` appends a suffix). Runs split over several commands (one density or
family each, with ``--tag``) are joined with ``--merge results/density_a.json ...``.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfp_flows as tff  # noqa: E402

FAMILIES = ("nice", "realnvp", "maf", "nsf", "nsf_kept", "nsf_ar", "gaussianization",
            "planar")
DENSITIES = ("8gaussians", "checkerboard", "2spirals", "6gaussians", "digits")
LAYERS = {"nice": 8, "realnvp": 8, "maf": 5, "nsf": 5, "nsf_kept": 5, "nsf_ar": 5,
          "gaussianization": 8, "planar": 8}
ALPHA = 0.05  # RealNVP's logit preprocessing
BINS = tff.datasets.DIGITS_NUM_BINS
VARIANT_FIELDS = ("affine", "net_init", "made_fan_in")  # row fields that name a variant


# ----------------------------------------------------------------------------------- ours

def redraw_made_hidden_layers(flow, seed):
  """Redraws the hidden layers of every ``tff.nets.MADE`` in ``flow`` as PyTorch's
  ``Linear`` (zuko's ``MaskedLinear``) draws them: ``U(+-1/sqrt(fan_in))`` with ``fan_in``
  counting every input of the layer, masked or not (``MADE`` counts a unit's unmasked inputs
  only), then masked."""
  rng = np.random.default_rng(seed)
  for made in [m for m in flow.submodules if isinstance(m, tff.nets.MADE)]:
    for layer in made.layers[:-1]:
      mask = layer.mask.numpy()
      limit = 1. / np.sqrt(mask.shape[0])
      layer.kernel.assign(rng.uniform(-limit, limit, mask.shape) * mask)
      layer.bias.assign(rng.uniform(-limit, limit, mask.shape[1]))


def make_ours(family, d, hidden, seed, mask="alternating", affine=None, spline=None,
              net_init=None, made_fan_in=None):
  """``mask``: the coupling families' masks (``'half'`` or ``'alternating'``); ``affine``:
  ``(log_scale_clamp, affine_direction[, log_scale_bound])`` of RealNVP and MAF, or None for
  the defaults; ``spline``: the NSF families' ``spline_direction``, or None for the default;
  ``net_init``: the networks' ``net_init`` (NICE, RealNVP, MAF, NSF), or None for the
  builders' default; ``made_fan_in="all"``: MADE hidden layers redrawn with PyTorch's fan-in
  (``redraw_made_hidden_layers``)."""
  layers = LAYERS[family]
  if made_fan_in is not None and family not in ("maf", "nsf_ar"):
    raise ValueError(f"--made-fan-in applies to the MADE families (maf, nsf_ar), not {family}")
  net = {} if net_init is None else {"net_init": net_init}
  spline_kwargs = {} if spline is None else {"spline_direction": spline}
  affine_kwargs = {} if affine is None else dict(zip(
      ("log_scale_clamp", "affine_direction", "log_scale_bound"), affine))
  if family == "nice":
    flow = tff.flows.nice([d], num_layers=layers, hidden_units=hidden, seed=seed, mask=mask,
                          **net)
  elif family == "realnvp":
    flow = tff.flows.realnvp([d], num_layers=layers, hidden_units=hidden, seed=seed, mask=mask,
                             **affine_kwargs, **net)
  elif family == "maf":
    flow = tff.flows.maf([d], num_layers=layers, hidden_units=hidden, seed=seed,
                         **affine_kwargs, **net)
  elif family == "nsf":
    flow = tff.flows.nsf([d], num_layers=layers, hidden_units=hidden, seed=seed, mask=mask,
                         **spline_kwargs, **net)
  elif family == "nsf_kept":
    flow = tff.flows.nsf([d], num_layers=layers, hidden_units=hidden, seed=seed, mask=mask,
                         transform_kept=True, **spline_kwargs, **net)
  elif family == "nsf_ar":
    flow = tff.flows.nsf([d], num_layers=layers, hidden_units=hidden, autoregressive=True,
                         seed=seed, **spline_kwargs, **net)
  elif net_init is not None:
    raise ValueError(f"--net-init does not apply to {family}")
  elif family == "gaussianization":
    flow = tff.flows.gaussianization([d], num_layers=layers, num_components=8, seed=seed)
  elif family == "planar":
    flow = tff.flows.planar([d], num_layers=layers, seed=seed)
  else:
    raise ValueError(family)
  if made_fan_in == "all":
    redraw_made_hidden_layers(flow, seed)
  return tff.flows.distribution(flow, [d])


def train_ours(family, d, hidden, seed, batches, lr, mask="alternating", affine=None,
               spline=None, monitor=None, net_init=None, made_fan_in=None):
  """Trains on the batch stream; returns (log_prob over numpy, train seconds, final loss).
  ``monitor(step, log_prob)``, if given, is called after every step (its time not counted)."""
  return train_distribution(make_ours(family, d, hidden, seed, mask, affine, spline, net_init,
                                      made_fan_in), batches, lr, monitor)


def train_distribution(dist, batches, lr, monitor=None, epsilon=1e-7):
  """Maximum likelihood with Adam(lr, epsilon) over the stream ``batches``; as
  ``train_ours``."""
  import keras
  dist.log_prob(tf.constant(next(iter(batches(0, 1)))))  # data-dependent init, if any
  step = tff.train.make_ml_step(dist, keras.optimizers.Adam(lr, epsilon=epsilon))

  def log_prob(x):
    return tff.train.batched_log_prob(dist, x)

  losses = []
  seconds = 0.
  t0 = time.perf_counter()
  for i, xb in enumerate(batches(0, None)):
    losses.append(step(tf.constant(xb)))
    if monitor is not None:
      seconds += time.perf_counter() - t0
      monitor(i + 1, log_prob)
      t0 = time.perf_counter()
  final = float(losses[-1])
  seconds += time.perf_counter() - t0
  return log_prob, seconds, final


# ----------------------------------------------------------------------------------- zuko

def make_zuko(family, d, hidden):
  import torch
  import zuko
  layers = LAYERS[family]
  hidden = tuple(hidden)
  if family == "nice":
    coupling = [zuko.flows.coupling.GeneralCouplingTransform(
        d, mask=torch.arange(d) % 2 == i % 2, univariate=zuko.transforms.AdditiveTransform,
        shapes=[()], hidden_features=hidden) for i in range(layers)]
    scale = zuko.flows.UnconditionalTransform(
        zuko.transforms.MonotonicAffineTransform, torch.zeros(d), torch.zeros(d))
    base = zuko.flows.UnconditionalDistribution(
        zuko.distributions.DiagNormal, torch.zeros(d), torch.ones(d), buffer=True)
    return zuko.flows.Flow(coupling + [scale], base)
  if family == "realnvp":
    return zuko.flows.RealNVP(d, transforms=layers, hidden_features=hidden)
  if family == "maf":
    return zuko.flows.MAF(d, transforms=layers, hidden_features=hidden)
  if family in ("nsf", "nsf_kept"):
    return zuko.flows.NSF(d, transforms=layers, passes=2, hidden_features=hidden)
  if family == "nsf_ar":
    return zuko.flows.NSF(d, transforms=layers, hidden_features=hidden)
  if family == "gaussianization":
    return zuko.flows.GF(d, transforms=layers, components=8)
  return None


def train_zuko(family, d, hidden, seed, batches, lr, state_path=None, monitor=None,
               make=None):
  """As ``train_ours`` for zuko's flow. With ``state_path``, the flow and Adam state are saved
  there about once a minute and a later call resumes from them (same batch stream from the
  saved step), so one training run can span several time-limited commands. ``make`` builds
  the flow in place of ``make_zuko`` (same arguments; for ablations)."""
  import torch
  torch.manual_seed(seed)
  # One thread: on a shared machine PyTorch's spinning worker threads slowed these small
  # steps many times over; quality, not speed, is measured here.
  torch.set_num_threads(1)
  flow = (make or make_zuko)(family, d, hidden)
  if flow is None:
    return None
  opt = torch.optim.Adam(flow.parameters(), lr)
  start, seconds = 0, 0.
  if state_path and os.path.exists(state_path):
    state = torch.load(state_path)
    flow.load_state_dict(state["flow"])
    opt.load_state_dict(state["opt"])
    start, seconds = state["step"], state["seconds"]
    print(f"  resuming {state_path} at step {start}", flush=True)

  def log_prob(x):
    out = []
    with torch.no_grad():
      for i in range(0, len(x), 8192):
        out.append(flow().log_prob(torch.from_numpy(np.asarray(x[i:i + 8192]))).double().numpy())
    return np.concatenate(out)

  t0 = saved = time.perf_counter()
  loss = None
  for i, xb in enumerate(batches(start, None), start):
    loss = -flow().log_prob(torch.from_numpy(xb)).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if monitor is not None:
      seconds += time.perf_counter() - t0
      monitor(i + 1, log_prob)
      t0 = time.perf_counter()
    if state_path and time.perf_counter() - saved > 60:
      saved = time.perf_counter()
      seconds += saved - t0
      torch.save({"flow": flow.state_dict(), "opt": opt.state_dict(), "step": i + 1,
                  "seconds": seconds}, state_path + ".tmp")
      os.replace(state_path + ".tmp", state_path)
      t0 = time.perf_counter()  # the save's time is not training time
  final = float(loss) if loss is not None else float("nan")
  seconds += time.perf_counter() - t0
  return log_prob, seconds, final


# ----------------------------------------------------------------------------------- data

class Toy:
  """A 2-D density: a stream of training batches and a fixed test set with exact log p."""

  def __init__(self, name, args):
    self.name, self.d = name, 2
    self.density = tff.datasets.toy(name)
    self.x_test = self.density.sample(args.test, seed=12345)
    self.log_p_test = self.density.log_prob(self.x_test)
    self.args = args

  def batches(self, seed):
    steps, batch = self.args.steps, self.args.batch
    x = self.density.sample(steps * batch, seed=1000 + seed)

    def gen(start, count):
      stop = steps if count is None else min(steps, start + count)
      for i in range(start, stop):
        yield x[i * batch:(i + 1) * batch]
    return gen

  def score(self, log_prob):
    diff = self.log_p_test - log_prob(self.x_test)
    return _common.mean_and_stderr(diff)

  def evaluate(self, step, log_prob):
    """One point of a training curve: the test KL."""
    point = {"step": step}
    point["test"], point["test_stderr"] = self.score(log_prob)
    return point


def _logit_preprocess(u):
  """RealNVP's logit on dequantised pixels u in [0, 17): (z, log|dz/du| per image)."""
  p = ALPHA + (1 - 2 * ALPHA) * u / BINS
  z = np.log(p) - np.log1p(-p)
  log_det = np.sum(np.log((1 - 2 * ALPHA) / BINS) - np.log(p) - np.log1p(-p), axis=-1)
  return z.astype(np.float32), log_det


class Digits:
  """64-D digits in logit space: fresh dequantisation noise per batch; test bits/dim."""

  def __init__(self, args):
    self.name, self.d = "digits", 64
    train, test = tff.datasets.digits()
    train = train.reshape(len(train), -1).astype(np.float64)
    rng = np.random.default_rng(777)
    u_test = test.reshape(len(test), -1) + rng.uniform(size=(len(test), 64))
    self.z_test, self.log_det_test = _logit_preprocess(u_test)
    self.val = None
    if args.val_fraction:  # held out of the training images, for early stopping
      order = np.random.default_rng(778).permutation(len(train))
      num_val = int(round(args.val_fraction * len(train)))
      if num_val < 1:
        raise ValueError(f"--val-fraction {args.val_fraction} holds out no image of "
                         f"{len(train)}")
      val, train = train[order[:num_val]], train[order[num_val:]]
      self.val = _logit_preprocess(val + rng.uniform(size=val.shape))
    self.train = train
    self.z_train, self.log_det_train = _logit_preprocess(
        train + rng.uniform(size=train.shape))
    self.args = args

  def batches(self, seed):
    steps, batch = self.args.steps, self.args.batch

    def gen(start, count):
      rng = np.random.default_rng(2000 + seed + start)
      stop = steps if count is None else min(steps, start + count)
      for _ in range(start, stop):
        idx = rng.integers(0, len(self.train), batch)
        yield _logit_preprocess(self.train[idx] + rng.uniform(size=(batch, 64)))[0]
    return gen

  def score(self, log_prob):
    return self._bits_per_dim(log_prob, self.z_test, self.log_det_test)

  def score_train(self, log_prob):
    """Bits/dim on the training images (one fixed noise draw each): with ``score``, shows
    how much of a model's test figure is overfitting to the training digits."""
    return self._bits_per_dim(log_prob, self.z_train, self.log_det_train)

  def evaluate(self, step, log_prob):
    """One point of a training curve: test, train and validation bits/dim."""
    point = {"step": step}
    point["test"], point["test_stderr"] = self.score(log_prob)
    point["train"], _ = self.score_train(log_prob)
    if self.val is not None:  # (z, log-det) of the validation images (--val-fraction)
      point["val"], _ = self._bits_per_dim(log_prob, *self.val)
    return point

  @staticmethod
  def _bits_per_dim(log_prob, z, log_det):
    bpd = -(log_prob(z) + log_det) / (64 * np.log(2.))
    return _common.mean_and_stderr(bpd)


# ----------------------------------------------------------------------------------- runs

def quality(args, env):
  rows = []
  done = set()
  path = os.path.join(_common.RESULTS, args.out_name + ".json")
  if args.state_dir and os.path.exists(path):  # resuming a split run: keep its finished rows
    import json
    with open(path) as f:
      rows = json.load(f)["results"].get("quality", [])
    done = {(r["density"], r["family"], r["library"], r["seed"]) for r in rows}
  for name in args.densities:
    data = Digits(args) if name == "digits" else Toy(name, args)
    hidden = args.digits_hidden if name == "digits" else args.hidden
    for family in args.only:
      for seed in args.seeds:
        for lib, train in (("tfp_flows", train_ours), ("zuko", train_zuko)):
          if lib not in args.libs or (name, family, lib, seed) in done:
            continue
          kwargs = ({"mask": args.mask, "affine": args.affine, "spline": args.spline,
                     "net_init": args.net_init, "made_fan_in": args.made_fan_in}
                    if lib == "tfp_flows" else {})
          if lib == "zuko" and args.state_dir:
            os.makedirs(args.state_dir, exist_ok=True)
            kwargs["state_path"] = os.path.join(args.state_dir, f"{name}_{family}_{seed}.pt")
          curve = []
          every = args.eval_every
          if every is None:
            every = (10 if args.quick else 50) if name == "digits" else 0
          eval_at = set(range(every, args.steps + 1, every)) if every > 0 else set()
          if eval_at:
            def monitor(step, log_prob, curve=curve, eval_at=eval_at):
              if step in eval_at:
                curve.append(data.evaluate(step, log_prob))
            kwargs["monitor"] = monitor
          out = train(family, data.d, hidden, seed, data.batches(seed), args.lr, **kwargs)
          if out is None:
            continue
          log_prob, seconds, final_loss = out
          mean, se = data.score(log_prob)
          row = {"density": name, "family": family, "library": lib, "seed": seed,
                 "metric": "bits/dim" if name == "digits" else "KL nats", "value": mean,
                 "stderr": se, "train_seconds": seconds, "final_loss": final_loss,
                 "steps": args.steps}
          if name == "digits":
            row["train_value"], row["train_stderr"] = data.score_train(log_prob)
            row["val_fraction"] = args.val_fraction
          if curve:
            row["curve"] = curve
            if curve[-1]["step"] != args.steps:
              curve.append(data.evaluate(args.steps, log_prob))
            if "val" in curve[0]:  # early stopping: the test figure where validation was best
              best = min(curve, key=lambda p: p["val"])
              row["early_stopped"] = {k: best[k] for k in ("step", "test", "test_stderr")}
          if lib == "tfp_flows" and family in ("nice", "realnvp", "nsf", "nsf_kept"):
            row["mask"] = args.mask
          if lib == "tfp_flows" and family in ("realnvp", "maf") and args.affine:
            row["affine"] = list(args.affine)
          if lib == "tfp_flows" and args.net_init:
            row["net_init"] = args.net_init
          if lib == "tfp_flows" and args.made_fan_in:
            row["made_fan_in"] = args.made_fan_in
          if lib == "tfp_flows" and family.startswith("nsf") and args.spline:
            row["spline_direction"] = args.spline
          rows.append(row)
          extra = (f", train {row['train_value']:.4f}" if "train_value" in row else "")
          if "early_stopped" in row:
            extra += (f", early-stopped {row['early_stopped']['test']:.4f} at step "
                      f"{row['early_stopped']['step']}")
          print(f"  {name:12s} {family:16s} {lib:9s} seed {seed}: {row['metric']} "
                f"{mean:.4f} +- {se:.4f}{extra}  ({seconds:.0f} s)", flush=True)
          _common.write_results(args.out_name, {"args": vars(args), "quality": rows},
                                env)
  return rows


def step_time(args):
  """NSF vs RealNVP training step at equal size (layers, MLPs, batch), interleaved."""
  import keras
  d, layers, batch = 2, 5, args.batch
  x = tf.constant(tff.datasets.toy("6gaussians").sample(batch, seed=0))
  steps = {}
  for family, builder in (("realnvp", tff.flows.realnvp), ("nsf", tff.flows.nsf)):
    dist = tff.flows.distribution(builder([d], num_layers=layers, hidden_units=args.hidden),
                                  [d])
    step = tff.train.make_ml_step(dist, keras.optimizers.Adam(1e-4))
    steps[family] = (lambda step=step: step(x))
  times = _common.interleaved_times(steps, calls=args.timing_calls, rounds=args.timing_rounds)
  return {"config": {"d": d, "layers": layers, "hidden": list(args.hidden), "batch": batch,
                     "jit_compile": True},
          "ms_per_step": {k: 1e3 * v for k, v in times.items()},
          "nsf_over_realnvp": times["nsf"] / times["realnvp"]}


def summary_tables(rows):
  out = []
  for name in dict.fromkeys(r["density"] for r in rows):
    sub = [r for r in rows if r["density"] == name]
    views = [(name, lambda r: r["value"], lambda r: r["stderr"])]
    if all("early_stopped" in r for r in sub):  # digits with a validation split
      views.append((f"{name}, early-stopped (the step of best validation bits/dim)",
                    lambda r: r["early_stopped"]["test"],
                    lambda r: r["early_stopped"]["test_stderr"]))
    for title, value, stderr in views:
      table = []
      for family in dict.fromkeys(r["family"] for r in sub):
        cells = [family]
        for lib in ("tfp_flows", "zuko"):
          vals = [r for r in sub if r["family"] == family and r["library"] == lib]
          if not vals:
            cells.append(None)
            continue
          values = [value(r) for r in vals]
          if len(vals) == 1:  # one run: ± the test-set standard error
            cells.append(f"{values[0]:.4f} ± {stderr(vals[0]):.4f}")
          else:  # several seeds: ± the standard error over seeds (the larger spread)
            mean, se = _common.mean_and_stderr(values)
            cells.append(f"{mean:.4f} ± {se:.4f} ({len(vals)} seeds)")
        cells.append(_paired(sub, family, value))
        table.append(cells)
      metric = sub[0]["metric"]
      out.append(_common.table(["family", f"tfp_flows {metric}", f"zuko {metric}",
                                "ours - zuko, paired by seed"], table, title=title))
  return out


# zuko's model that a family of ours is compared with, where the family name differs.
ZUKO_COUNTERPART = {"nsf_kept": "nsf"}


def _paired(rows, family, value=lambda r: r["value"]):
  """Mean ± s.e. of (ours - zuko's) over the seeds both ran: the two see the same batches,
  so pairing removes the seed's share of the spread. None with fewer than two pairs."""
  ours = {r["seed"]: value(r) for r in rows
          if r["family"] == family and r["library"] == "tfp_flows"}
  zuko_family = ZUKO_COUNTERPART.get(family, family)
  theirs = {r["seed"]: value(r) for r in rows
            if r["family"] == zuko_family and r["library"] == "zuko"}
  diffs = [ours[s] - theirs[s] for s in sorted(ours) if s in theirs]
  if len(diffs) < 2:
    return None
  mean, se = _common.mean_and_stderr(diffs)
  return f"{mean:+.4f} ± {se:.4f} ({len(diffs)} seeds, ours lower in {sum(d < 0 for d in diffs)})"


def merge(paths, out_name):
  """One results file (rows, tables, environments) from runs split into several commands."""
  import json
  rows, envs, step, sources = [], [], None, []
  for path in paths:
    with open(path) as f:
      payload = json.load(f)
    results = payload["results"]
    if "merged_from" in results:  # an earlier merge: keep its sources and environments
      sources += results["merged_from"]
      envs += results["environments"]
    else:
      sources.append(os.path.basename(path))
      envs.append(payload["environment"])
    rows += results.get("quality", [])
    step = results.get("step_time", step)
  # A run repeated in a later file (same density, family, library, seed, steps) replaces the
  # earlier one; a run of another variant (--affine, --net-init, --made-fan-in) never does.
  merged = {}
  for r in rows:
    key = (r["density"], r["family"], r["library"], r["seed"], r.get("steps"))
    old = merged.get(key)
    if old is not None and any(old.get(f) != r.get(f) for f in VARIANT_FIELDS):
      raise ValueError(f"{key}: rows of different variants ("
                       f"{ {f: old.get(f) for f in VARIANT_FIELDS} } and "
                       f"{ {f: r.get(f) for f in VARIANT_FIELDS} }); keep variant runs in "
                       "files of their own")
    merged[key] = r
  rows = list(merged.values())
  order = {n: i for i, n in enumerate(DENSITIES)}
  fam = {n: i for i, n in enumerate(FAMILIES)}
  rows.sort(key=lambda r: (order[r["density"]], fam[r["family"]], r["library"], r["seed"]))
  result = {"merged_from": sources, "environments": envs,
            "quality": rows, "tables": summary_tables(rows)}
  if step is not None:
    result["step_time"] = step
  _common.write_results(out_name, result, envs[-1] if envs else None)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--merge", nargs="+", metavar="JSON",
                      help="only merge these results files (of split runs) into one")
  parser.add_argument("--quick", action="store_true", help="tiny budgets (smoke run)")
  parser.add_argument("--only", default=",".join(FAMILIES), help="families, comma-separated")
  parser.add_argument("--densities", default=",".join(DENSITIES))
  parser.add_argument("--libs", default="tfp_flows,zuko")
  parser.add_argument("--seeds", default="0")
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--batch", type=int, default=512)
  parser.add_argument("--lr", type=float, default=1e-3)
  parser.add_argument("--hidden", default="64,64")
  parser.add_argument("--digits-hidden", default="64,64")
  parser.add_argument("--test", type=int, default=50000)
  parser.add_argument("--skip-timing", action="store_true")
  parser.add_argument("--mask", choices=("half", "alternating"), default="alternating",
                      help="masks of our coupling families (nice, realnvp, nsf)")
  parser.add_argument("--affine", default=None, metavar="CLAMP,DIRECTION[,BOUND]",
                      help="our RealNVP's and MAF's log_scale_clamp, affine_direction and "
                           "log_scale_bound, e.g. tanh,forward,3 (default: the builders')")
  parser.add_argument("--net-init", choices=("uniform", "glorot", "random"), default=None,
                      help="our networks' net_init (NICE, RealNVP, MAF, NSF; default: the "
                           "builders')")
  parser.add_argument("--made-fan-in", choices=("all",), default=None,
                      help="redraw our MADEs' hidden layers with PyTorch's fan-in (every "
                           "input counted, masked or not)")
  parser.add_argument("--eval-every", type=int, default=None, metavar="N",
                      help="also score every N steps (rows carry the curve; digits: test, "
                           "train and validation bits/dim); default 50 on digits, none on "
                           "the 2-D densities; 0: never")
  parser.add_argument("--val-fraction", type=float, default=0.1,
                      help="digits: hold out this fraction of the training images as a "
                           "validation set; rows then also report the test bits/dim at the "
                           "step of best validation bits/dim (early stopping); 0: none")
  parser.add_argument("--spline", choices=("inverse", "forward"), default=None,
                      help="our NSF families' spline_direction (default: the builder's)")
  parser.add_argument("--tag", default="")
  parser.add_argument("--state-dir", default=None,
                      help="save/resume zuko training state here (runs longer than one "
                           "time-limited command); a resumed run draws its later batches "
                           "from a stream seeded at the resume step, not the same batches "
                           "as an uninterrupted run")
  args = parser.parse_args()
  if args.merge:
    merge(args.merge, "density" + args.tag)
    return
  args.only = [f for f in args.only.split(",") if f]
  bad = sorted(set(args.only) - set(FAMILIES))
  if bad:
    parser.error(f"unknown families {bad}; choose from {list(FAMILIES)}")
  args.densities = [n for n in args.densities.split(",") if n]
  bad = sorted(set(args.densities) - set(DENSITIES))
  if bad:
    parser.error(f"unknown densities {bad}; choose from {list(DENSITIES)}")
  args.libs = args.libs.split(",")
  args.seeds = [int(s) for s in args.seeds.split(",")]
  if not 0. <= args.val_fraction < 1.:
    parser.error("--val-fraction must be in [0, 1)")
  if args.state_dir and "digits" in args.densities and args.eval_every != 0:
    # A resumed run would keep only the curve points after the resume, and pick its early-
    # stopped figure from those.
    parser.error("--state-dir cannot resume the digits curves; add --eval-every 0 (no curve, "
                 "no early-stopped figure)")
  args.hidden = [int(h) for h in args.hidden.split(",")]
  args.digits_hidden = [int(h) for h in args.digits_hidden.split(",")]
  args.affine = (tuple(v if i < 2 else float(v) for i, v in enumerate(args.affine.split(",")))
                 if args.affine else None)
  args.timing_calls, args.timing_rounds = 50, 15
  if args.quick:
    args.steps, args.test = 30, 2000
    args.timing_calls, args.timing_rounds = 5, 3
  args.out_name = ("density_quick" if args.quick else "density") + args.tag
  env = _common.environment()
  print(_common.header_line(env), flush=True)
  result = {"args": vars(args)}
  result["quality"] = quality(args, env)
  result["tables"] = summary_tables(result["quality"])
  if not args.skip_timing:
    result["step_time"] = step_time(args)
    st = result["step_time"]
    print(f"\nstep time, D=2, 5 layers, MLP {args.hidden}, batch {args.batch}: "
          + ", ".join(f"{k} {v:.2f} ms" for k, v in st["ms_per_step"].items())
          + f"; nsf / realnvp = {st['nsf_over_realnvp']:.2f}")
  _common.write_results(args.out_name, result, env)


if __name__ == "__main__":
  main()
