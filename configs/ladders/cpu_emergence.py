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
* Models: aspect 8, head width 8 (d_model = 8 x depth, N = 1K to 167K), depths 1-5 at 10 and
  30 tokens per parameter (10 fitted (N, D) points, compute 2e8 to 2e12 FLOPs), batch 16 x 76
  tokens, and depth 6 at 30 tokens per parameter (7e12 FLOPs) held out for `--law=two_stage`.

Measured (this config, 11 runs, 54 min on 2 CPU cores shared with other jobs: 1078 CPU-s user,
327 s system; `--law=emergence` on each run's final checkpoint):

| recall (16-token answers) | 10% at C | 90% at C | span | largest one-step share |
|---|---|---|---|---|
| answer NLL | 1.2e10 | 9.8e11 | 1.90 decades | 0.28 |
| per-token accuracy | 1.9e10 | 8.1e11 | 1.64 decades | 0.31 |
| exact match | 4.9e10 | 1.3e12 | 1.42 decades | 0.47 |

Sharpness ratio span(NLL) / span(exact match) = 1.34: exact match rises over fewer decades,
and later, on the same checkpoints (0.00 -> 0.06 -> 0.47 -> 0.78 at C = 2e8, 4e10, 7e11,
2e12 while the answer NLL falls 4.03 -> 3.40 -> 1.02 -> 0.42; Bayes-optimal: NLL 0.353, exact
match 1; context-blind: NLL 4.28, exact match 1/64). Exact match against p^16 from the
per-token accuracy: 0.47 measured against 0.03 predicted at C = 7e11 (accuracy 0.81), 0.78
against 0.77 at 2e12; measured / predicted 1.75 on average, since errors cluster in contexts
a model has not learned. Addition: 1-digit exact match reaches 0.14 (span 2.24 decades
against 3.02 for its NLL, ratio 1.35); 2- to 5-digit exact match stays at 0-2% (no rise
beyond 2 standard errors: no span), while their per-token accuracy climbs to 0.25-0.41.
`--law=two_stage --task=recall --bootstrap=200` (Chinchilla stage 1 on the 10 fitted runs,
sigmoid on their 39 checkpoints) predicts the held-out d6 run (C = 6.6e12) at task loss 0.526
(observed 0.388) and exact match 0.58, 95% interval [0.11, 0.77], observed 0.70 (error
-0.12, inside; from its observed loss stage 2 alone gives 0.63); the spread of the last 4
checkpoints' exact match is 0.098 (those checkpoints are 25% apart in training, so this
includes progress). Stage 1 is poorly determined here (E -> 0, alpha 7.5: the recall loss
falls sigmoidally over these sizes, not as a power law); `--x=flops` gives 0.55 [0.09, 0.75].

`get_config("smoke")` is the CI size (tests/evals/test_emergence.py): three rungs (depths 1-3 at
6 tokens per parameter) on a language with 8 contexts and 8-token bodies, 1- and 2-digit
addition, trained and scored in about 35 CPU-seconds.
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
    run.data.synthetic.update(vocab_size=32, num_contexts=8, body_length=8, addition_digits=2,
                              train_tokens=262_144, validation_tokens=16_384)
    ladder.rules.update(min_steps=5, evals=2, checkpoints=2, log_points=2)
    ladder.eval.update(examples=64)
    ladder.sweeps = ml_collections.ConfigDict(dict(grid=grid_sweep((1, 2, 3), (6,))))
  elif arg:
    raise ScalingError(f"configs/ladders/cpu_emergence.py:{arg}: unknown preset; use no "
                       "argument or 'smoke'")
  return ml_collections.ConfigDict(dict(run=run, ladder=ladder))
