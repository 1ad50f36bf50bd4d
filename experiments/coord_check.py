"""The coordinate check of μP (Yang et al. 2022, "Tensor Programs V", arXiv:2203.03466; the `mup`
package's `get_coord_data`): activation sizes across widths after a few steps, SP against μP.

  nice -n 10 python experiments/coord_check.py [--widths=64,128,256,512] [--plot=FILE.png]

Trains widths 64, 128, 256 and 512 (d_model; d_ff = 4 x d_model, 4 heads) at the same depth
on the same batches of the synthetic language, under SP and under μP with base width 64, for 10
steps at one learning rate (AdamW, constant 1e-2, no warm-up, clipping or decay, so nothing
hides a blow-up), and records after steps 1, 5 and 10 the mean |activation| of the embedding
output, each block's attention and MLP branch, and the logits, on a fixed batch
(`scaling.train.coordinates.coord_check`). Prints JSON: every coordinate per width, and each
coordinate's spread (largest / smallest over the widths) per step; `--plot` draws one panel per
(parametrization, step), coordinate against width on log axes, as the `mup` package plots it.

Measured (defaults: 2 layers, seq 32, batch 32, 3 seeds averaged; 195 s of CPU, 3:15 wall on 2
cores shared with other jobs, under `nice -n 10`). Spread = largest / smallest over the widths:

  max spread over the coordinates   step 1   step 5   step 10
  SP                                36.5x    862x     2264x    (block1 MLP at step 10)
  μP                                1.56x    1.64x    1.67x    (every coordinate within 2x)

  logits, width 512 / width 64      step 1   step 5   step 10
  SP                                3.37     4.64     3.33     (0.171 -> 0.575 at step 1)
  μP                                0.64     0.96     0.84

Under SP the hidden branches grow by one to three orders of magnitude from width 64 to 512 and
the logits by 3-5x; under μP every coordinate stays within 1.7x, the embedding output within
5%. μP's logits at step 1 fall slightly with width (0.171 -> 0.110): the readout's initial
term shrinks as r^-1/2 (Table 3's readout init) while the trained term is width-independent,
which a zero-initialised readout would remove (possible only for untied embeddings). Fewer
samples scatter more: one seed at batch 8 gave a μP max spread of 3.5x at step 5 and 4.1x at
step 10, three seeds at batch 8 2.4x (non-monotonic in width: noise, not growth); at these
small widths one draw's coordinates vary by tens of percent, hence the seed average and batch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from scaling.config import default_config  # noqa: E402
from scaling.train import coordinates  # noqa: E402

LANGUAGE = dict(vocab_size=256, num_contexts=512, zipf_exponent=1.5, body_length=29)


def plot(out: dict, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  steps = list(out["sp"]["coordinates"])
  fig, axes = plt.subplots(2, len(steps), figsize=(3.4 * len(steps), 6.2), sharex=True,
                           sharey="row")
  for row, p in enumerate(("sp", "mup")):
    r = out[p]
    for col, step in enumerate(steps):
      ax = axes[row][col]
      for name, values in r["coordinates"][step].items():
        ax.plot(r["widths"], values, "o-", ms=3, label=name)
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      worst = max(r["spreads"][step].values())
      ax.set_title(f"{'SP' if p == 'sp' else 'μP'}, step {step} (max spread {worst:.3g}x)",
                   fontsize=9)
      if row == 1:
        ax.set_xlabel("width (d_model)")
      if col == 0:
        ax.set_ylabel("mean |activation|")
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--widths", default="64,128,256,512")
  parser.add_argument("--layers", type=int, default=2)
  parser.add_argument("--lr", type=float, default=1e-2)
  parser.add_argument("--seq_len", type=int, default=32)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--steps", default="1,5,10")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--plot", default="")
  args = parser.parse_args()
  began = time.time()
  widths = [int(w) for w in args.widths.split(",")]
  record_at = tuple(int(s) for s in args.steps.split(","))
  base = default_config()
  base.model.update(num_layers=args.layers, d_model=widths[0], num_heads=4, num_kv_heads=4,
                    d_ff=4 * widths[0], vocab_size=LANGUAGE["vocab_size"],
                    max_len=args.seq_len, dtype="float32", mup_base_width=widths[0])
  base.train.update(lr=args.lr, warmup_steps=0, schedule="constant", grad_clip=0.0,
                    weight_decay=0.0, global_batch=args.batch, seq_len=args.seq_len)
  batches = coordinates.language_batches(args.batch, args.seq_len, max(record_at), **LANGUAGE)
  out = {p: coordinates.coord_check(base, widths, p, lambda i: batches[i],
                                    record_at=record_at, seeds=args.seeds)
         for p in ("sp", "mup")}
  out["max_spread"] = {p: {step: max(s.values()) for step, s in out[p]["spreads"].items()}
                       for p in ("sp", "mup")}
  out["logit_growth"] = {p: {step: coordinates.growth(out[p]["coordinates"], "logits", step)
                             for step in record_at} for p in ("sp", "mup")}
  out["wall_s"] = time.time() - began
  if args.plot:
    plot(out, args.plot)
    out["plot"] = args.plot
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
