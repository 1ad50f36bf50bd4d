"""A ladder's runs trained one after another in one process, with and without `Programs`.

  python experiments/bench_program_reuse.py --config=configs/ladders/cpu_branches.py --rounds=2

What a long-lived ladder worker saves by keeping the jitted programs of the shapes it trained
(`scaling.train.programs`): each round trains every run of the ladder in config order (trunks
before branches) into fresh workdirs twice, once building every run's programs afresh (as one
process per run did) and once through one shared `Programs`, the order flipping every round. The
persistent compilation cache is on for both (its own directory, warmed by a first untimed pass),
so what is timed is tracing, lowering and cache lookups, not XLA compiles. Prints one JSON
object: per variant the median seconds per ladder, `fresh_over_shared`, the hits of `Programs`,
and whether every run's final eval loss is bitwise the same in both variants.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time


def _train_all(workdir: str, config: str, programs) -> dict[str, float]:
  """Prepares the ladder in `workdir` and trains each run in this process; final eval losses."""
  from scaling.config_file import load_config
  from scaling.ladder import runner, spec

  lcfg = load_config(config)
  rungs = spec.expand(lcfg)
  todo = runner.prepare(workdir, lcfg.ladder.name, rungs)
  losses = {}
  with contextlib.redirect_stdout(sys.stderr):  # the runs' progress lines: stdout is the JSON
    for r in runner.ordered(todo):
      losses[r.run_id] = runner.work(workdir, r.run_id, programs).get("eval_loss")
  return losses


def main(argv: list[str]) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", default="configs/ladders/cpu_branches.py")
  ap.add_argument("--rounds", type=int, default=2)
  args = ap.parse_args(argv)
  from scaling.train.programs import Programs

  root = tempfile.mkdtemp(prefix="program_reuse-")
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(root, "jax-cache"))
  _train_all(os.path.join(root, "warm"), args.config, None)  # fills the persistent cache
  seconds: dict[str, list[float]] = {"fresh": [], "shared": []}
  losses, hits = {}, 0
  for i in range(args.rounds):
    order = ("fresh", "shared") if i % 2 == 0 else ("shared", "fresh")
    for name in order:
      programs = Programs() if name == "shared" else None
      began = time.perf_counter()
      losses[name] = _train_all(os.path.join(root, f"{name}{i}"), args.config, programs)
      seconds[name].append(time.perf_counter() - began)
      if programs is not None:
        hits = programs.hits
  med = {k: statistics.median(v) for k, v in seconds.items()}
  return {"config": args.config, "runs": len(losses["fresh"]), "rounds": args.rounds,
          "seconds": {k: round(v, 2) for k, v in med.items()},
          "fresh_over_shared": round(med["fresh"] / med["shared"], 3),
          "programs_hits": hits, "same_losses": losses["fresh"] == losses["shared"]}


if __name__ == "__main__":
  print(json.dumps(main(sys.argv[1:])))
