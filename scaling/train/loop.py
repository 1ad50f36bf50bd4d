"""The training loop: one function, `train(cfg, workdir)`, that a CLI, a ladder or a notebook calls.

Writes into `workdir`: `config.json` (resolved), `metrics.jsonl` (one line per logged step),
TensorBoard events under `tb/`, orbax checkpoints under `checkpoints/`, and `result.json` (the
run record). Running it again on the same workdir resumes from the newest good checkpoint and
finishes with the same numbers as an uninterrupted run; on a complete run it returns at once.

`train` runs, in order: `resolve_config` (our copy, validated, size rules applied), the
identity check, `build_trainer` (sharded state and jitted steps), `restore` (the newest good
checkpoint, or step 0), `Inputs` (the batches), `run_steps` (the step loop: log, evaluate,
checkpoint, stop on a signal or a non-finite loss) and `run_record` (the `RunRecord` written
as result.json). Lines go to `scaling.train.events.MetricSinks`; signals are
`scaling.train.stop.StopFlag`; counts come from `scaling.accounting.run_counts`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from scaling import accounting, hparam_rules, storage, xla_options
from scaling.config import validate
from scaling.errors import ScalingError, require
from scaling.kernels.backend import KernelBackend
from scaling.models import parametrization as mup
from scaling.models.dense import initializer
from scaling.parallel import sharding
from scaling.parallel.mesh import make_mesh
from scaling.train import identity, record
from scaling.train.checkpoint import Checkpointer, branch_steps, restore_branch
from scaling.train.events import MetricSinks
from scaling.train.optimizer import make_optimizer, schedule
from scaling.train.programs import Programs, program_key
from scaling.train.step import AuxLossFn, NoiseScale, make_steps
from scaling.train.stop import StopFlag

log = logging.getLogger(__name__)
EVAL_SEED = 0  # every run of a ladder is evaluated on the same held-out batches
# Held-out batches up to this size stay on the device between a run's evaluations (a CPU rung's
# 64 batches of 8 x 64 tokens are 393 KB); larger sets are placed batch by batch each time.
EVAL_KEEP_BYTES = 64 << 20


def check_run_config(cfg: ml_collections.ConfigDict, mesh_shape: dict[str, int],
                     vocab_size: int) -> None:
  """Checks that need the mesh and the data, before anything compiles."""
  t, m = cfg.train, cfg.model
  dp = sharding.data_parallel_width(cfg.mesh.rules, mesh_shape)
  require(t.global_batch % (dp * t.microbatches) == 0,
          f"train.global_batch={t.global_batch} does not split over {dp} data-parallel devices "
          f"x train.microbatches={t.microbatches}; use a multiple of {dp * t.microbatches}")
  require(t.global_batch % jax.process_count() == 0,
          f"train.global_batch={t.global_batch} does not split over {jax.process_count()} hosts")
  require(vocab_size <= m.vocab_size,
          f"the dataset has {vocab_size} tokens but model.vocab_size={m.vocab_size}; set "
          f"--config.model.vocab_size={vocab_size} or larger")


def resolve_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Our copy of `cfg` (the caller's is never changed), validated, with the size rules of
  `train.hparam_rule` applied (they may fill fields)."""
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  validate(cfg)
  if cfg.train.hparam_rule not in ("", "none"):
    hparam_rules.apply_to_train(cfg, accounting.run_counts(cfg))
    validate(cfg)
  return cfg


@dataclasses.dataclass
class Trainer:
  """A run's initial state and its compiled-on-first-call steps, shardings spelled out."""

  state: dict
  train_step: Callable  # (state, batch) -> (state, metrics); donates state
  eval_step: Callable  # (params, batch) -> {"nll_sum", "count"}
  batch_sharding: NamedSharding
  replicated: NamedSharding
  # (state, batch, lr) -> (state, metrics): the jitted step `train_step` calls with the rate of
  # `state["step"]`; the same program for every run of one shape, whatever its schedule.
  step_program: Callable | None = None


def build_trainer(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                  aux_loss_fn: AuxLossFn | None = None, *,
                  kernels: KernelBackend | None = None,
                  programs: Programs | None = None) -> Trainer:
  """Builds the sharded state and the jitted steps (explicit in/out shardings, donated state).

  kernels: where the MoE layers' kernels run (default `KernelBackend.resolve()`: the compiled
  kernels on GPU, the references on CPU), fixed now as a static field of the layers.
  programs: jitted programs kept from earlier runs of this process (`scaling.train.programs`);
  a run of the same shape reuses them instead of tracing its own.
  """
  kernels = kernels or KernelBackend.resolve()
  programs = programs if programs is not None else Programs(size=1)
  key = program_key(cfg, mesh, aux_loss_fn, kernels)
  init = programs.get(("init", key), lambda: _Initializers.build(cfg, mesh, kernels))
  state = init.state()
  steps = programs.get(("steps", key), lambda: _Steps.build(cfg, init, state, aux_loss_fn))
  # The rate is computed on the device by its own small program and passed in, so the step
  # itself holds no schedule constant (make_steps): rungs of one shape share its compilation.
  lr_of = jax.jit(schedule(cfg.train), out_shardings=steps.replicated)

  def train_step(state, batch):
    step = steps.nested if isinstance(state["step"], jax.core.Tracer) else steps.with_lr
    return step(state, batch, lr_of(state["step"]))

  return Trainer(state, train_step, steps.eval_step, steps.batch_sharding, steps.replicated,
                 steps.with_lr)


@dataclasses.dataclass(frozen=True)
class _Initializers:
  """A shape's jitted parameter and optimizer-state initialisers."""

  graphdef: nnx.GraphDef
  params: Callable  # () -> params (NNX State), sharded by the rules
  # The schedule is no part of the optimizer's state, and the steps are given their rate: any
  # run of the shape may build it. With the model's per-group LR multipliers (μP).
  optimizer: optax.GradientTransformation
  opt_init: Callable  # params -> optimizer state, where its parameters live
  replicated: NamedSharding

  @classmethod
  def build(cls, cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
            kernels: KernelBackend) -> _Initializers:
    graphdef, params = initializer(cfg, mesh, cfg.train.seed, kernels)
    optimizer = make_optimizer(cfg.train, cfg.model)
    return cls(graphdef, params, optimizer, jax.jit(optimizer.init),
               NamedSharding(mesh, PartitionSpec()))

  def state(self) -> dict:
    """A fresh train state {"step", "params", "opt_state"}."""
    params = self.params()
    with jax.set_mesh(self.replicated.mesh):
      # Optimizer state is initialised where its parameters live (sharding propagates).
      opt_state = self.opt_init(params)
    return {"step": jax.device_put(jnp.zeros((), jnp.int32), self.replicated), "params": params,
            "opt_state": opt_state}


@dataclasses.dataclass(frozen=True)
class _Steps:
  """A shape's jitted train and eval steps."""

  with_lr: Callable  # (state, batch, lr) -> (state, metrics), donating state
  nested: Callable  # the same, for tracing inside another program
  eval_step: Callable  # (params, batch) -> {"nll_sum", "count"}
  batch_sharding: NamedSharding
  replicated: NamedSharding

  @classmethod
  def build(cls, cfg: ml_collections.ConfigDict, init: _Initializers, state: dict,
            aux_loss_fn: AuxLossFn | None) -> _Steps:
    """The steps for `init`'s shape, placed like `state` (a fresh state of it)."""
    replicated = init.replicated
    mesh = replicated.mesh
    state_shardings = jax.tree.map(lambda x: x.sharding, state)
    batch_axes = sharding.mesh_axes("batch", cfg.mesh.rules)
    batch_sharding = NamedSharding(mesh, PartitionSpec(batch_axes or None, None))
    train_step, eval_step = make_steps(init.graphdef, cfg, init.optimizer, aux_loss_fn)
    # Layers that shard by hand (MoE expert parallelism, Pallas kernels per batch shard) read
    # the mesh at trace time: bind it here, so the steps are right even outside `jax.set_mesh`.
    train_step, eval_step = (_under_mesh(f, mesh) for f in (train_step, eval_step))
    options = xla_options.for_platform(xla_options.STEPS, mesh)
    placed = dict(in_shardings=(state_shardings, batch_sharding, replicated),
                  out_shardings=(state_shardings, replicated), donate_argnums=0)
    with_lr = jax.jit(train_step, **placed, compiler_options=options)
    # JAX takes compile options on a top-level jit only: traced inside another program (a
    # user's jit, `jax.export` for CUDA) the step is the same jit without them.
    nested = jax.jit(train_step, **placed) if options else with_lr
    eval_step = jax.jit(eval_step, in_shardings=(state_shardings["params"], batch_sharding),
                        out_shardings=replicated, compiler_options=options)
    return cls(with_lr, nested, eval_step, batch_sharding, replicated)


def _under_mesh(fn: Callable, mesh: jax.sharding.Mesh) -> Callable:
  def traced(*args):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args)

  return traced


def train(cfg: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
          aux_loss_fn: AuxLossFn | None = None, devices=None,
          kernels: KernelBackend | None = None, programs: Programs | None = None) -> dict:
  """Trains `cfg` into `workdir` (resuming if it holds checkpoints); returns the run record
  (`RunRecord.to_json()`, what result.json holds).

  `workdir` is a local path or a `gs://` URL (`scaling.storage`). `devices` (default: all)
  make the mesh; `kernels` and `programs` as in `build_trainer`.
  """
  from scaling.data import data_info

  workdir = storage.Path(workdir)
  storage.check_workdir(workdir)  # a file, an unreachable bucket: one line, before anything
  cfg = resolve_config(cfg)
  # A workdir holds one run: another config is refused before anything in it is opened.
  identity.check(workdir, cfg)
  done = record.read_result(workdir)
  if done is not None and done.status == "complete":
    log.info("%s is complete; nothing to do", workdir)
    return done.to_json()

  info = data_info(cfg.data)
  mesh = make_mesh(cfg.mesh, devices)
  check_run_config(cfg, dict(mesh.shape), info.vocab_size)
  is_chief = jax.process_index() == 0
  workdir.mkdir(parents=True, exist_ok=True)
  trainer = build_trainer(cfg, mesh, aux_loss_fn, kernels=kernels, programs=programs)
  t = cfg.train
  with contextlib.ExitStack() as cleanup:  # orbax's threads, event files, the bar: always
    ckpt = Checkpointer(workdir, every=t.checkpoint_every, keep=t.keep_checkpoints,
                        keep_steps=branch_steps(cfg))
    cleanup.callback(ckpt.close)
    start, state, elapsed_before = restore(cfg, workdir, trainer, ckpt, is_chief=is_chief)
    inputs = Inputs(cfg, trainer)
    sinks = MetricSinks(workdir, total_steps=t.steps, start=start, enabled=is_chief)
    cleanup.callback(sinks.close)
    outcome = run_steps(cfg, mesh, trainer, state, start=start, inputs=inputs, ckpt=ckpt,
                        sinks=sinks, clock=Clock(start, elapsed_before))
  result = run_record(cfg, workdir, info, dict(mesh.shape), outcome)
  if is_chief:
    record.write_result(workdir, result)
  if outcome.status == "failed":
    raise ScalingError(outcome.failure)
  return result.to_json()


def restore(cfg: ml_collections.ConfigDict, workdir, trainer: Trainer, ckpt: Checkpointer, *,
            is_chief: bool) -> tuple[int, dict, float]:
  """(first step, train state, seconds trained before) from the newest good checkpoint, else
  (0, the initial state, 0.0). Records config.json and identity.json, and drops metric lines
  written after the checkpoint (or all of them for a fresh start), on the chief.

  Raises ScalingError (nothing written) when a checkpoint belongs to another run.
  """
  restored = ckpt.restore_latest(trainer.state)  # raises when a checkpoint is another run's
  if restored is None and cfg.get("branch"):
    # A cooldown branch with no checkpoint of its own starts from its trunk's at the fork step.
    restored = restore_branch(cfg, workdir, trainer.state)
  if restored is None and cfg.model.get("init_from"):
    # `scaling import`: a fresh start from a Hugging Face checkpoint's weights (scaling.hf).
    from scaling.hf.weights import initial_state

    restored = 0, initial_state(cfg, trainer.state)
  if is_chief:  # only now that the workdir is known to be this run's
    storage.write_json(workdir / "config.json", cfg.to_dict())
    identity.write(workdir, cfg)
  metrics_path = workdir / record.METRICS
  if restored is None:
    if is_chief:
      metrics_path.unlink(missing_ok=True)
    return 0, trainer.state, 0.0
  start, state = restored
  log.info("resuming %s from step %d", workdir, start)
  elapsed_before = 0.0
  if is_chief:
    record.truncate_metrics(metrics_path, start)
    elapsed_before = _last_elapsed(metrics_path)
  return start, state, elapsed_before


class Inputs:
  """The run's train and held-out batches, placed on the mesh as global [batch, seq] arrays.

  Each process reads its share of every global batch; the batch of a step is a pure function of
  (train.seed, step), so a resumed run sees the same batches.
  """

  def __init__(self, cfg: ml_collections.ConfigDict, trainer: Trainer):
    from scaling.data import make_batches

    t = self.t = cfg.train
    self.trainer = trainer
    shard = dict(process_index=jax.process_index(), process_count=jax.process_count())
    self.train = make_batches(cfg.data, split="train", seq_len=t.seq_len,
                              global_batch=t.global_batch, seed=t.seed, **shard)
    self.eval = make_batches(cfg.data, split="validation", seq_len=t.seq_len,
                             global_batch=t.global_batch, seed=EVAL_SEED, **shard)
    self._eval_on_device: list[dict] | None = None

  def to_device(self, batch: dict) -> dict:
    """This process's rows of a global batch as global [batch, seq] arrays."""
    if jax.process_count() == 1:
      # The whole batch is local: one transfer of the dict, without the per-array bookkeeping
      # of assembling a global array from process shards (~1 ms a step for a CPU rung).
      return jax.device_put({k: np.asarray(v) for k, v in batch.items()},
                            self.trainer.batch_sharding)
    shape = (self.t.global_batch, self.t.seq_len)
    return {k: jax.make_array_from_process_local_data(self.trainer.batch_sharding,
                                                      np.asarray(v), shape)
            for k, v in batch.items()}

  def evaluate(self, params) -> float:
    """Mean held-out NLL (nats per token) over `train.eval_batches` batches."""
    batches = self._eval_on_device
    if batches is None:
      first = self.eval[0]
      host = itertools.chain([first], (self.eval[i] for i in range(1, self.t.eval_batches)))
      batches = (self.to_device(b) for b in host)
      # The same batches at every evaluation of the run (a trunk evaluates at each fork): kept
      # on the device when they are small (sized from the host batch before any is placed);
      # a larger set is streamed, each batch placed as its evaluation is dispatched.
      size = sum(np.asarray(v).nbytes for v in first.values()) * self.t.eval_batches
      if size <= EVAL_KEEP_BYTES:
        batches = self._eval_on_device = list(batches)
    sums = jax.device_get([self.trainer.eval_step(params, b) for b in batches])
    nll = sum(float(s["nll_sum"]) for s in sums)
    return nll / max(1.0, sum(float(s["count"]) for s in sums))


@dataclasses.dataclass
class Clock:
  """Throughput since the last logged step, and training time across resumes (seconds)."""

  mark_step: int  # the last logged step (or the first step of this process)
  elapsed_before: float  # trained before this process started (from metrics.jsonl)
  began: float = dataclasses.field(default_factory=time.time)
  mark_time: float = dataclasses.field(default_factory=time.time)

  def mark(self, step: int) -> None:
    self.mark_time, self.mark_step = time.time(), step


@dataclasses.dataclass
class Outcome:
  """Where `run_steps` stopped, and the held-out losses it saw (nats per token)."""

  step: int  # steps done
  last_good: int  # the newest checkpointed step
  status: str = "complete"  # complete | failed | interrupted
  failure: str | None = None  # why a failed run failed (the ScalingError message)
  last_eval: float | None = None
  best_eval: float = math.inf
  noise: dict = dataclasses.field(default_factory=dict)  # the last eval's NoiseScale summary


def run_steps(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, trainer: Trainer,
              state: dict, *, start: int, inputs: Inputs, ckpt: Checkpointer,
              sinks: MetricSinks, clock: Clock) -> Outcome:
  """Steps `start` .. train.steps: logs, evaluates and checkpoints on their cadences, stops
  (checkpointed) on SIGTERM/SIGINT or at the first non-finite metric."""
  t = cfg.train
  lr_at = schedule(t)
  forks = branch_steps(cfg)  # a wsd trunk's branch points: evaluated and checkpointed
  flops_per_token = accounting.run_counts(cfg)["flops_per_token"]
  out = Outcome(step=start, last_good=start)
  pending: list[dict] = []
  noise = NoiseScale()  # steps since the last eval (a resume starts a new window)
  stop = StopFlag()
  with stop.installed(), jax.set_mesh(mesh):
    # Host batches are assembled in a background thread a few steps ahead, so input work
    # overlaps the device step; the batch of each step is still a pure function of the step.
    # (Placing them on the devices in that thread too was measured slower: cpu_branches in one
    # process 127-133 s against 115-117 s, the transfer contending with the step.)
    batches = inputs.train.iterate(start, t.steps - start)
    while out.step < t.steps:
      state, metrics = trainer.train_step(state, inputs.to_device(next(batches)))
      pending.append(metrics)
      out.step += 1
      step, is_last = out.step, out.step == t.steps
      want_log = step % t.log_every == 0 or is_last
      want_eval = step % t.eval_every == 0 or is_last or step in forks
      want_ckpt = (step % t.checkpoint_every == 0 or is_last or stop.signal is not None
                   or step in forks)
      if not (want_log or want_eval or want_ckpt):
        continue
      # One host sync per log/eval/checkpoint step, never per step.
      host, pending = jax.device_get(pending), []
      noise.add(host)
      out.failure = _non_finite(host, step, out.last_good, ckpt.directory, t.lr)
      if out.failure is not None:
        out.status = "failed"
        break
      line = _metrics_line(t, step, host, lr_at(step - 1), flops_per_token, clock)
      if want_eval:
        out.last_eval = inputs.evaluate(state["params"])
        out.best_eval = min(out.best_eval, out.last_eval)
        line["eval_loss"] = out.last_eval
        out.noise = noise.summary()  # gradient noise scale since the last eval (step.py)
        line.update(out.noise)
        noise.reset()
      if want_ckpt:
        ckpt.save(step, state, force=is_last or stop.signal is not None)
        out.last_good = step
      sinks.write(line)
      clock.mark(step)
      if stop.signal is not None and not is_last:
        out.status = "interrupted"
        break
    batches.close()
  if out.status == "complete" and out.last_eval is None:
    # Restored at the final step (killed after the last checkpoint, before result.json): the
    # loop had nothing to do, so evaluate the restored parameters for the record.
    with jax.set_mesh(mesh):
      out.last_eval = inputs.evaluate(state["params"])
    out.best_eval = min(out.best_eval, out.last_eval)
  return out


def _metrics_line(t: ml_collections.ConfigDict, step: int, host: list[dict], lr,
                  flops_per_token: float, clock: Clock) -> dict:
  """The metrics.jsonl line of a logged step: the mean loss of the steps since the last line,
  the step's other metrics, tokens and FLOPs so far, throughput, seconds trained."""
  now = time.time()
  tokens = step * t.global_batch * t.seq_len
  line = {"step": step, "loss": float(np.mean([float(m["loss"]) for m in host])),
          "lr": float(lr), "grad_norm": float(host[-1]["grad_norm"]),
          "tokens": tokens, "flops": tokens * flops_per_token,
          "tokens_per_s": (step - clock.mark_step) * t.global_batch * t.seq_len
                          / max(now - clock.mark_time, 1e-9),
          "step_time_s": (now - clock.mark_time) / max(step - clock.mark_step, 1),
          "elapsed_s": clock.elapsed_before + now - clock.began}
  line.update({k: np.asarray(v).tolist() for k, v in host[-1].items()
               if k not in ("loss", "grad_norm", "tokens")})
  return line


def _non_finite(host: list[dict], step: int, last_good: int, ckpt_dir, lr: float) -> str | None:
  """The failure message when any metric since the last sync is NaN or infinite, else None."""
  bad = [k for m in host for k, v in m.items() if not np.all(np.isfinite(v))]
  if not bad:
    return None
  return (f"loss became {_first_bad(host)} by step {step} (non-finite: "
          f"{', '.join(sorted(set(bad)))}); the last good checkpoint is step {last_good} in "
          f"{ckpt_dir}. Lower train.lr (now {lr}), raise train.warmup_steps, or set "
          "train.z_loss")


def run_record(cfg: ml_collections.ConfigDict, workdir, info, mesh_shape: dict[str, int],
               out: Outcome) -> record.RunRecord:
  """The run record of a finished, failed or interrupted run (`info`: the data's DataInfo)."""
  counts = accounting.run_counts(cfg)
  return record.RunRecord(
      run_id=cfg.get("run_id", "") or workdir.name, status=out.status, config=cfg.to_dict(),
      params_non_embedding=counts["params_non_embedding"], params_total=counts["params_total"],
      params_active=counts["params_active"], params_embedding=counts["params_embedding"],
      params_active_non_embedding=counts["params_active_non_embedding"],
      experts=cfg.model.moe.num_experts or 1,
      tokens=counts["tokens"], flops=counts["flops"], flops_method=counts["flops_method"],
      flops_by_method=counts["flops_by_method"], steps=cfg.train.steps, steps_done=out.step,
      final_eval_loss=out.last_eval if out.status == "complete" else None,
      best_eval_loss=out.best_eval if math.isfinite(out.best_eval) else None,
      entropy_floor=info.entropy_floor,
      # The data's own metadata may carry `name` or `vocab_size` too; DataInfo's values win.
      data={**info.metadata, "name": info.name, "vocab_size": info.vocab_size},
      config_identity=identity.identity_hash(cfg), metrics_path=record.METRICS,
      wall_time_s=_last_elapsed(workdir / record.METRICS), hardware=record.hardware(),
      mesh=mesh_shape, versions=record.versions(), error=out.failure,
      parent_run_id=(cfg.get("branch") or {}).get("parent"),
      branch_step=(cfg.get("branch") or {}).get("step"),
      init_from=cfg.model.get("init_from") or None,
      grad_noise_scale=out.noise.get("grad_noise_scale"),
      grad_noise_scale_stderr=out.noise.get("grad_noise_scale_stderr"),
      parametrization=mup.describe(cfg.model))


def _first_bad(host: list[dict]) -> float:
  for m in host:
    for v in m.values():
      bad = np.asarray(v)[~np.isfinite(np.asarray(v))]
      if bad.size:
        return float(bad.flat[0])
  return float("nan")


def _last_elapsed(path) -> float:
  lines = storage.read_jsonl(path)
  return float(lines[-1].get("elapsed_s", 0.0)) if lines else 0.0
