"""Flows inside larger models: VAE prior, VI posteriors, MAF -> IAF distillation.

Three tables, each against TFP's own baseline in the same run:

* VAE on binarised 8x8 digits: test ELBO (nats/image) with a RealNVP prior trained jointly
  vs the standard normal prior, same networks and steps (``examples/vae_prior.py``).
* VI with ``tfp.vi.fit_surrogate_posterior``: ELBO of IAF and RealNVP surrogates vs a
  mean-field Gaussian, on Bayesian logistic regression (breast cancer, 31-D) and Neal's funnel
  (10-D, normalised: -ELBO = KL(q || p)) (``examples/vi_posterior.py``).
* Distillation on 64-D digits: KL(student || teacher) of an IAF distilled from a trained MAF,
  and the sampling time of both (ratio; target >= 20x) (``examples/distill.py``).

Run:  python benchmarks/bench_models.py [--quick]     (writes benchmarks/results/models.json)
"""

import argparse
import importlib.util
import json
import os
import platform
import time

import tensorflow as tf

_HERE = os.path.dirname(os.path.abspath(__file__))
_EXAMPLES = os.path.join(_HERE, os.pardir, "examples")


def _example(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(_EXAMPLES, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _table(title, header, rows):
  print(f"\n{title}")
  widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
  line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
  print(line(header))
  print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
  for r in rows:
    print(line(r))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny budgets (smoke run)")
  parser.add_argument("--out", default=os.path.join(_HERE, "results", "models.json"))
  parser.add_argument("--only", default="vae,vi,distill", help="comma-separated subset")
  args = parser.parse_args()
  parts = set(args.only.split(","))
  results = {"quick": args.quick, "tensorflow": tf.__version__, "machine": platform.machine(),
             "cpu_count": os.cpu_count()}
  start = time.perf_counter()

  def save():  # after every part, so a long run keeps what it measured
    results["total_seconds"] = time.perf_counter() - start
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(results, f, indent=2)

  if "vae" in parts:
    vae = _example("vae_prior").run(num_steps=4000, quick=args.quick, verbose=False)
    results["vae"] = vae
    save()
    _table("VAE on binarised digits (test ELBO, nats/image; higher is better)",
           ["prior", "test ELBO", "IWAE-100", "gain vs N(0, I) (paired)", "steps", "seconds"],
           [[r["prior"], f"{r['test_elbo']:.3f} ± {r['test_elbo_stderr']:.3f}",
             f"{r['test_iwae_100']:.3f}",
             f"{r['elbo_gain_vs_normal']:+.3f} ± {r['elbo_gain_stderr']:.3f}", r["num_steps"],
             f"{r['seconds']:.1f}"] for r in vae])

  if "vi" in parts:
    vi = _example("vi_posterior").run(num_steps=1500, quick=args.quick, verbose=False)
    results["vi"] = vi
    save()
    base = {r["target"]: r["elbo"] for r in vi
            if r["surrogate"] == "mean_field" and r["num_steps"] == vi[0]["num_steps"]}
    _table("VI with tfp.vi.fit_surrogate_posterior (ELBO, nats; higher is better)",
           ["target", "surrogate", "ELBO", "vs mean-field", "params", "steps", "seconds"],
           [[r["target"], r["surrogate"], f"{r['elbo']:.3f} ± {r['elbo_stderr']:.3f}",
             f"{r['elbo'] - base[r['target']]:+.3f}", r["num_variables"], r["num_steps"],
             f"{r['seconds']:.1f}"] for r in vi])

  if "distill" in parts:
    d = _example("distill").run(quick=args.quick, verbose=False)
    results["distill"] = d
    save()
    _table("MAF -> IAF density distillation on 64-D digits",
           ["teacher test NLL mean / median", "student test NLL mean / median",
            "KL(student || teacher)", f"teacher sample {d['num_timing_samples']}",
            "student sample", "speed-up"],
           [[f"{d['teacher_test_nll']:.4g} / {d['teacher_test_nll_median']:.2f}",
             f"{d['student_test_nll']:.4g} / {d['student_test_nll_median']:.2f}",
             f"{d['kl_student_teacher']:.3f} ± {d['kl_stderr']:.3f}",
             f"{d['teacher_sample_seconds'] * 1e3:.1f} ms",
             f"{d['student_sample_seconds'] * 1e3:.1f} ms", f"{d['sampling_speedup']:.1f}x"]])

  save()
  print(f"\nwrote {args.out} ({results['total_seconds']:.0f}s)")


if __name__ == "__main__":
  main()
