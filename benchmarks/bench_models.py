"""Flows inside larger models: VAE prior, VI posteriors, MAF -> IAF distillation.

Three tables, each against TFP's own baseline in the same run. Each runs the example script
(as a user would, ``--out`` a temporary folder) and reads its ``metrics.json``:

* VAE on binarised 8x8 digits: test ELBO (nats/image) with a RealNVP prior trained jointly
  vs the standard normal prior, same networks and steps (``examples/vae_prior.py --steps 4000``).
* VI by reverse KL (``tff.train.make_vi_step``): ELBO of IAF and RealNVP surrogates vs a
  mean-field Gaussian, on Bayesian logistic regression (breast cancer, 31-D) and Neal's funnel
  (10-D, normalised: -ELBO = KL(q || p)) (``examples/vi_posterior.py --steps 1500``).
* Distillation on 64-D digits: KL(student || teacher) of an IAF distilled from a trained MAF,
  and the sampling time of both (ratio; target >= 20x) (``examples/distill.py``).

    python benchmarks/bench_models.py            # full run (~2-3 min on 2 quiet cores; 121 s
                                                 # with the previous training loop)
    python benchmarks/bench_models.py --quick    # smoke run (the examples' --quick)
    python benchmarks/bench_models.py --only vae,distill

Writes ``benchmarks/results/models.json`` (``models_quick.json`` with ``--quick``).
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

import _common

flags.DEFINE_bool("quick", False, "the examples' smoke runs")
flags.DEFINE_list("only", ["vae", "vi", "distill"], "parts to run")
FLAGS = flags.FLAGS

ROOT = os.path.normpath(os.path.join(_common.HERE, os.pardir))
PARTS = {  # part -> (example, flags of the full run)
    "vae": ("vae_prior", ["--steps", "4000"]),
    "vi": ("vi_posterior", ["--steps", "1500"]),
    "distill": ("distill", []),
}


def run_example(name, args):
  """Runs ``examples/<name>.py`` with ``args``; returns (its metrics.json, seconds)."""
  with tempfile.TemporaryDirectory() as out:
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(ROOT, "examples", f"{name}.py"), "--out", out,
                    *args], check=True, env=env)
    seconds = time.perf_counter() - start
    with open(os.path.join(out, "metrics.json")) as f:
      return json.load(f), seconds


def _vae_table(vae):
  _common.table(
      ["prior", "test ELBO", "IWAE-100", "gain vs N(0, I) (paired)", "steps", "seconds"],
      [[r["prior"], f"{r['test_elbo']:.3f} ± {r['test_elbo_stderr']:.3f}",
        f"{r['test_iwae_100']:.3f}",
        f"{r['elbo_gain_vs_normal']:+.3f} ± {r['elbo_gain_stderr']:.3f}", r["num_steps"],
        f"{r['seconds']:.1f}"] for r in vae],
      title="VAE on binarised digits (test ELBO, nats/image; higher is better)")


def _vi_table(vi):
  base = {r["target"]: r["elbo"] for r in vi
          if r["surrogate"] == "mean_field" and r["num_steps"] == vi[0]["num_steps"]}
  _common.table(
      ["target", "surrogate", "ELBO", "vs mean-field", "params", "steps", "seconds"],
      [[r["target"], r["surrogate"], f"{r['elbo']:.3f} ± {r['elbo_stderr']:.3f}",
        f"{r['elbo'] - base[r['target']]:+.3f}", r["num_variables"], r["num_steps"],
        f"{r['seconds']:.1f}"] for r in vi],
      title="VI by reverse KL (ELBO, nats; higher is better)")


def _distill_table(d):
  fmt = lambda v, spec: "–" if v is None else format(v, spec)
  _common.table(
      ["teacher test NLL mean / median", "student test NLL mean / median",
       "KL(student || teacher)", f"teacher sample {d['num_timing_samples']}", "student sample",
       "speed-up"],
      [[f"{fmt(d['teacher_test_nll'], '.4g')} / {d['teacher_test_nll_median']:.2f}",
        f"{fmt(d['student_test_nll'], '.4g')} / {d['student_test_nll_median']:.2f}",
        f"{d['kl_student_teacher']:.3f} ± {d['kl_stderr']:.3f}",
        f"{d['teacher_sample_seconds'] * 1e3:.1f} ms",
        f"{d['student_sample_seconds'] * 1e3:.1f} ms", f"{d['sampling_speedup']:.1f}x"]],
      title="MAF -> IAF density distillation on 64-D digits")


TABLES = {"vae": _vae_table, "vi": _vi_table, "distill": _distill_table}


def main(argv):
  del argv
  unknown = set(FLAGS.only) - set(PARTS)
  if unknown:
    raise app.UsageError(f"--only: unknown parts {sorted(unknown)}; expected {list(PARTS)}.")
  env = _common.environment()
  print(_common.header_line(env))
  name = "models_quick" if FLAGS.quick else "models"
  results = {"quick": FLAGS.quick}
  for part in (p for p in PARTS if p in FLAGS.only):
    example, full = PARTS[part]
    metrics, seconds = run_example(example, ["--quick"] if FLAGS.quick else full)
    results[part] = metrics
    results[f"{part}_seconds"] = seconds
    print()
    TABLES[part](metrics)
    _common.write_results(name, results, env)  # after every part: a long run keeps its parts


if __name__ == "__main__":
  app.run(main)
