"""A 3-run ladder of tiny models on a small synthetic dataset, for the ladder tests (seconds each).

`get_config("grid")`: depths 1, 2 x 2 and 4 tokens per parameter (4 runs);
`get_config()` / `"iso"`: one IsoFLOP budget over depths 1, 2, 3 (3 runs);
`get_config("wsd")`: one depth-1 trunk and cooldown branches at 2 and 4 tokens per parameter.
Tests set `--config.run.data.data_dir` to a temporary folder.
"""

from scaling.config import default_config
from scaling.ladder.spec import default_ladder, grid_sweep, isoflop_sweep, wsd_sweep


def get_config(arg: str | None = None):
  import ml_collections

  run = default_config()
  run.model.update(vocab_size=256, max_len=64, dtype="float32")
  run.train.update(seq_len=64, eval_batches=2)
  run.data.synthetic.update(train_tokens=65536, validation_tokens=16384, num_contexts=256)
  ladder = default_ladder()
  ladder.name = "tiny"
  ladder.shape.update(aspect=16, head_dim=16)
  ladder.rules.update(batch_multiple=8, min_batch=8, max_batch=8, min_steps=4, evals=2,
                      checkpoints=3)
  if arg == "grid":
    ladder.sweeps.grid = grid_sweep((1, 2), (2, 4))
  elif arg == "wsd":
    ladder.sweeps.wsd = wsd_sweep((1,), (2, 4), cooldown_fraction=0.25)
  else:
    ladder.sweeps.iso = isoflop_sweep([4e9], depths=(1, 2, 3), tolerance=0.1)
  cfg = ml_collections.ConfigDict()
  cfg.run, cfg.ladder = run, ladder
  return cfg
