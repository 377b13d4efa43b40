"""Twin runs: our flow started from zuko's initial weights, trained on the same batches.

Our flow and zuko's (``bench_density.make_zuko``) are the same function when ours holds
zuko's initial weights. This script builds zuko's flow for a seed, copies every weight into
ours, checks that the two log-densities and gradient norms agree at the start, trains both
for 3000 Adam steps at 1e-3 (epsilon 1e-8 for both) on the same stream of 2spirals batches
(``bench_density.py``), and reports both KLs and the test NLL at a few steps. If our flow
reaches zuko's KL from zuko's start, the gap between the two libraries' defaults lies in the
defaults themselves (structure and initial weights; for MAF also the scale map, which the twin
takes from zuko), not in the computation: the map, its gradients and the optimiser.

``--family nice``: our NICE (``tff.flows.nice`` without its ``Scaling``, followed by zuko's
last layer ``ablate_coupling.zuko_scale_layer``; our additive coupling shifts in the sampling
direction, so its output layer is zuko's negated). ``--orientation zuko``: zuko's masks (the
coupling applied first to the data keeps x_0, as ours does with ``mask_anchor="data"``);
``--orientation flipped``: both keep x_1 first (zuko's masks turned around: the orientation of
our 8-layer flows before ``mask_anchor`` existed). Where our builder's masks start the other
way, our flow gets a data-side swap of the coordinates, which gives it the same orientation.

``--family maf``: ``tff.flows.maf`` with zuko's scale map (``log_scale_clamp="softsign"``,
``log_scale_bound=log(1e3)``; the density direction is ``x exp(s) + t`` in both) and 5 layers
against zuko's ``MAF(transforms=5)``; with an odd number of layers both libraries' data-side
layer conditions ``x_1`` on ``x_0`` (the only orientation here). zuko's networks lay their
outputs out entry-major (``entry * 2 + parameter``), ours parameter-major; the copy permutes
the output layer's columns and checks that every mask agrees. In 2-D all hidden units of
both libraries' MADEs see the same single input, so the hidden layers copy one to one.

    python benchmarks/twin.py --family nice --seeds 0,1,2,3,4 --orientation zuko
    python benchmarks/twin.py --family maf --seeds 0,1,2,3,4,5,6,7,8,9

Writes ``benchmarks/results/twin_<family>_<orientation>.json``.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import ablate_coupling  # noqa: E402
import bench_density  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfp_flows as tff  # noqa: E402

tfb = ablate_coupling.tfb
D, HIDDEN = 2, (64, 64)
MARKS = (1, 10, 100, 300, 1000, 3000)


def make_zuko(family, flipped):
  """zuko's flow of ``bench_density.py``, or with its masks turned around."""
  make = ablate_coupling.make_zuko_flipped if flipped else bench_density.make_zuko
  return make(family, D, HIDDEN)


def zuko_linears(transform):
  return [m for m in transform.hyper if hasattr(m, "weight")]


def twin_nice(zflow, seed, flipped):
  """Our NICE holding zuko's weights: data-side coupling i = zuko's transform i."""
  nice = tff.flows.nice([D], num_layers=bench_density.LAYERS["nice"], hidden_units=HIDDEN,
                        seed=seed, scaling=False)
  couplings = nice.bijectors  # listed data side first
  kept = [c.mask.tolist().index(1.) for c in couplings]
  for i, coupling in enumerate(couplings):
    linears = zuko_linears(zflow.transform.transforms[i])
    ours = list(coupling.conditioner.hidden) + [coupling.conditioner.out]
    assert len(linears) == len(ours)
    for j, (theirs, mine) in enumerate(zip(linears, ours)):
      sign = -1. if j == len(ours) - 1 else 1.
      mine.kernel.assign(sign * theirs.weight.detach().numpy().T)
      mine.bias.assign(sign * theirs.bias.detach().numpy())
  flow = tfb.Chain([nice, ablate_coupling.zuko_scale_layer(D)])
  # Our first data-side coupling keeps x_1 (mask_anchor "latent", 8 layers) or x_0 ("data").
  if kept[0] != (1 if flipped else 0):
    flow = tfb.Chain([tfb.Permute([1, 0]), flow])
  return tff.flows.distribution(flow, [D])


def twin_maf(zflow, seed):
  """Our MAF (zuko's scale map) holding zuko's weights: data-side layer i = zuko's
  transform i."""
  maf = tff.flows.maf([D], num_layers=bench_density.LAYERS["maf"], hidden_units=HIDDEN,
                      seed=seed, log_scale_clamp="softsign",
                      log_scale_bound=ablate_coupling.ZUKO_BOUND)
  layers = maf.bijectors  # listed data side first
  assert len(layers) == len(zflow.transform.transforms)
  for i, layer in enumerate(layers):
    made, = [m for m in layer.submodules if isinstance(m, tff.nets.MADE)]
    linears = zuko_linears(zflow.transform.transforms[i])
    assert len(linears) == len(made.layers)
    for j, (theirs, mine) in enumerate(zip(linears, made.layers)):
      kernel, bias = theirs.weight.detach().numpy().T, theirs.bias.detach().numpy()
      mask = theirs.mask.numpy().T.astype(np.float64)
      if j == len(made.layers) - 1:  # zuko: column entry * P + p; ours: p * D + entry
        p = made.num_params
        columns = [e * p + q for q in range(p) for e in range(D)]
        kernel, bias, mask = kernel[:, columns], bias[columns], mask[:, columns]
      np.testing.assert_array_equal(mask, mine.mask.numpy())
      mine.kernel.assign(kernel * mask)
      mine.bias.assign(bias)
  return tff.flows.distribution(maf, [D])


def run(family, seed, flipped, data, epsilon):
  import torch
  torch.manual_seed(seed)
  torch.set_num_threads(1)
  zflow = make_zuko(family, flipped)
  ours = twin_nice(zflow, seed, flipped) if family == "nice" else twin_maf(zflow, seed)
  x0 = next(iter(data.batches(seed)(0, 1)))
  start_diff = float(np.abs(zflow().log_prob(torch.from_numpy(x0)).detach().numpy()
                            - ours.log_prob(tf.constant(x0)).numpy()).max())
  loss = -zflow().log_prob(torch.from_numpy(x0)).mean()
  loss.backward()
  with tf.GradientTape() as tape:
    our_loss = -tf.reduce_mean(ours.log_prob(tf.constant(x0)))
  variables = ours.trainable_variables
  our_norm = float(tf.linalg.global_norm(tape.gradient(our_loss, variables)))
  their_norm = float(np.sqrt(sum(float((p.grad ** 2).sum()) for p in zflow.parameters())))
  zflow.zero_grad()
  x_curve = data.x_test[:5000]
  curve = {}

  def monitor(step, log_prob):
    if step in MARKS:
      curve.setdefault(step, {})["ours"] = float(-np.mean(log_prob(x_curve)))

  log_prob, _, _ = bench_density.train_distribution(ours, data.batches(seed), 1e-3,
                                                    monitor=monitor, epsilon=epsilon)
  kl_ours, se_ours = data.score(log_prob)
  opt = torch.optim.Adam(zflow.parameters(), 1e-3)  # PyTorch's epsilon, 1e-8

  def zuko_log_prob(x):
    with torch.no_grad():
      return np.concatenate([zflow().log_prob(torch.from_numpy(np.asarray(x[i:i + 8192])))
                             .double().numpy() for i in range(0, len(x), 8192)])

  for i, xb in enumerate(data.batches(seed)(0, None)):
    loss = -zflow().log_prob(torch.from_numpy(xb)).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if i + 1 in MARKS:
      curve.setdefault(i + 1, {})["zuko"] = float(-np.mean(zuko_log_prob(x_curve)))
  kl_zuko, se_zuko = data.score(zuko_log_prob)
  return {"seed": seed, "start_log_prob_max_diff": start_diff,
          "start_grad_norm": {"ours": our_norm, "zuko": their_norm},
          "kl": {"ours": kl_ours, "zuko": kl_zuko},
          "stderr": {"ours": se_ours, "zuko": se_zuko},
          "test_nll_5k": {str(k): v for k, v in sorted(curve.items())}}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--family", choices=("nice", "maf"), default="nice")
  parser.add_argument("--seeds", default="0,1,2,3,4")
  parser.add_argument("--orientation", choices=("zuko", "flipped"), default="zuko",
                      help="nice only: zuko's masks, or both flows' turned around")
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--test", type=int, default=50000)
  parser.add_argument("--adam-epsilon", type=float, default=1e-8,
                      help="epsilon of our Keras Adam (zuko runs PyTorch's, 1e-8)")
  parser.add_argument("--quick", action="store_true", help="30 steps, 2000 test points")
  args = parser.parse_args()
  if args.family == "maf" and args.orientation != "zuko":
    parser.error("--orientation flipped is for --family nice")
  if args.quick:
    args.steps, args.test = 30, 2000
  args.batch = 512
  env = _common.environment()
  print(_common.header_line(env), flush=True)
  data = bench_density.Toy("2spirals", args)
  name = f"twin_{args.family}_{args.orientation}" + ("_quick" if args.quick else "")
  rows = []
  for seed in [int(s) for s in args.seeds.split(",")]:
    row = run(args.family, seed, args.orientation == "flipped", data, args.adam_epsilon)
    rows.append(row)
    print(f"  seed {seed}: start |log p diff| {row['start_log_prob_max_diff']:.1e}, "
          f"grad norms {row['start_grad_norm']['ours']:.6f} / "
          f"{row['start_grad_norm']['zuko']:.6f}; KL ours {row['kl']['ours']:.4f}, "
          f"zuko {row['kl']['zuko']:.4f}; test NLL (ours / zuko) " + ", ".join(
              f"{k}: {v.get('ours', float('nan')):.4f} / {v.get('zuko', float('nan')):.4f}"
              for k, v in row["test_nll_5k"].items()), flush=True)
    _common.write_results(name, {"args": vars(args), "rows": rows}, env)
  ours = [r["kl"]["ours"] for r in rows]
  theirs = [r["kl"]["zuko"] for r in rows]
  cells = [[label, "%.3f ± %.3f" % _common.mean_and_stderr(v)]
           for label, v in (("ours, from zuko's initial weights", ours), ("zuko", theirs),
                            ("ours − zuko, paired", np.subtract(ours, theirs)))]
  text = _common.table([f"{args.family}, 2spirals, orientation {args.orientation}",
                        f"KL nats (mean ± s.e., {len(rows)} seeds)"], cells)
  _common.write_results(name, {"args": vars(args), "rows": rows, "table": text}, env)


if __name__ == "__main__":
  main()
