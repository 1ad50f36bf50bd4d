"""The training loop: one function, `train(cfg, workdir)`, that a CLI, a ladder or a notebook calls.

Writes into `workdir`: `config.json` (resolved), `metrics.jsonl` (one line per logged step),
TensorBoard events under `tb/`, orbax checkpoints under `checkpoints/`, and `result.json` (the
run record). Running it again on the same workdir resumes from the newest good checkpoint and
finishes with the same numbers as an uninterrupted run; on a complete run it returns at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from scaling import accounting, storage
from scaling.config import validate
from scaling.errors import ScalingError, require
from scaling.models.dense import build_model
from scaling.parallel import sharding
from scaling.parallel.mesh import make_mesh
from scaling.train import identity, record
from scaling.train.checkpoint import Checkpointer
from scaling.train.optimizer import apply_size_rules, make_optimizer, schedule
from scaling.train.step import AuxLossFn, make_steps

log = logging.getLogger(__name__)
EVAL_SEED = 0  # every run of a ladder is evaluated on the same held-out batches


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


class _StopFlag:
  """Set by SIGTERM/SIGINT (Cloud TPU preemption sends SIGTERM): checkpoint and stop cleanly."""

  def __init__(self):
    self.signal: int | None = None

  @contextlib.contextmanager
  def installed(self):
    if threading.current_thread() is not threading.main_thread():
      yield self
      return
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in previous:
      signal.signal(s, lambda signum, frame: setattr(self, "signal", signum))
    try:
      yield self
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)


def _progress(total: int, initial: int):
  if sys.stderr.isatty():
    try:
      from tqdm import tqdm
      return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
    except ImportError:
      pass
  return None


def run_counts(cfg: ml_collections.ConfigDict) -> dict:
  """N, total/active params, tokens D and FLOPs C (by every method) of the configured run."""
  counts = accounting.param_counts(cfg.model)
  tokens = cfg.train.steps * cfg.train.global_batch * cfg.train.seq_len
  per_token = accounting.flops_per_token(cfg.model, cfg.train.seq_len)
  return dict(**counts, tokens=tokens, flops=per_token[cfg.train.flops_method] * tokens,
              flops_method=cfg.train.flops_method,
              flops_by_method={k: v * tokens for k, v in per_token.items()},
              flops_per_token=per_token[cfg.train.flops_method])


@dataclasses.dataclass
class Trainer:
  """A run's initial state and its compiled-on-first-call steps, shardings spelled out."""

  state: dict
  train_step: Callable  # (state, batch) -> (state, metrics); donates state
  eval_step: Callable  # (params, batch) -> {"nll_sum", "count"}
  batch_sharding: NamedSharding
  replicated: NamedSharding


def build_trainer(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                  aux_loss_fn: AuxLossFn | None = None) -> Trainer:
  """Builds the sharded state and the jitted steps (explicit in/out shardings, donated state)."""
  model = build_model(cfg, mesh)
  graphdef, params = nnx.split(model)
  optimizer = make_optimizer(cfg.train)
  replicated = NamedSharding(mesh, PartitionSpec())
  with jax.set_mesh(mesh):
    # Optimizer state is initialised where its parameters live (sharding propagates).
    opt_state = jax.jit(optimizer.init)(params)
  state = {"step": jax.device_put(jnp.zeros((), jnp.int32), replicated), "params": params,
           "opt_state": opt_state}
  state_shardings = jax.tree.map(lambda x: x.sharding, state)
  batch_axes = sharding.mesh_axes("batch", cfg.mesh.rules)
  batch_sharding = NamedSharding(mesh, PartitionSpec(batch_axes or None, None))
  train_step, eval_step = make_steps(graphdef, cfg, optimizer, aux_loss_fn)
  # Layers that shard by hand (MoE expert parallelism, Pallas kernels per batch shard) read the
  # mesh at trace time: bind it here, so the steps are right even outside `jax.set_mesh`.
  train_step, eval_step = (_under_mesh(f, mesh) for f in (train_step, eval_step))
  train_step = jax.jit(train_step, in_shardings=(state_shardings, batch_sharding),
                       out_shardings=(state_shardings, replicated), donate_argnums=0)
  eval_step = jax.jit(eval_step, in_shardings=(state_shardings["params"], batch_sharding),
                      out_shardings=replicated)
  return Trainer(state, train_step, eval_step, batch_sharding, replicated)


def _under_mesh(fn: Callable, mesh: jax.sharding.Mesh) -> Callable:
  def traced(*args):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args)

  return traced


def train(cfg: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
          aux_loss_fn: AuxLossFn | None = None, devices=None) -> dict:
  """Trains `cfg` into `workdir` (resuming if it holds checkpoints); returns the run record.

  `workdir` is a local path or a `gs://` URL (`scaling.storage`).
  """
  from scaling.data import data_info, make_batches

  workdir = storage.Path(workdir)
  storage.check_workdir(workdir)  # a file, an unreachable bucket: one line, before anything
  cfg = ml_collections.ConfigDict(cfg.to_dict())  # our copy: size rules may fill fields
  validate(cfg)
  if cfg.train.hparam_rule not in ("", "none"):
    apply_size_rules(cfg, run_counts(cfg)["flops"])
  # A workdir holds one run: another config is refused before anything in it is opened.
  identity.check(workdir, cfg)
  done = record.read_result(workdir)
  if done and done.get("status") == "complete":
    log.info("%s is complete; nothing to do", workdir)
    return done

  info = data_info(cfg.data)
  mesh = make_mesh(cfg.mesh, devices)
  mesh_shape = dict(mesh.shape)
  check_run_config(cfg, mesh_shape, info.vocab_size)
  t = cfg.train
  counts = run_counts(cfg)
  is_chief = jax.process_index() == 0
  workdir.mkdir(parents=True, exist_ok=True)

  trainer = build_trainer(cfg, mesh, aux_loss_fn)
  state, train_step, eval_step = trainer.state, trainer.train_step, trainer.eval_step
  batch_sharding = trainer.batch_sharding

  ckpt = Checkpointer(workdir, every=t.checkpoint_every, keep=t.keep_checkpoints)
  events = bar = None
  try:  # orbax's threads and the event writer are released on every way out
    restored = ckpt.restore_latest(state)  # raises when a checkpoint is another run's
    if is_chief:  # only now that the workdir is known to be this run's
      storage.write_json(workdir / "config.json", cfg.to_dict())
      identity.write(workdir, cfg)
    start = 0
    elapsed_before = 0.0
    metrics_path = workdir / record.METRICS
    if restored is not None:
      start, state = restored
      log.info("resuming %s from step %d", workdir, start)
      if is_chief:
        record.truncate_metrics(metrics_path, start)
        elapsed_before = _last_elapsed(metrics_path)
    elif is_chief:
      metrics_path.unlink(missing_ok=True)
    metrics_log = storage.JsonlLog(metrics_path) if is_chief else None

    pidx, pcount = jax.process_index(), jax.process_count()
    train_data = make_batches(cfg.data, split="train", seq_len=t.seq_len,
                              global_batch=t.global_batch, seed=t.seed, process_index=pidx,
                              process_count=pcount)
    eval_data = make_batches(cfg.data, split="validation", seq_len=t.seq_len,
                             global_batch=t.global_batch, seed=EVAL_SEED, process_index=pidx,
                             process_count=pcount)
    global_shape = (t.global_batch, t.seq_len)

    def to_device(batch: dict) -> dict:
      return {k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(v),
                                                        global_shape) for k, v in batch.items()}

    def evaluate(params) -> float:
      sums = [eval_step(params, to_device(eval_data[i])) for i in range(t.eval_batches)]
      nll = sum(float(s["nll_sum"]) for s in sums)
      return nll / max(1.0, sum(float(s["count"]) for s in sums))

    events = _Events(workdir) if is_chief else None
    lr_at = schedule(t)
    bar = _progress(t.steps, start) if is_chief else None
    best_eval, last_eval = math.inf, None
    pending: list[dict] = []
    status, failure = "complete", None
    last_good = start
    began = time.time()
    mark_time, mark_step = time.time(), start
    stop = _StopFlag()
    with stop.installed(), jax.set_mesh(mesh):
      step = start
      # Host batches are assembled in a background thread a few steps ahead, so input work
      # overlaps the device step; the batch of each step is still a pure function of the step.
      batches = train_data.iterate(start, t.steps - start)
      while step < t.steps:
        state, metrics = train_step(state, to_device(next(batches)))
        pending.append(metrics)
        step += 1
        is_last = step == t.steps
        want_log = step % t.log_every == 0 or is_last
        want_eval = step % t.eval_every == 0 or is_last
        want_ckpt = step % t.checkpoint_every == 0 or is_last or stop.signal is not None
        if not (want_log or want_eval or want_ckpt):
          continue
        # One host sync per log/eval/checkpoint step, never per step.
        host = jax.device_get(pending)
        pending = []
        losses = [float(m["loss"]) for m in host]
        bad = [k for m in host for k, v in m.items() if not np.all(np.isfinite(v))]
        if bad:
          status = "failed"
          failure = (f"loss became {_first_bad(host)} by step {step} (non-finite: "
                     f"{', '.join(sorted(set(bad)))}); the last good checkpoint is "
                     f"step {last_good} in {ckpt.directory}. Lower train.lr (now {t.lr}), "
                     "raise train.warmup_steps, or set train.z_loss")
          break
        now = time.time()
        line = {"step": step, "loss": float(np.mean(losses)),
                "lr": float(lr_at(step - 1)), "grad_norm": float(host[-1]["grad_norm"]),
                "tokens": step * t.global_batch * t.seq_len,
                "flops": step * t.global_batch * t.seq_len * counts["flops_per_token"],
                "tokens_per_s": (step - mark_step) * t.global_batch * t.seq_len
                                / max(now - mark_time, 1e-9),
                "step_time_s": (now - mark_time) / max(step - mark_step, 1),
                "elapsed_s": elapsed_before + now - began}
        line.update({k: np.asarray(v).tolist() for k, v in host[-1].items()
                     if k not in ("loss", "grad_norm", "tokens")})
        if want_eval:
          last_eval = evaluate(state["params"])
          best_eval = min(best_eval, last_eval)
          line["eval_loss"] = last_eval
        if want_ckpt:
          ckpt.save(step, state, force=is_last or stop.signal is not None)
          last_good = step
        if is_chief:
          metrics_log.append(line)
          events.write(line)
          _report(bar, line, t.steps)
        mark_time, mark_step = time.time(), step
        if stop.signal is not None and not is_last:
          status = "interrupted"
          break
      batches.close()
    if status == "complete" and last_eval is None:
      # Restored at the final step (killed after the last checkpoint, before result.json): the
      # loop had nothing to do, so evaluate the restored parameters for the record.
      with jax.set_mesh(mesh):
        last_eval = evaluate(state["params"])
      best_eval = min(best_eval, last_eval)
  finally:
    ckpt.close()
    if events is not None:
      events.close()
    if bar is not None:
      bar.close()

  result = dict(
      run_id=cfg.get("run_id", "") or workdir.name, status=status, config=cfg.to_dict(),
      params_non_embedding=counts["params_non_embedding"], params_total=counts["params_total"],
      params_active=counts["params_active"], params_embedding=counts["params_embedding"],
      params_active_non_embedding=counts["params_active_non_embedding"],
      experts=cfg.model.moe.num_experts or 1,
      tokens=counts["tokens"], flops=counts["flops"], flops_method=counts["flops_method"],
      flops_by_method=counts["flops_by_method"], steps=t.steps, steps_done=step,
      final_eval_loss=last_eval if status == "complete" else None,
      best_eval_loss=best_eval if math.isfinite(best_eval) else None,
      entropy_floor=info.entropy_floor,
      # The data's own metadata may carry `name` or `vocab_size` too; DataInfo's values win.
      data={**info.metadata, "name": info.name, "vocab_size": info.vocab_size},
      config_identity=identity.identity_hash(cfg),
      metrics_path=record.METRICS, wall_time_s=_last_elapsed(metrics_path),
      hardware=record.hardware(), mesh=mesh_shape, versions=record.versions(), error=failure)
  if is_chief:
    storage.write_json(workdir / record.RESULT, result)
  if status == "failed":
    raise ScalingError(failure)
  return result


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


class _Events:
  """TensorBoard event files under `workdir/tb` (tensorboardX: no TensorFlow needed).

  For a gs:// workdir the events are written to a local folder and each file is copied up
  after every flush (an atomic object write): tensorboardX's own GCS writer uploads again from
  `__del__` at interpreter exit, which hangs when the bucket is unreachable by then.
  """

  def __init__(self, workdir):
    self.remote = None if storage.is_local(workdir) else workdir / "tb"
    self.local = tempfile.mkdtemp(prefix="scaling-tb-") if self.remote else os.fspath(
        workdir / "tb")
    try:
      from tensorboardX import SummaryWriter
      self.writer = SummaryWriter(self.local)
    except ImportError as e:
      log.warning("no TensorBoard events for %s (%s); metrics.jsonl has every value", workdir,
                  e)
      self.writer = None

  def write(self, line: dict) -> None:
    if self.writer is None:
      return
    for key, value in line.items():
      if key == "step":
        continue
      if isinstance(value, list):  # per-MoE-layer statistics: one scalar per layer (and expert)
        for i, v in enumerate(np.ravel(value)):
          self.writer.add_scalar(f"{key}/{i}", v, line["step"])
      else:
        self.writer.add_scalar(key, value, line["step"])
    self.writer.flush()
    self._upload()

  def _upload(self) -> None:
    if self.remote is None:
      return
    for name in os.listdir(self.local):
      with open(os.path.join(self.local, name), "rb") as f:
        storage.write_bytes(self.remote / name, f.read())

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
      self._upload()
    if self.remote is not None:
      shutil.rmtree(self.local, ignore_errors=True)


def _report(bar, line: dict, total: int) -> None:
  text = (f"step {line['step']}/{total} loss {line['loss']:.4f} "
          f"{line['tokens_per_s']:,.0f} tok/s")
  if "eval_loss" in line:
    text += f" eval {line['eval_loss']:.4f}"
  if bar is not None:
    bar.update(line["step"] - bar.n)
    bar.set_postfix_str(text.split(" ", 2)[2])
  else:
    print(text, flush=True)
