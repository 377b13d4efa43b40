"""Why zuko's RealNVP/MAF/NSF trained better than ours: one change at a time, same seeds.

Each variant changes one thing in our RealNVP (8 affine couplings), MAF (5 layers) or coupling
NSF (5 layers, 8 bins, bound 5), MLPs 64x64, trained exactly as in ``bench_density.py`` (3000
Adam steps at 1e-3, batch 512 fresh samples, the same stream for every variant of a seed);
KL(data || model) on 50k fresh points. zuko's flow of the same size is trained on the same
stream as the reference.

Differences read in zuko 1.6's source (``zuko/nn.py``, ``zuko/transforms.py``,
``zuko/flows/coupling.py``, ``zuko/flows/autoregressive.py``) and the variants that test them:

* network initialisation: zuko's ``Linear`` draws weights *and biases* from
  ``U(+-1/sqrt(fan_in))`` in every layer, output layer included; ours drew Glorot kernels, zero
  biases and a zero output layer. Variants ``init=glorot`` (our old default), ``init=uniform``
  (zuko's hidden layers, our zero output layer), ``init=random`` (zuko's, output included);
* scale parameterisation: zuko maps data to latent as ``z = x exp(a) + b`` with the soft clamp
  ``a = a_raw / (1 + |a_raw| / 6.9)``; ours is ``y = x exp(s) + t`` (base -> data) with
  ``s = 3 tanh(s_raw / 3)``, i.e. ``z = (x - t) exp(-s)``. Variants ``param=zuko`` (zuko's map
  and clamp in our coupling), ``bound=none`` (unbounded ``s``), and the two halves of
  ``param=zuko`` apart: ``inv_affine`` (our clamp, the map applied data -> latent; RealNVP's
  default now) and ``zuko_clamp`` (zuko's clamp, our orientation); ``inv_tanh_wide`` (data ->
  latent, tanh clamp at zuko's bound 6.9), ``inv_softsign`` (zuko's map with our init and
  masks), ``maf_inv_tanh`` / ``maf_inv_softsign`` (the same for MAF);
* NICE: ``nice`` against ``nice_random`` (zuko's random output layer) and ``nice_zuko_scale``
  (our couplings with zuko's last layer instead of NICE's ``Scaling``: ``z = x exp(a) + b``
  with the soft clamp above, shift and log-scale learnt, both starting at 0); ``--peers nice``
  runs zuko's additive couplings with its affine scale layer; ``nice_zuko_all`` is both zuko
  changes together (run it with ``--adam-epsilon 1e-8`` for zuko's optimiser setting too);
* permutations: zuko alternates masks / orders; ours reversed with a ``Permute`` between
  couplings (the same family of maps). Variant ``permutation=reverse``;
* the spline's orientation: zuko (and Durkan et al.'s nflows) apply the rational-quadratic
  spline in the density direction (data -> latent); ours applied it base -> data
  (``tfb.RationalQuadraticSpline``'s orientation), so ``log_prob`` went through its
  quadratic-root inverse: a different family of maps. Variants ``nsf_forward`` (our old
  default) against ``nsf_default`` (``spline_direction="inverse"``, the default now);
* the spline's parameterisation: zuko soft-clips raw widths and heights to +-log(1e3)/2
  before the softmax (no additive minimum bin size) and takes derivatives
  ``exp(softclip(u, log 1e3))``; ours ``2B (m + (1 - K m) softmax)`` and
  ``1e-3 + softplus(u + c)``. Variants ``nsf_zukoparam`` (zuko's, old orientation) and
  ``nsf_zukoparam_inverse``;
* zuko's ``NSF(passes=2)`` is a two-pass MADE: its first half also moves, by a spline whose
  parameters come from the MADE's biases alone. Variant ``nsf_kept`` (``transform_kept=True``);
* everything else is the same: ReLU MLPs, Adam with default betas (epsilon 1e-8 in PyTorch,
  1e-7 in Keras), float32, a standard normal base, no data standardisation.

    python benchmarks/ablate_coupling.py                                  # the full table
    python benchmarks/ablate_coupling.py --densities 6gaussians --seeds 0 --variants base,uniform
    python benchmarks/ablate_coupling.py --densities 6gaussians,2spirals --peers nsf \
        --variants nsf_forward,nsf_default,nsf_zukoparam,nsf_zukoparam_inverse --tag _nsf

Writes ``benchmarks/results/ablate_coupling.json`` (``--tag`` appends a suffix).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import bench_density  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

import tfp_flows as tff  # noqa: E402
from tfp_flows.bijectors import transformers  # noqa: E402
from tfp_flows.flows.autoregressive import made_stack  # noqa: E402
from tfp_flows.flows.coupling import coupling_stack  # noqa: E402

tfb = tfp.bijectors


# zuko's bound of the log-scale, log(1e3) = 6.9 (its soft clamp, ``zuko.transforms``).
ZUKO_BOUND = float(np.log(1e3))
# zuko's monotonic affine map: latent z = x exp(a) + b for data x, a = a_raw / (1 + |a_raw| / 6.9).
ZUKO_AFFINE = transformers.Affine(ZUKO_BOUND, clamp="softsign", direction="inverse")


class ZukoSpline(transformers.RationalQuadraticSpline):
  """zuko's spline parameterisation in our transformer: raw widths and heights
  ``r / (1 + |2 r / log(1e-3)|)`` before the softmax (no additive minimum), derivatives
  ``exp(u / (1 + |u / log(1e-3)|))`` (mapped onto our softplus form with
  ``min_derivative=0``)."""

  def __init__(self, direction):
    super().__init__(8, 5., min_bin_size=0., min_derivative=0., direction=direction)

  def _zuko(self, params):
    k, lim = self.num_bins, np.log(1e3)
    sizes, u = params[..., :2 * k, :], params[..., 2 * k:, :]
    sizes = sizes / (1. + tf.abs(2. * sizes / lim))
    derivative = tf.exp(u / (1. + tf.abs(u / lim)))
    return tf.concat([sizes, tfp.math.softplus_inverse(derivative) - self._derivative_offset],
                     axis=-2)

  def forward(self, x, params):
    return super().forward(x, self._zuko(params))

  def inverse(self, y, params):
    return super().inverse(y, self._zuko(params))


# variant -> (family, builder kwargs); "param" swaps the transformer. The RealNVP variants
# measured before RealNVP's default became the data -> latent map keep the map they measured
# (``_FWD``); "realnvp/new default" names the default of that time.
_FWD = dict(affine_direction="forward")
VARIANTS = {
    "realnvp/base (glorot, old default)": ("realnvp", dict(net_init="glorot",
                                                           permutation="reverse", **_FWD)),
    "realnvp/init=uniform": ("realnvp", dict(net_init="uniform", permutation="reverse", **_FWD)),
    "realnvp/init=random": ("realnvp", dict(net_init="random", permutation="reverse", **_FWD)),
    "realnvp/param=zuko": ("realnvp", dict(net_init="glorot", permutation="reverse",
                                           transformer=ZUKO_AFFINE)),
    "realnvp/bound=none": ("realnvp", dict(net_init="glorot", permutation="reverse", **_FWD,
                                           log_scale_bound=None)),
    "realnvp/permutation=alternate": ("realnvp", dict(net_init="glorot",
                                                      permutation="alternate", **_FWD)),
    "realnvp/new default": ("realnvp", dict(**_FWD)),  # base -> data: the default until then
    "realnvp/init=uniform + param=zuko": ("realnvp", dict(net_init="uniform",
                                                          permutation="reverse",
                                                          transformer=ZUKO_AFFINE)),
    "realnvp/init=uniform + bound=none": ("realnvp", dict(net_init="uniform",
                                                          permutation="reverse", **_FWD,
                                                          log_scale_bound=None)),
    "realnvp/affine data -> latent": ("realnvp", dict(
        transformer=transformers.Affine(direction="inverse"))),
    "realnvp/zuko's clamp, base -> data": ("realnvp", dict(
        transformer=transformers.Affine(ZUKO_BOUND, clamp="softsign"))),
    "realnvp/data -> latent, tanh bound 6.9": ("realnvp", dict(
        transformer=transformers.Affine(ZUKO_BOUND, direction="inverse"))),
    "realnvp/data -> latent, softsign bound 3": ("realnvp", dict(
        transformer=transformers.Affine(3., clamp="softsign", direction="inverse"))),
    "realnvp/data -> latent, softsign bound 6.9 (zuko's map)": ("realnvp", dict(
        transformer=transformers.Affine(ZUKO_BOUND, clamp="softsign", direction="inverse"))),
    "maf/data -> latent, tanh bound 3": ("maf", dict(
        transformer=transformers.Affine(direction="inverse"))),
    "maf/data -> latent, softsign bound 6.9 (zuko's map)": ("maf", dict(
        transformer=transformers.Affine(ZUKO_BOUND, clamp="softsign", direction="inverse"))),
    "maf/base (glorot)": ("maf", dict(net_init="glorot")),
    "maf/init=uniform (new default)": ("maf", dict(net_init="uniform")),
    "maf/init=random": ("maf", dict(net_init="random")),
    "maf/bound=none": ("maf", dict(net_init="glorot", log_scale_bound=None)),
    "nsf/spline base -> data (old default)": ("nsf", dict(spline_direction="forward")),
    "nsf/spline data -> latent (new default)": ("nsf", dict()),
    "nsf/zuko's spline parameterisation, base -> data": (
        "nsf", dict(transformer=ZukoSpline("forward"))),
    "nsf/zuko's spline parameterisation, data -> latent": (
        "nsf", dict(transformer=ZukoSpline("inverse"))),
    "nsf/transform_kept": ("nsf", dict(transform_kept=True)),
    "nice/default": ("nice", dict()),
    "nice/init=random": ("nice", dict(net_init="random")),
    "nice/zuko's scale layer": ("nice", dict(scaling=False, zuko_scale=True)),
    "nice/zuko's scale layer, init=random": ("nice", dict(scaling=False, zuko_scale=True,
                                                           net_init="random")),
    "nice/coordinates swapped": ("nice", dict(swap=True)),
    "nice/coordinates swapped, init=random": ("nice", dict(swap=True, net_init="random")),
    "nice/coordinates swapped, zuko's scale layer": ("nice", dict(swap=True, scaling=False,
                                                                  zuko_scale=True)),
    "nice/coordinates swapped, zuko's scale layer, init=random": (
        "nice", dict(swap=True, scaling=False, zuko_scale=True, net_init="random")),
    "realnvp/coordinates swapped": ("realnvp", dict(swap=True)),
    "nice/mask_anchor=data, init=random (the defaults now)": (
        "nice", dict(mask_anchor="data", net_init="random")),
    "realnvp/mask_anchor=data (the default now)": ("realnvp", dict(mask_anchor="data")),
    "nsf/transform_kept, 16 bins": ("nsf", dict(transform_kept=True, num_bins=16)),
    "nsf/autoregressive, 8 bins (nsf_ar)": ("nsf", dict(autoregressive=True)),
    "nsf/autoregressive, 16 bins": ("nsf", dict(autoregressive=True, num_bins=16)),
    "nsf/transform_kept, 32 bins": ("nsf", dict(transform_kept=True, num_bins=32)),
    "nsf/autoregressive, 32 bins": ("nsf", dict(autoregressive=True, num_bins=32)),
    "maf/zuko's map, init=random": ("maf", dict(
        log_scale_clamp="softsign", log_scale_bound=ZUKO_BOUND, net_init="random")),
    "maf/hidden layers drawn with PyTorch's fan-in (every input, masked or not)": ("maf", dict(
        made_fan_in="all")),
}
# Every variant above was measured with the masks anchored at the base distribution
# (mask_anchor="latent", the default then: with RealNVP's and NICE's 8 layers the data-side
# coupling kept x_1) and NICE with zero output layers (net_init="uniform"); ``build`` keeps
# those unless a variant names them, so the labels and the results files keep their meaning.
# A coordinate swap before the first coupling turns "latent" into zuko's orientation.
SHORT = {"inv_affine": "realnvp/affine data -> latent",
         "zuko_clamp": "realnvp/zuko's clamp, base -> data",
         "inv_tanh_wide": "realnvp/data -> latent, tanh bound 6.9",
         "inv_softsign_narrow": "realnvp/data -> latent, softsign bound 3",
         "inv_softsign": "realnvp/data -> latent, softsign bound 6.9 (zuko's map)",
         "maf_inv_tanh": "maf/data -> latent, tanh bound 3",
         "maf_inv_softsign": "maf/data -> latent, softsign bound 6.9 (zuko's map)",
         "base": "realnvp/base (glorot, old default)", "uniform": "realnvp/init=uniform",
         "random": "realnvp/init=random", "param": "realnvp/param=zuko",
         "nobound": "realnvp/bound=none", "alternate": "realnvp/permutation=alternate",
         "default": "realnvp/new default", "uniform_param": "realnvp/init=uniform + param=zuko",
         "uniform_nobound": "realnvp/init=uniform + bound=none", "maf_base": "maf/base (glorot)",
         "maf_uniform": "maf/init=uniform (new default)", "maf_random": "maf/init=random",
         "maf_nobound": "maf/bound=none", "nsf_forward": "nsf/spline base -> data (old default)",
         "nsf_default": "nsf/spline data -> latent (new default)",
         "nsf_zukoparam": "nsf/zuko's spline parameterisation, base -> data",
         "nsf_zukoparam_inverse": "nsf/zuko's spline parameterisation, data -> latent",
         "nsf_kept": "nsf/transform_kept", "nice": "nice/default",
         "nice_random": "nice/init=random", "nice_zuko_scale": "nice/zuko's scale layer",
         "nice_zuko_all": "nice/zuko's scale layer, init=random",
         "nice_swap": "nice/coordinates swapped",
         "nice_swap_random": "nice/coordinates swapped, init=random",
         "nice_swap_zuko_scale": "nice/coordinates swapped, zuko's scale layer",
         "nice_swap_zuko_all": "nice/coordinates swapped, zuko's scale layer, init=random",
         "realnvp_swap": "realnvp/coordinates swapped",
         "nice_now": "nice/mask_anchor=data, init=random (the defaults now)",
         "realnvp_now": "realnvp/mask_anchor=data (the default now)",
         "nsf_kept16": "nsf/transform_kept, 16 bins",
         "nsf_ar": "nsf/autoregressive, 8 bins (nsf_ar)", "nsf_ar16": "nsf/autoregressive, 16 bins",
         "nsf_kept32": "nsf/transform_kept, 32 bins", "nsf_ar32": "nsf/autoregressive, 32 bins",
         "maf_zuko_all": "maf/zuko's map, init=random",
         "maf_fan_in_all": "maf/hidden layers drawn with PyTorch's fan-in (every input, masked "
                           "or not)"}


def zuko_scale_layer(d):
  """zuko's ``UnconditionalTransform(MonotonicAffineTransform)`` as a TFP bijector: data ->
  latent ``z = x exp(a) + b``, ``a = a_raw / (1 + |a_raw| / 6.9)``; ``a_raw``, ``b`` start at 0."""
  a_raw = tf.Variable(tf.zeros([d]), name="zuko_log_scale")
  shift = tf.Variable(tf.zeros([d]), name="zuko_shift")
  scale = tfp.util.DeferredTensor(
      a_raw, lambda a: tf.exp(a / (1. + tf.abs(a) / ZUKO_BOUND)))
  return tfb.Invert(tfb.Chain([tfb.Shift(shift), tfb.Scale(scale)]))


def make_zuko_flipped(family, d, hidden):
  """zuko's NICE (as ``bench_density.make_zuko``) or RealNVP with the other mask orientation:
  the coupling applied first to the data keeps the odd entries (zuko's keeps the even ones)."""
  import torch
  import zuko
  layers = bench_density.LAYERS[family]
  kwargs = dict(univariate=zuko.transforms.AdditiveTransform, shapes=[()]) if family == "nice" \
      else {}
  transforms = [zuko.flows.coupling.GeneralCouplingTransform(
      d, mask=torch.arange(d) % 2 == (i + 1) % 2, hidden_features=tuple(hidden), **kwargs)
      for i in range(layers)]
  if family == "nice":
    transforms.append(zuko.flows.UnconditionalTransform(
        zuko.transforms.MonotonicAffineTransform, torch.zeros(d), torch.zeros(d)))
  base = zuko.flows.UnconditionalDistribution(
      zuko.distributions.DiagNormal, torch.zeros(d), torch.ones(d), buffer=True)
  return zuko.flows.Flow(transforms, base)


def zuko_peer(peer):
  """``(family, make)`` of a ``--peers`` name: ``bench_density.make_zuko``'s families, or
  ``<family>_flipped`` (``make_zuko_flipped``) or ``nsf_bins<K>`` (``NSF(passes=2)`` with K
  bins)."""
  if peer.endswith("_flipped"):
    return peer.removesuffix("_flipped"), make_zuko_flipped
  if peer.startswith("nsf_bins"):
    bins = int(peer.removeprefix("nsf_bins"))

    def make(family, d, hidden):
      import zuko
      return zuko.flows.NSF(d, transforms=bench_density.LAYERS[family], passes=2,
                            hidden_features=tuple(hidden), bins=bins)
    return "nsf", make
  return peer, None


def build(variant, d, hidden, seed):
  family, kwargs = VARIANTS[variant]
  kwargs = dict(kwargs)
  transformer = kwargs.pop("transformer", None)
  layers = bench_density.LAYERS[family]
  swap = kwargs.pop("swap", False)
  made_fan_in = kwargs.pop("made_fan_in", None)
  anchor = kwargs.pop("mask_anchor", "latent")
  if family in ("nice", "realnvp", "nsf") and transformer is None and not kwargs.get(
      "autoregressive"):
    kwargs["mask_anchor"] = anchor
  if family == "nice":
    kwargs.setdefault("net_init", "uniform")
    zuko_scale = kwargs.pop("zuko_scale", False)
    flow = tff.flows.nice([d], num_layers=layers, hidden_units=hidden, seed=seed, **kwargs)
    if zuko_scale:  # the last layer on the way to the latent: applied first by forward
      flow = tfb.Chain([flow, zuko_scale_layer(d)])
  elif family == "maf" and transformer is not None:
    flow = tfb.Chain(made_stack([d], layers, hidden, "relu", transformer, None, "uniform", False,
                                tf.float32, seed, "maf", "maf", invert=False))
  elif family == "maf":
    flow = tff.flows.maf([d], num_layers=layers, hidden_units=hidden, seed=seed, **kwargs)
  elif family == "nsf" and transformer is None:
    flow = tff.flows.nsf([d], num_layers=layers, hidden_units=hidden, seed=seed, **kwargs)
  elif family == "nsf":
    flow = tfb.Chain(coupling_stack(
        [d], layers, hidden, "relu", transformer, "alternate", None, "uniform", False,
        tf.float32, seed, "nsf", "nsf", mask_anchor=anchor))
  elif transformer is None:
    flow = tff.flows.realnvp([d], num_layers=layers, hidden_units=hidden, seed=seed, **kwargs)
  else:
    flow = tfb.Chain(coupling_stack(
        [d], layers, hidden, "relu", transformer, kwargs.pop("permutation", "alternate"), None,
        kwargs.pop("net_init", "uniform"), False, tf.float32, seed, "realnvp", "realnvp",
        mask_anchor=anchor))
  if made_fan_in == "all":
    bench_density.redraw_made_hidden_layers(flow, seed)
  if swap:  # the data's coordinates reversed before the first layer (listed data side first)
    flow = tfb.Chain([tfb.Permute(np.arange(d)[::-1]), flow])
  return tff.flows.distribution(flow, [d])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--densities", default="6gaussians,8gaussians,checkerboard,2spirals")
  parser.add_argument("--variants", default=",".join(SHORT))
  parser.add_argument("--peers", default="realnvp,maf",
                      help="zuko families to run too (realnvp, maf, nsf, nice; "
                           "nice_flipped, realnvp_flipped: the other mask orientation; "
                           "nsf_bins16: NSF(passes=2) with 16 bins)")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--test", type=int, default=50000)
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--adam-epsilon", type=float, default=1e-7,
                      help="epsilon of our flows' Keras Adam (Keras' default 1e-7, added to "
                           "the uncorrected sqrt(v); PyTorch's 1e-8 is added to the "
                           "bias-corrected one)")
  parser.add_argument("--tag", default="", help="suffix of the results file name")
  parser.add_argument("--merge", nargs="+", metavar="JSON",
                      help="only merge these results files (of split runs) into one")
  args = parser.parse_args()
  if args.merge:
    import json
    rows, envs = [], []
    for path in args.merge:
      with open(path) as f:
        payload = json.load(f)
      envs.append(payload["environment"])
      rows += payload["results"]["rows"]
    _common.write_results("ablate_coupling" + args.tag,
                          {"merged_from": [os.path.basename(p) for p in args.merge],
                           "environments": envs, "rows": rows}, envs[-1])
    return
  args.batch, args.lr, args.hidden = 512, 1e-3, [64, 64]
  if args.quick:
    args.steps, args.test = 30, 2000
  variants = [SHORT[v] for v in args.variants.split(",") if v]
  peers = [p for p in args.peers.split(",") if p]
  seeds = [int(s) for s in args.seeds.split(",")]
  env = _common.environment()
  print(_common.header_line(env), flush=True)
  rows = []
  name = ("ablate_coupling_quick" if args.quick else "ablate_coupling") + args.tag
  for density in args.densities.split(","):
    data = bench_density.Toy(density, args)
    for seed in seeds:
      runs = [(v, lambda v=v: bench_density.train_distribution(
          build(v, 2, args.hidden, seed), data.batches(seed), args.lr,
          epsilon=args.adam_epsilon)) for v in variants]
      for p in peers:
        family, make = zuko_peer(p)
        runs.append((f"zuko {p}", lambda family=family, make=make: bench_density.train_zuko(
            family, 2, args.hidden, seed, data.batches(seed), args.lr, make=make)))
      for label, run in runs:
        log_prob, seconds, _ = run()
        kl, se = data.score(log_prob)
        rows.append({"density": density, "variant": label, "seed": seed, "kl": kl,
                     "stderr": se, "train_seconds": seconds})
        print(f"  {density:12s} seed {seed} {label:36s} KL {kl:.4f} +- {se:.4f}", flush=True)
        _common.write_results(name, {"args": vars(args), "rows": rows}, env)
  table = []
  labels = list(dict.fromkeys(r["variant"] for r in rows))
  densities = list(dict.fromkeys(r["density"] for r in rows))
  for label in labels:
    cells = [label]
    for density in densities:
      kls = [r["kl"] for r in rows if r["variant"] == label and r["density"] == density]
      mean, se = _common.mean_and_stderr(kls)
      cells.append(f"{mean:.3f} ± {se:.3f}" if len(kls) > 1 else f"{mean:.3f}")
    table.append(cells)
  text = _common.table(["variant"] + [f"{d} KL (mean ± s.e. over {len(seeds)} seeds)"
                                      for d in densities], table)
  _common.write_results(name, {"args": vars(args), "rows": rows, "table": text}, env)


if __name__ == "__main__":
  main()
