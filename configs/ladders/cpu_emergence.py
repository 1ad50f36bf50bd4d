"""The emergence ladder: tiny dense models on a synthetic language with tasks, every checkpoint
scored three ways, so emergence can be measured on real checkpoints.

  scaling ladder run configs/ladders/cpu_emergence.py --workdir=runs/emergence --parallel=2
  scaling fit runs/emergence --law=emergence --out=runs/emergence/emergence
  scaling fit runs/emergence --law=two_stage --task=recall --x=flops --bootstrap=200 \\
      --out=runs/emergence/two_stage

Design:

* Language (`data.synthetic`): 64 contexts with Zipf exponent 1.5, 16 body tokens per
  document, supports of 4 tokens weighted (j+1)^-2 (w_0 = 0.70), 64-token vocabulary, and both
  tasks on (`tasks="recall,addition"`): recall (a context's code -> its 16-token modal body)
  and 1- to 5-digit addition in 10% of the documents. The documents are 19 tokens, windows 76
  (four documents).
* `ladder.eval`: after training, every rung's checkpoints are scored (`scaling eval --tasks=
  default --checkpoints=all`: validation nll/excess, recall and addition1..5 by NLL, per-token
  accuracy and exact match) into each run's evals.jsonl; `results collect` shows the final
  ones as columns.
* Models: aspect 8, head width 8 (d_model = 8 x depth), a grid of depths at a fixed number of
  tokens per parameter, so compute grows with size; the largest rung is held out for
  `--law=two_stage`.

`get_config("smoke")` is the CI size (tests/evals/test_emergence.py): three rungs and a language
with 16 contexts, trained in seconds.
"""

import ml_collections

from scaling.config import default_config
from scaling.errors import ScalingError
from scaling.ladder.spec import default_ladder, grid_sweep


def get_config(arg: str | None = None):
  run = default_config()
  run.model.update(vocab_size=64, max_len=76, dtype="float32")  # float32 is faster on CPU
  run.train.update(seq_len=76, global_batch=16, eval_batches=8)
  run.data.synthetic.update(vocab_size=64, num_contexts=64, zipf_exponent=1.5, body_length=16,
                            support_exponent=2.0, tasks="recall,addition",
                            addition_fraction=0.1, addition_digits=5, train_tokens=4_194_304,
                            validation_tokens=65_536)

  ladder = default_ladder()
  ladder.name = "cpu_emergence"
  ladder.shape.update(aspect=8, head_dim=8)  # d_model = 8 x depth
  ladder.rules.update(batch_rule="fixed", min_steps=8, evals=4, checkpoints=4, log_points=8)
  ladder.eval.update(tasks="default", checkpoints="all", examples=256)
  ladder.sweeps.grid = grid_sweep((1, 2, 3, 4, 5), (10, 30))
  ladder.sweeps.held = grid_sweep((6,), (30,), holdout=True)
  ladder.hardware = "cpu"
  ladder.mfu = 0.05
  if arg == "smoke":
    run.model.update(vocab_size=32, max_len=44)
    run.train.update(seq_len=44, global_batch=16, eval_batches=2)
    run.data.synthetic.update(vocab_size=32, num_contexts=16, body_length=8, addition_digits=2,
                              train_tokens=524_288, validation_tokens=16_384)
    ladder.rules.update(min_steps=5, evals=2, checkpoints=2, log_points=2)
    ladder.eval.update(examples=64)
    ladder.sweeps = ml_collections.ConfigDict(dict(grid=grid_sweep((1, 2, 3), (10,))))
  elif arg:
    raise ScalingError(f"configs/ladders/cpu_emergence.py:{arg}: unknown preset; use no "
                       "argument or 'smoke'")
  return ml_collections.ConfigDict(dict(run=run, ladder=ladder))
