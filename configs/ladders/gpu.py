"""Ladders for one GPU per run (H100 figures in `ladder show`): dense IsoFLOP and MoE sweeps.

  scaling ladder show configs/ladders/gpu.py              # dense IsoFLOP, 3 budgets x 5 sizes
  scaling ladder show configs/ladders/gpu.py:moe          # experts 1..64 x granularity 1, 2, 4
  scaling ladder run configs/ladders/gpu.py --workdir=gs://BUCKET/ladders/dense \\
      --backend=slurm --config.run.data.text_folder.path=/data/corpus
  scaling fit gs://BUCKET/ladders/dense --law=chinchilla --approach=3 --bootstrap=1000

Data: a folder of .txt files (`run.data.text_folder.path`, byte tokens by default; set
`run.data.text_folder.tokenizer=sentencepiece` for a learned vocabulary), or any TFDS dataset
with `--config.run.data.name=<tfds name>`. The embedded synthetic language is too small for
these budgets (its largest rungs would repeat data).

`dense`: IsoFLOP budgets 1e17, 3e17, 1e18 FLOPs (Hoffmann et al. 2022, approach 2), five sizes
each spaced evenly in log N around N* = sqrt(C / 120); at MFU 0.4 on an H100 the whole ladder
is about 5 GPU-hours. `moe`: fixed active parameters (the depth-8 dense model), 1 (dense) to 64
routed experts at granularity 1, 2 and 4 (top-1 at G = 1: each token's FFN FLOPs equal the
dense model's, so E = 1 is the dense baseline; Clark et al. 2022, Krajewski et al. 2024), 20
tokens per active parameter; about 1.2 GPU-hours. Fit with `scaling fit DIR --law=moe`.
"""

import ml_collections

from scaling.config import default_config
from scaling.ladder.spec import default_ladder, isoflop_sweep, moe_sweep


def get_config(arg: str | None = None):
  run = default_config()
  run.model.update(dtype="bfloat16", vocab_size=256, max_len=1024)
  run.train.update(seq_len=1024, eval_batches=20)
  run.data.name = "text_folder"

  ladder = default_ladder()
  ladder.shape.update(aspect=64, head_dim=64)  # d_model = 64 x depth: N ~ 49,152 depth^3
  ladder.rules.update(batch_multiple=8, min_batch=32, max_batch=512)
  ladder.hardware, ladder.devices, ladder.mfu = "h100", 1, 0.4
  ladder.slurm.update(gpus_per_task=1, cpus_per_task=8, mem="64G", time="08:00:00")
  if arg in (None, "", "dense"):
    ladder.name = "gpu_dense"
    ladder.sweeps.iso = isoflop_sweep([1e17, 3e17, 1e18], count=5, n_spread=4.0)
  elif arg == "moe":
    ladder.name = "gpu_moe"
    run.model.moe.update(dispatch="pallas", capacity_factor=1.25)
    ladder.sweeps.moe = moe_sweep(8, experts=(1, 4, 8, 16, 32, 64), granularity=(1, 2, 4),
                                  top_k=1, tokens_per_param=20.0)
  else:
    raise ValueError(f"unknown preset {arg!r} for configs/ladders/gpu.py; use dense or moe")
  return ml_collections.ConfigDict(dict(run=run, ladder=ladder))
