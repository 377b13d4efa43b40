"""The ``tfp-flows`` command: how fast it answers, and what it gives on real images.

1. Start-up: the wall-clock time of ``python -m tfp_flows.cli ARGS`` in a fresh process for
   ``--help``, ``train --help`` and two bad calls (a missing data file, ``--learning_rate
   inf``), each reported with its exit status and the number of stderr lines. These calls
   never import TensorFlow. The reference is ``python -c "import tensorflow"``: what every
   call cost when the command imported TensorFlow first. Calls are interleaved (ours, the
   reference, ours, ...) and medians are reported, so both see the same machine load.
2. Real images (skipped with ``--quick`` or when no file is given or found): ``tfp-flows
   train --data FILE --flow F`` for every image family in the CLI, at the CLI's defaults
   for that family, ``--epochs`` epochs of batch 64; held-out bits/dim, training rows/s (the
   first, compiling step included) and the compile time, read from each run's metrics.json.

    python benchmarks/bench_cli.py                          # start-up + images (minutes)
    python benchmarks/bench_cli.py --quick                  # start-up only, 3 repeats
    python benchmarks/bench_cli.py --images path/to/mnist.npz --key images --epochs 2
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
SHARED_IMAGES = os.path.join(ROOT, "..", "shared", "data", "mnist_8k.npz")


def _timed(command, env):
  start = time.perf_counter()
  proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)
  return time.perf_counter() - start, proc


def startup(reps, tmp):
  env = dict(os.environ)
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  cli = [sys.executable, "-m", "tfp_flows.cli"]
  calls = {
      "--help": cli + ["--help"],
      "train --help": cli + ["train", "--help"],
      "train --data missing.npy": cli + ["train", "--data", "missing.npy", "--out",
                                         os.path.join(tmp, "o")],
      "train --learning_rate inf": cli + ["train", "--data", "moons", "--learning_rate", "inf",
                                          "--out", os.path.join(tmp, "o")],
  }
  reference = [sys.executable, "-c", "import tensorflow"]
  times = {name: [] for name in calls}
  times["import tensorflow (reference)"] = []
  info = {}
  for _ in range(reps):
    for name, command in calls.items():
      seconds, proc = _timed(command, env)
      times[name].append(seconds)
      info[name] = {"exit": proc.returncode, "stderr_lines": len(proc.stderr.splitlines())}
      seconds, _ = _timed(reference, env)
      times["import tensorflow (reference)"].append(seconds)
  return times, info


def images(path, key, epochs, tmp):
  sys.path.insert(0, ROOT)
  from tfp_flows import cli  # pylint: disable=import-outside-toplevel
  rows = []
  for flow, family in cli.FLOWS.items():
    if family.image is None:
      continue
    out = os.path.join(tmp, flow)
    command = [sys.executable, "-m", "tfp_flows.cli", "train", "--data", path, "--flow", flow,
               "--out", out, "--epochs", str(epochs), "--batch_size", "64", "--verbose", "0"]
    if key:
      command += ["--key", key]
    seconds, proc = _timed(command, dict(os.environ))
    row = {"flow": flow, "exit": proc.returncode, "wall_seconds": seconds}
    if proc.returncode == 0:
      with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
      row.update({k: m[k] for k in ("test_bits_per_dim", "train_bits_per_dim",
                                    "train_rows_per_second", "compile_seconds",
                                    "train_seconds", "num_parameters", "num_train",
                                    "num_test")})
    else:
      row["error"] = proc.stderr.strip().splitlines()[-1:]
    rows.append(row)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="start-up only, 3 repeats")
  parser.add_argument("--reps", type=int, default=7, help="start-up repeats (median)")
  parser.add_argument("--images", default=None, help="image file for the training runs "
                      "(default: the shared MNIST file when present)")
  parser.add_argument("--key", default=None, help="array of the .npz image file")
  parser.add_argument("--epochs", type=int, default=1, help="epochs of each image run")
  args = parser.parse_args()
  reps = 3 if args.quick else args.reps
  path = args.images or (SHARED_IMAGES if os.path.exists(SHARED_IMAGES) else None)
  import numpy as np  # noqa: F401  (only to record its version)
  header = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            "python": platform.python_version(), "load_average": os.getloadavg(),
            "reps": reps}
  with tempfile.TemporaryDirectory() as tmp:
    times, info = startup(reps, tmp)
    ref = statistics.median(times["import tensorflow (reference)"])
    print(f"# tfp-flows start-up ({reps} repeats, medians; load average "
          f"{header['load_average'][0]:.1f})")
    print(f"{'call':<32}{'seconds':>9}{'x import tf':>13}{'exit':>6}{'stderr lines':>14}")
    for name, values in times.items():
      med = statistics.median(values)
      extra = info.get(name, {"exit": 0, "stderr_lines": "-"})
      print(f"{name:<32}{med:>9.3f}{med / ref:>13.3f}{extra['exit']:>6}"
            f"{extra['stderr_lines']:>14}")
    result = {"header": header, "startup_seconds": times, "startup_info": info}
    if path and not args.quick:
      rows = images(path, args.key, args.epochs, tmp)
      print(f"\n# tfp-flows train on {os.path.basename(path)}, {args.epochs} epoch(s), batch 64")
      print(f"{'flow':<14}{'test bits/dim':>14}{'rows/s':>9}{'compile s':>11}{'params':>10}")
      for r in rows:
        if r["exit"]:
          print(f"{r['flow']:<14} failed: {r['error']}")
        else:
          print(f"{r['flow']:<14}{r['test_bits_per_dim']:>14.3f}"
                f"{r['train_rows_per_second']:>9.1f}{r['compile_seconds']:>11.1f}"
                f"{r['num_parameters']:>10,}")
      result["images"] = {"path": os.path.abspath(path), "epochs": args.epochs, "runs": rows}
  os.makedirs(RESULTS, exist_ok=True)
  name = "cli_quick.json" if args.quick else "cli.json"
  with open(os.path.join(RESULTS, name), "w") as f:
    json.dump(result, f, indent=2)
  print(f"\nwrote {os.path.join(RESULTS, name)}")


if __name__ == "__main__":
  main()
