"""The jitted programs of the runs one long-lived process trains, shared by runs of one shape.

A ladder's worker process (`scaling ladder worker DIR --serve`, or `ladder run` in process)
trains run after run, and the rungs of one depth differ only in their schedule and length: they
have the same parameter and optimizer initialisers, the same train step (it takes its learning
rate as an input: `scaling.train.step.make_steps`) and the same eval step. JAX's persistent
compilation cache already spares their compilation, but a run that jits them afresh still traces
and lowers every one of them to find its cache entry: the 28 runs of `cpu_branches` train in
123 s that way and in 79 s sharing their programs (`experiments/bench_program_reuse.py`, 2
cores). `Programs` keeps the jitted functions, keyed by everything they are traced from, so a
later run of the same shape calls programs JAX has already traced and compiled: the same
executables, so the same numbers.

The key is the run's model, mesh and train configs, less the train fields that no program reads
(`RUN_ONLY`: the schedule's, which the step takes as an input, and the loop's cadences), plus
the mesh, the auxiliary-loss hook and the kernel backend. `tests/train/test_loop.py` changes
every `RUN_ONLY` field at once and checks that neither step's lowered text changes.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
  import jax
  import ml_collections

# Train fields that only the learning-rate schedule (an input of the compiled step) and the
# loop read. `lr` is among them except for Adafactor, whose decay rate is scaled by the peak
# rate inside the optimizer (`scaling.train.optimizer.make_optimizer`).
RUN_ONLY = frozenset({
    "steps", "lr", "min_lr_ratio", "warmup_steps", "schedule", "decay_fraction", "decay_shape",
    "log_every", "eval_every", "eval_batches", "checkpoint_every", "keep_checkpoints",
    "flops_method", "hparam_rule", "hardware"})


def program_key(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                aux_loss_fn: Callable | None, kernels: Hashable) -> tuple:
  """What a run's programs are traced from: equal keys, equal programs."""
  run_only = RUN_ONLY - ({"lr"} if cfg.train.optimizer == "adafactor" else set())
  train = {k: v for k, v in cfg.train.to_dict().items() if k not in run_only}
  text = json.dumps({"model": cfg.model.to_dict(), "mesh": cfg.mesh.to_dict(), "train": train},
                    sort_keys=True, default=repr)
  return text, mesh, aux_loss_fn, kernels


class Programs:
  """Built programs by key, the `size` most recently used kept (a ladder has a few shapes)."""

  def __init__(self, size: int = 8):
    self.size = size
    self.hits = self.misses = 0
    self._built: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()

  def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
    """The value kept for `key`, else `build()`, kept."""
    if key in self._built:
      self.hits += 1
      self._built.move_to_end(key)
      return self._built[key]
    self.misses += 1
    value = self._built[key] = build()
    while len(self._built) > self.size:
      self._built.popitem(last=False)
    return value
