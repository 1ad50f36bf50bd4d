"""XLA CPU compile time of a tiny training run with and without XLA's MLIR fusion emitters.

  python experiments/bench_compile_flags.py --rounds=3 --devices=8
  python experiments/bench_compile_flags.py --rounds=3 --devices=1 --optimized --steps=400

Why tests/conftest.py compiles the suite with `--xla_cpu_use_fusion_emitters=false`: each round
trains `configs/dense.py:tiny` (2 layers, d_model 64; float32, batch 8 x 128, `--steps`
steps, one eval) in a
fresh process per variant, the order flipping every round, with no persistent compilation
cache, so every program (initialiser, train step, eval step) is compiled. Prints one JSON
object: per variant the median XLA compile seconds (JAX's `backend_compile_duration` events),
CPU seconds of the run and wall seconds, the compile ratio, and whether the final eval losses
were bitwise equal.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

VARIANTS = {"default": "", "no_fusion_emitters": "--xla_cpu_use_fusion_emitters=false"}


def _one_run(args) -> None:
  """In the child: trains the run and prints its figures as one JSON line."""
  import time

  import jax
  from jax._src import monitoring

  from scaling.config import load
  from scaling.train.loop import train

  compile_s = []
  monitoring.register_event_duration_secs_listener(
      lambda event, secs, **_: compile_s.append(secs)
      if event == "/jax/core/compile/backend_compile_duration" else None)
  jax.config.update("jax_disable_most_optimizations", not args.optimized)
  cfg = load(os.path.join(os.path.dirname(__file__), "..", "configs", "dense.py:tiny"))
  cfg.model.dtype = "float32"  # bfloat16 is slow on CPUs
  cfg.train.update(steps=args.steps, global_batch=8, warmup_steps=2, log_every=args.steps,
                   eval_every=args.steps, eval_batches=2, checkpoint_every=args.steps)
  cfg.data.data_dir = args.data_dir
  cfg.data.synthetic.update(train_tokens=65536, validation_tokens=16384, num_contexts=256)
  wall, cpu = time.time(), time.process_time()
  with tempfile.TemporaryDirectory() as workdir:
    rec = train(cfg, workdir)
  print(json.dumps({"compile_s": sum(compile_s), "cpu_s": time.process_time() - cpu,
                    "wall_s": time.time() - wall, "loss": rec["final_eval_loss"]}))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--devices", type=int, default=8, help="simulated CPU devices")
  parser.add_argument("--steps", type=int, default=4)
  parser.add_argument("--optimized", action="store_true",
                      help="XLA's backend optimizations on (off: as most tests compile)")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--data_dir", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    _one_run(args)
    return
  runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
  with tempfile.TemporaryDirectory() as data_dir:
    for r in range(args.rounds):
      for name in (list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]):
        flags = f"--xla_force_host_platform_device_count={args.devices} {VARIANTS[name]}"
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        argv = [sys.executable, __file__, "--child", f"--data_dir={data_dir}",
                f"--steps={args.steps}"] + (["--optimized"] if args.optimized else [])
        out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout
        runs[name].append(json.loads(out.strip().splitlines()[-1]))
  med = {name: {k: round(statistics.median(x[k] for x in rs), 3)
                for k in ("compile_s", "cpu_s", "wall_s")} for name, rs in runs.items()}
  losses = {x["loss"] for rs in runs.values() for x in rs}
  print(json.dumps({"devices": args.devices, "steps": args.steps, "optimized": args.optimized,
                    "median": med, "compile_ratio": round(
                        med["no_fusion_emitters"]["compile_s"] / med["default"]["compile_s"], 3),
                    "losses_bitwise_equal": len(losses) == 1, "losses": sorted(losses)}))


if __name__ == "__main__":
  main()
