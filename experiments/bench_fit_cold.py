"""Benchmark: a cold `scaling fit` (a fresh process, as a user runs it), its wall time and the
XLA compilations it makes, optionally against another revision of this repository.

Prints one JSON object. Each round runs the fit command in a new Python process with
`JAX_LOG_COMPILES=1` and counts the "Finished XLA compilation" lines JAX logs (with their
seconds). With `--baseline=REV` the same command also runs from a `git worktree` of REV, in
alternating rounds (the order flips every round), and the JSON gives the median of the
per-round wall-time ratios (`baseline_over_head`): a cold start cannot be repeated inside one
process, so rounds alternate instead.

  .venv/bin/python experiments/bench_fit_cold.py --rounds=3 --baseline=HEAD~1

Default command: the Epoch Chinchilla table as Besiroglu et al. 2024 prepare it (240 points),
Approach 3, 200 bootstrap resamples, checks, report and plots (what tests/fit/test_fit_cli.py
runs with 20 resamples).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCH = "scaling/reference_data/epoch_chinchilla_svg_extracted_data.csv"
ARGS = ["fit", EPOCH, "--columns", "params=Model Size,flops=Training FLOP",
        "--drop-highest-loss=5", "--law=chinchilla", "--approach=3", "--json"]
_COMPILED = re.compile(r"Finished XLA compilation of (\S+) in ([0-9.]+) sec")


def _run(tree: str, bootstrap: int) -> dict:
  """One cold fit from the checkout at `tree`: wall seconds, compilations and their seconds."""
  with tempfile.TemporaryDirectory() as out:
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_LOG_COMPILES="1", PYTHONPATH=tree)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # cold: no persistent cache
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "scaling.cli", *ARGS,
                           f"--bootstrap={bootstrap}", f"--out={out}"], cwd=tree, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - began
  if proc.returncode != 0:
    raise SystemExit(f"error: the fit failed in {tree}: {proc.stderr[-2000:]}")
  compiled = [float(m.group(2)) for m in _COMPILED.finditer(proc.stderr)]
  params = json.loads(proc.stdout)["params"]
  return {"wall_s": wall, "compilations": len(compiled), "compile_s": sum(compiled),
          "E": params["E"], "alpha": params["alpha"]}


def _summary(runs: list[dict]) -> dict:
  return {"wall_s": round(statistics.median(r["wall_s"] for r in runs), 2),
          "compilations": runs[-1]["compilations"],
          "compile_s": round(statistics.median(r["compile_s"] for r in runs), 2),
          "E": runs[-1]["E"], "alpha": runs[-1]["alpha"]}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--bootstrap", type=int, default=200)
  ap.add_argument("--baseline", default="", help="a git revision to compare against")
  args = ap.parse_args()
  trees = {"head": ROOT}
  with tempfile.TemporaryDirectory() as tmp:
    if args.baseline:
      trees["baseline"] = os.path.join(tmp, "baseline")
      subprocess.run(["git", "worktree", "add", "--detach", trees["baseline"], args.baseline],
                     cwd=ROOT, check=True, capture_output=True)
    try:
      runs = {name: [] for name in trees}
      for r in range(args.rounds):
        for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
          runs[name].append(_run(trees[name], args.bootstrap))
    finally:
      if args.baseline:
        subprocess.run(["git", "worktree", "remove", "--force", trees["baseline"]], cwd=ROOT,
                       check=False, capture_output=True)
  result = {"command": "scaling " + " ".join(ARGS) + f" --bootstrap={args.bootstrap}",
            "rounds": args.rounds, **{name: _summary(v) for name, v in runs.items()}}
  if args.baseline:
    result["baseline_rev"] = args.baseline
    result["baseline_over_head"] = round(statistics.median(
        b["wall_s"] / h["wall_s"] for b, h in zip(runs["baseline"], runs["head"], strict=True)), 3)
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
