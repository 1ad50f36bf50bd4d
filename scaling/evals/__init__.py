"""Evaluations of a run's checkpoints: `scaling eval RUN_DIR` -> `RUN_DIR/evals.jsonl`.

* `records`: the file, one JSON line per `{step, tokens, task, metric, value, n}`, written
  atomically and idempotently (a line's key is (step, task, metric)); read without JAX.
* `tasks`: which tasks a run can be scored on, and scoring an answer three ways (per-token NLL,
  per-token accuracy, whole-answer exact match).
* `bpb`: bits per byte, from the exact UTF-8 byte count of the evaluated tokens.
* `run`: restoring each checkpoint and scoring it (JAX).

Tasks and metrics (task `validation` is the run's own held-out loss, on the batches its
training loop evaluated):

* `validation` (synthetic): `nll` (nats per scored token), `excess` (over the exact floor);
* `validation` (text folders, TFDS text): `nll`, `bpb` (bits per UTF-8 byte);
* `recall`, `addition1` .. `addition5` (synthetic, `data.synthetic.tasks`): `nll` (nats per
  answer token), `token_accuracy`, `exact_match`.
"""
