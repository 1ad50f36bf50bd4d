"""Scoring a run's checkpoints: `evaluate(RUN_DIR)`, what `scaling eval` and ladders call.

For each chosen checkpoint (`last`: the newest; `all`: every one the run kept) the train state
is restored read-only (`Checkpointer(read_only=True)`: the run's checkpoints are never touched)
into the run's own mesh and model, and every (task, metric) not yet in `evals.jsonl` is
computed and appended (`scaling.evals.records`), one checkpoint at a time, so an interrupted
evaluation keeps what it finished and a rerun adds nothing.

* `validation`: the held-out batches the training loop evaluates (`train.eval_batches` batches
  of the validation split, seed `loop.EVAL_SEED`) through the loop's own eval step, so at the
  final checkpoint `validation/nll` is the run's `final_eval_loss`. Synthetic data adds
  `excess` = nll - entropy floor; text data adds `bpb` (`scaling.evals.bpb`: the exact UTF-8
  bytes of those batches' scored targets).
* synthetic tasks: `examples` problems each (`SyntheticLanguage.task_examples`, the same for
  every run of the language), scored by one jitted forward pass per chunk of `CHUNK` problems.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from scaling import storage, xla_options
from scaling.config import validate
from scaling.errors import ScalingError
from scaling.evals import bpb, records, tasks
from scaling.kernels.backend import KernelBackend

log = logging.getLogger(__name__)
CHUNK = 256  # problems per forward pass (rounded up to the data-parallel width)
CHECKPOINTS = ("last", "all")


@dataclasses.dataclass
class Outcome:
  """What one `evaluate` call did: checkpoint steps scored, lines added, keys already there."""

  steps: list[int]
  added: list[dict]
  skipped: int


def run_config(workdir) -> ml_collections.ConfigDict:
  """The resolved config a run trained with (`config.json`), validated."""
  cfg = storage.read_json(storage.Path(workdir) / "config.json")
  if not isinstance(cfg, dict):
    raise ScalingError(f"{os.fspath(workdir)} has no config.json: not a `scaling train` "
                       "workdir (pass a run folder, e.g. LADDER/runs/<run_id>)")
  cfg = ml_collections.ConfigDict(cfg)
  validate(cfg)
  return cfg


def chosen_steps(workdir, checkpoints: str) -> list[int]:
  """The checkpoint steps `last` or `all` names; ScalingError when the run has none."""
  from scaling.train.checkpoint import saved_steps

  if checkpoints not in CHECKPOINTS:
    raise ScalingError(f"--checkpoints={checkpoints!r}; choose 'last' or 'all'")
  steps = saved_steps(workdir)
  if not steps:
    raise ScalingError(f"{os.fspath(workdir)} has no finished checkpoint to evaluate; train it "
                       "first (`scaling train` or `scaling ladder run`)")
  return steps if checkpoints == "all" else steps[-1:]


def plan(cfg: ml_collections.ConfigDict, requested: str | None):
  """(data info, the language or None, [(task, metrics)]) of a run's `--tasks`."""
  from scaling.data import SyntheticLanguage, SyntheticSpec, data_info

  info = data_info(cfg.data)
  lang = (SyntheticLanguage(SyntheticSpec(**cfg.data.synthetic.to_dict()))
          if info.name == "synthetic" else None)
  names = tasks.resolve(requested, lang)
  return info, lang, [(n, tasks.validation_metrics(lang is not None) if n == tasks.VALIDATION
                       else tasks.ANSWER_METRICS) for n in names]


def pending(workdir, cfg: ml_collections.ConfigDict, requested: str | None,
            checkpoints: str) -> bool:
  """Whether some (step, task, metric) of this request is not in evals.jsonl yet (cheap: reads
  files and the language's knobs, compiles nothing)."""
  _, _, todo = plan(cfg, requested)
  have = records.done(workdir)
  return any((s, t, m) not in have for s in chosen_steps(workdir, checkpoints)
             for t, ms in todo for m in ms)


def evaluate(workdir, *, checkpoints: str = "last", tasks_arg: str | None = None,
             examples: int = 256, devices=None, kernels: KernelBackend | None = None,
             write: bool | None = None) -> Outcome:
  """Scores the chosen checkpoints of the run in `workdir` on `tasks_arg` (module doc).

  Args:
    checkpoints: `last` or `all`.
    tasks_arg: `--tasks` (`scaling.evals.tasks.resolve`); None is `default`.
    examples: problems per synthetic task.
    devices: the mesh's devices (default: all); kernels: as in `loop.build_trainer`.
    write: append to evals.jsonl (default: on process 0 only).
  """
  from scaling.train.checkpoint import Checkpointer

  workdir = storage.Path(workdir)
  if examples < 1:
    raise ScalingError(f"--examples={examples} must be a positive number of problems")
  cfg = run_config(workdir)
  steps = chosen_steps(workdir, checkpoints)
  info, lang, todo = plan(cfg, tasks_arg)
  have = records.done(workdir)
  wanted = {s: [(t, [m for m in ms if (s, t, m) not in have]) for t, ms in todo] for s in steps}
  wanted = {s: [(t, ms) for t, ms in w if ms] for s, w in wanted.items()}
  skipped = sum(len(ms) for t, ms in todo) * len(steps) - sum(
      len(ms) for w in wanted.values() for _, ms in w)
  steps = [s for s in steps if wanted[s]]
  write = jax.process_index() == 0 if write is None else write
  if not steps:
    return Outcome([], [], skipped)
  scorer = Scorer(cfg, info, lang, devices=devices, kernels=kernels)
  ckpt = Checkpointer(workdir, every=1, keep=1, read_only=True)
  added = []
  try:
    for step in steps:
      state = ckpt.restore_step(step, scorer.trainer.state, why="`scaling eval` scores it")
      lines = scorer.lines(state["params"], step, wanted[step], examples)
      added += records.append(workdir, lines) if write else lines
      log.info("%s: step %d scored (%d lines)", os.fspath(workdir), step, len(lines))
  finally:
    ckpt.close()
  return Outcome(steps, added, skipped)


class Scorer:
  """A run's model on its mesh, with the jitted steps that score a checkpoint's parameters."""

  def __init__(self, cfg: ml_collections.ConfigDict, info, lang, *, devices=None,
               kernels: KernelBackend | None = None):
    from scaling.models.dense import abstract_model
    from scaling.parallel import sharding
    from scaling.parallel.mesh import make_mesh
    from scaling.train.loop import build_trainer

    self.cfg, self.info, self.lang = cfg, info, lang
    kernels = kernels or KernelBackend.resolve()
    self.mesh = make_mesh(cfg.mesh, devices)
    self.trainer = build_trainer(cfg, self.mesh, kernels=kernels)
    dp = sharding.data_parallel_width(cfg.mesh.rules, dict(self.mesh.shape))
    self.rows = -(-CHUNK // dp) * dp
    graphdef, _ = nnx.split(abstract_model(cfg, kernels))
    self._answer = jax.jit(_answer_step(graphdef, self.mesh),
                           out_shardings=self.trainer.replicated,
                           compiler_options=xla_options.for_platform(xla_options.STEPS,
                                                                     self.mesh))
    self._tokens = None  # the tokenizer's ByteTable, for bpb (text data only)

  def lines(self, params, step: int, wanted: list[tuple[str, list[str]]],
            examples: int) -> list[dict]:
    """The evals.jsonl lines of `wanted` [(task, metrics)] at checkpoint `step`."""
    t = self.cfg.train
    base = {"step": int(step), "tokens": int(step) * t.global_batch * t.seq_len}
    out = []
    for task, metrics in wanted:
      if task == tasks.VALIDATION:
        values = self.validation(params)
      else:
        values = self.task(params, task, examples)
      out += [dict(base, task=task, metric=m, value=values[m][0], n=values[m][1])
              for m in metrics]
    return out

  def validation(self, params) -> dict[str, tuple[float, int]]:
    """{metric: (value, n)} on the loop's held-out batches (module doc)."""
    from scaling.data import make_batches
    from scaling.train.loop import EVAL_SEED

    t = self.cfg.train
    kw = dict(split="validation", seq_len=t.seq_len, global_batch=t.global_batch,
              seed=EVAL_SEED)
    local = make_batches(self.cfg.data, **kw, process_index=jax.process_index(),
                         process_count=jax.process_count())
    # Bytes are counted on the global batch, which each process can read whole.
    whole = local if jax.process_count() == 1 else make_batches(self.cfg.data, **kw)
    table = None if self.lang is not None else self._byte_table()
    sums, nbytes = [], 0
    with jax.set_mesh(self.mesh):
      for i in range(t.eval_batches):
        batch = {k: jax.make_array_from_process_local_data(
            self.trainer.batch_sharding, np.asarray(v), (t.global_batch, t.seq_len))
            for k, v in local[i].items()}
        sums.append(self.trainer.eval_step(params, batch))  # dispatched; read once below
        if table is not None:
          b = whole[i]
          nbytes += table.count(b["inputs"], b["targets"], b["mask"])
    # Summed in batch order as `train.loop.Inputs.evaluate` does, so the final checkpoint's
    # value equals the run's final_eval_loss bit for bit.
    sums = jax.device_get(sums)
    nats = sum(float(s["nll_sum"]) for s in sums)
    count = sum(float(s["count"]) for s in sums)
    nll = nats / max(count, 1.0)
    if self.lang is not None:
      return {"nll": (nll, int(count)), "excess": (nll - self.info.entropy_floor, int(count))}
    return {"nll": (nll, int(count)), "bpb": (bpb.bits_per_byte(nats, nbytes), nbytes)}

  def _byte_table(self) -> bpb.ByteTable:
    if self._tokens is None:
      self._tokens = bpb.byte_table(bpb.run_tokenizer(self.info), self.cfg.model.vocab_size)
    return self._tokens

  def task(self, params, name: str, examples: int) -> dict[str, tuple[float, int]]:
    """{metric: (value, problems)} of one synthetic task."""
    ex = self.lang.task_examples(name, examples)
    n = ex.tokens.shape[0]
    logp, correct = [], []
    with jax.set_mesh(self.mesh):
      for start in range(0, n, self.rows):
        chunk = ex.tokens[start:start + self.rows]
        pad = np.zeros((self.rows, chunk.shape[1]), np.int32)
        pad[:len(chunk)] = chunk
        arr = jax.make_array_from_callback(pad.shape, self.trainer.batch_sharding,
                                           lambda idx, x=pad: x[idx])
        lp, ok = jax.device_get(self._answer(params, arr))
        logp.append(lp[:len(chunk)])
        correct.append(ok[:len(chunk)])
    scores = tasks.score(np.concatenate(logp), np.concatenate(correct), ex.answer)
    return {m: (v, n) for m, v in scores.items()}


def _answer_step(graphdef, mesh):
  """(params, tokens [B, T]) -> (log p of each next token [B, T-1], whether it is the argmax)."""

  def step(params, tokens_BxT):
    # Layers that shard by hand (MoE) read the mesh at trace time, as in the train step.
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      logits = nnx.merge(graphdef, params)(tokens_BxT[:, :-1]).astype(jnp.float32)
    targets = tokens_BxT[:, 1:]
    logp = jax.nn.log_softmax(logits, axis=-1)
    lp = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return lp, jnp.argmax(logits, axis=-1) == targets

  return step
