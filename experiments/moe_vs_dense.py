"""MoE against the dense model with the same active parameters per token, same steps and data.

  python experiments/moe_vs_dense.py --steps=300 --workdir=/tmp/moe_vs_dense

Trains `configs/moe.py:tiny` (8 experts of width 128, top-2) and `configs/moe.py:tiny_dense`
(one MLP of width 256: the same active MLP parameters) on the embedded synthetic data and prints
the final eval losses as JSON.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from scaling.config import load as load_config
from scaling.train.loop import train


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--workdir", default="/tmp/moe_vs_dense")
  parser.add_argument("--data_dir", default="")
  args = parser.parse_args()
  out = {}
  for name in ("tiny", "tiny_dense"):
    cfg = load_config(f"configs/moe.py:{name}")
    cfg.train.update(steps=args.steps, eval_every=args.steps, checkpoint_every=args.steps,
                     warmup_steps=max(1, args.steps // 20), log_every=50)
    if args.data_dir:
      cfg.data.data_dir = args.data_dir
    record = train(cfg, pathlib.Path(args.workdir) / name)
    out[name] = {k: record[k] for k in ("params_total", "params_active", "final_eval_loss",
                                        "tokens", "flops", "wall_time_s")}
  out["moe_minus_dense_eval_loss"] = (out["tiny"]["final_eval_loss"]
                                      - out["tiny_dense"]["final_eval_loss"])
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
