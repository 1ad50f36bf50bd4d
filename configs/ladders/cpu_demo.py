"""The demo ladder: small dense models on the embedded synthetic language, ~10 minutes on 2 CPUs.

  scaling ladder show configs/ladders/cpu_demo.py
  scaling ladder run configs/ladders/cpu_demo.py --workdir=runs/cpu_demo
  scaling results collect runs/cpu_demo --out=runs/cpu_demo/results.csv

Three IsoFLOP budgets x 4-5 sizes spaced evenly in log N around the D = 20 N optimum, enough to
fit a Chinchilla law L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, approach 3)
and IsoFLOP parabolas (approach 2). `get_config("smoke")` is a 3-run version for quick checks.
"""

import ml_collections

from scaling.config import default_config
from scaling.ladder.spec import default_ladder, isoflop_sweep


def get_config(arg: str | None = None):
  run = default_config()
  run.model.update(vocab_size=256, max_len=64, dtype="float32")  # float32 is faster on CPU
  run.train.update(seq_len=64, eval_batches=8)
  # A smaller language than the default so the largest rungs see each training token only once.
  run.data.synthetic.update(num_contexts=1024, train_tokens=8_388_608,
                            validation_tokens=262_144)

  ladder = default_ladder()
  ladder.name = "cpu_demo"
  ladder.shape.update(aspect=16, head_dim=16)  # d_model = 16 x depth: N ~ 3,072 depth^3
  ladder.rules.update(batch_multiple=8, min_batch=16, max_batch=64)
  ladder.sweeps.iso = isoflop_sweep([3e10, 1e11, 3e11], count=5, n_spread=5.0)
  ladder.hardware = "cpu"
  ladder.mfu = 0.07  # measured: ~7e9 FLOP/s on 2 CPU cores (d3, C=1e11 in 14 s) vs 1e11 nominal
  if arg == "smoke":
    ladder.sweeps.iso = isoflop_sweep([1e11], depths=(1, 2, 3))
  return ml_collections.ConfigDict(dict(run=run, ladder=ladder))
