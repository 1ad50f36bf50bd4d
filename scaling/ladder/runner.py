"""Preparing a ladder workdir, the per-run worker every backend calls, and the local backend.

`prepare` writes the manifest and each run's `spec.json` and returns what is still to do: runs
with a complete `result.json` are skipped, everything else (new, interrupted, failed, killed)
is launched again and resumes from its checkpoints. `work` trains one run under its lock, so two
runners on one workdir never train the same run at once.

Cooldown branches (wsd sweeps) start from their trunk's checkpoint at the fork step, so every
backend launches a branch only once that checkpoint exists: `ordered` puts trunks before their
branches (the order of the TPU-VM command chain and of in-process training), the local backend
starts a branch when `ready` says the checkpoint is there (a branch may start while its trunk
trains on), and the Slurm backend submits branches with `--dependency=afterok:<trunk task>`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import tempfile
import time

import ml_collections

from scaling import storage
from scaling.errors import ScalingError
from scaling.ladder import pool, store
from scaling.ladder.spec import Rung
from scaling.train import record
from scaling.train.programs import Programs

log = logging.getLogger(__name__)
ATTEMPTS = "attempts.jsonl"
POLL_S = 2.0


def attempts(workdir, run_id: str) -> list[dict]:
  """Every time a runner started training `run_id` (not counting no-op visits to a done run)."""
  return storage.read_jsonl(store.run_dir(workdir, run_id) / ATTEMPTS)


def prepare_data(rungs: list[Rung]) -> None:
  """Prepares each distinct dataset once, here, before several processes would race to."""
  from scaling.data import data_info

  seen = set()
  for r in rungs:
    key = json.dumps(r.config.data.to_dict(), sort_keys=True)
    if key not in seen:
      seen.add(key)
      data_info(r.config.data)


def ordered(rungs: list[Rung]) -> list[Rung]:
  """The rungs with every branch after its trunk (otherwise in the given order)."""
  first = [r for r in rungs if r.parent is None]
  return first + [r for r in rungs if r.parent is not None]


def ready_rungs(workdir, rungs: list[Rung]) -> list[Rung]:
  """The rungs of `rungs` that can start now, in order: those without a parent, and branches
  whose parent's checkpoint at the fork step is finished (orbax's rule: a checkpoint still
  being written does not count).

  Each trunk's checkpoints are listed once, not once per branch: orbax lists them through a
  thread pool, and the local runner asks every second while branches wait (measured on
  `cpu_branches.py`'s ladder, 24 branches, 2 loaded cores: the runner's sys time 8.5 -> 5.9 s,
  all processes' CPU 159 -> 154 s).
  """
  from scaling.train.checkpoint import saved_steps

  steps: dict[str, set[int]] = {}
  for r in rungs:
    if r.parent is not None and r.parent not in steps:
      steps[r.parent] = set(saved_steps(store.run_dir(workdir, r.parent)))
  return [r for r in rungs if r.parent is None or r.branch_step in steps[r.parent]]


def _blocked(workdir, r: Rung) -> str:
  """Why a branch cannot start: its trunk stopped without the fork checkpoint."""
  parent = store.run_state(workdir, r.parent)
  return (f"{r.run_id} ({r.sweep}/{r.label}): not started: its trunk {r.parent} is "
          f"{parent['state']} without a checkpoint at step {r.branch_step}; run the ladder again "
          "once the trunk can finish")


def prepare(workdir, name: str, rungs: list[Rung]) -> list[Rung]:
  """Writes DIR/ladder.json and runs/<id>/spec.json; returns the rungs not yet complete."""
  store.Path(workdir).mkdir(parents=True, exist_ok=True)
  store.write_manifest(workdir, name, [r.row() for r in rungs])
  todo = []
  for r in rungs:
    d = store.run_dir(workdir, r.run_id)
    # Rewritten every time: fields outside the run id (data_dir, mesh, ...) may have changed.
    store.write_json(d / store.SPEC, r.config.to_dict())
    if store.run_state(workdir, r.run_id)["state"] != "complete" or _evals_pending(d, r.config):
      todo.append(r)
  return todo


def _evals_pending(d, cfg) -> bool:
  """Whether a complete run still lacks evals its ladder asks for (`ladder.eval`)."""
  ev = (cfg.get("ladder") or {}).get("eval") or {}
  if not ev.get("tasks"):
    return False
  from scaling.evals.run import pending

  try:
    return pending(d, cfg, ev["tasks"], ev["checkpoints"])
  except ScalingError:
    return True  # e.g. a checkpoint gone: `work` says what is wrong


def _evaluate(d, cfg, run_id: str) -> None:
  """Scores a complete run's checkpoints as its ladder asks (`ladder.eval`), under its lock;
  an evaluation that fails is logged, the run stays complete and the next `ladder run` retries."""
  ev = (cfg.get("ladder") or {}).get("eval") or {}
  done = record.read_result(d)
  if not ev.get("tasks") or done is None or done.status != "complete":
    return
  from scaling.evals.run import evaluate

  try:
    out = evaluate(d, checkpoints=ev["checkpoints"], tasks_arg=ev["tasks"],
                   examples=int(ev["examples"]))
    log.info("run %s: %d eval lines added", run_id, len(out.added))
  except ScalingError as e:
    log.error("run %s: evaluation failed: %s", run_id, e)


def work(workdir, run_id: str, programs: Programs | None = None) -> dict:
  """Trains run `run_id` of the ladder in `workdir` (resuming it); returns its run_state.

  `programs`: the jitted programs of the runs this process trained before
  (`scaling.train.programs`), which a run of the same shape reuses.

  In a multi-process run (a pod slice, a multi-task Slurm step) every process trains the run
  together, so no lock is taken: one launcher owns the whole slice.
  """
  import jax

  from scaling.train.compile_cache import use_ladder_cache
  from scaling.train.loop import train

  # Every path that trains a rung comes here (in process, a worker, a Slurm task): rungs of one
  # depth share their programs through the ladder's cache.
  use_ladder_cache(workdir)
  d = store.run_dir(workdir, run_id)
  spec = store.read_json(d / store.SPEC)
  if spec is None:
    raise ScalingError(f"{d} has no {store.SPEC}; run `scaling ladder run CONFIG "
                       f"--workdir={workdir}` to prepare it")
  cfg = ml_collections.ConfigDict(spec)
  if jax.process_count() > 1:
    train(cfg, os.fspath(d), programs=programs)
    _evaluate(d, cfg, run_id)
    return store.run_state(workdir, run_id)
  with store.locked(d) as got:
    if not got:
      owner = store.lock_owner(d) or {}
      log.warning("run %s is held by %s pid %s; skipping", run_id, owner.get("host"),
                  owner.get("pid"))
      return dict(store.run_state(workdir, run_id), state="running")
    before = store.run_state(workdir, run_id)  # "running": we hold the lock now
    done = record.read_result(d)
    if done is None or done.status != "complete":
      # One line per time a runner actually trains this run: proof that locks hold, and the
      # history `ladder status` can show (resumes, resubmissions).
      storage.JsonlLog(d / ATTEMPTS).append(dict(
          time=time.time(), host=socket.gethostname(), pid=os.getpid(),
          from_step=before["steps_done"], slurm_job=os.environ.get("SLURM_JOB_ID")))
    try:
      train(cfg, os.fspath(d), programs=programs)
    except ScalingError as e:
      log.error("run %s failed: %s", run_id, e)
    else:
      _evaluate(d, cfg, run_id)
  return store.run_state(workdir, run_id)


def _fmt_state(s: dict) -> str:
  loss = f" eval loss {s['eval_loss']:.4f}" if s.get("eval_loss") is not None else ""
  wall = f" in {s['wall_time_s']:.0f}s" if s.get("wall_time_s") is not None else ""
  return f"{s['state']}{loss}{wall}"


def run_local(workdir, rungs: list[Rung], todo: list[Rung], *, parallel: int = 1,
              out=None) -> int:
  """Trains `todo` one after another (in this process) or `parallel` at once (in as many
  long-lived worker processes, `ladder.pool`).

  Prints progress (runs done / total, the current runs' step and loss). Returns 0 when every
  rung of the ladder is complete, else 1.
  """
  out = out or sys.stdout
  total = len(rungs)
  done = total - len(todo)

  def say(text: str) -> None:
    print(text, file=out, flush=True)

  say(f"ladder: {total} runs, {done} complete, {len(todo)} to run in {workdir}")
  if parallel <= 1:
    queue, held = ordered(todo), []
    programs = Programs()  # the rungs of one shape share their programs
    while queue or held:
      r = next(iter(ready_rungs(workdir, queue)), None)
      if r is None and held:
        # Runs another runner holds (or their branches): wait for it, then take over whatever
        # it did not finish (its lock goes stale if it died).
        time.sleep(POLL_S)
        back = [x for x in held if store.run_state(workdir, x.run_id)["state"] != "running"]
        queue, held = back + queue, [x for x in held if x not in back]
        continue
      if r is None:  # only branches whose trunks stopped short are left
        for x in queue:
          say(_blocked(workdir, x))
        break
      queue.remove(r)
      say(f"[{done}/{total} done] {r.run_id} ({r.sweep}/{r.label}): "
          f"N={r.counts['params_non_embedding']:,} D={r.counts['tokens']:,} "
          f"steps={r.config.train.steps}")
      try:
        state = work(workdir, r.run_id, programs)
      except Exception as e:  # noqa: BLE001 - one broken run must not stop the ladder
        log.exception("run %s crashed", r.run_id)
        state = dict(store.run_state(workdir, r.run_id), state="failed", error=str(e))
      if state["state"] == "running":
        say(f"[{done}/{total} done] {r.run_id}: another runner is training it; waiting")
        held.append(r)
        continue
      done += state["state"] == "complete"
      say(f"[{done}/{total} done] {r.run_id}: {_fmt_state(state)}")
      if state["state"] == "interrupted":
        say("ladder interrupted; run the same command again to resume")
        return 1
  else:
    done = _run_parallel(workdir, todo, parallel, done, total, say)
  return 0 if done == total else 1


def worker_command(workdir, run_id: str) -> list[str]:
  return pool.command(workdir, f"--run_id={run_id}")


def log_path(workdir, run_id: str) -> str:
  """Where a local worker's output for a run goes: its run folder, or /tmp for a gs:// workdir
  (object stores have no append)."""
  d = store.run_dir(workdir, run_id)
  if store.is_local(d):
    return os.fspath(d / "train.log")
  os.makedirs(os.path.join(tempfile.gettempdir(), "scaling-ladder"), exist_ok=True)
  return os.path.join(tempfile.gettempdir(), "scaling-ladder", f"{run_id}.log")


def _progress(workdir, running: list[Rung]) -> str:
  parts = [f"{r.run_id} step {store.run_state(workdir, r.run_id)['steps_done']}/"
           f"{r.config.train.steps}" for r in running]
  return "running: " + ", ".join(parts) if parts else ""


def _run_parallel(workdir, todo: list[Rung], parallel: int, done: int, total: int, say) -> int:
  """`parallel` runs at once, in a pool of long-lived worker processes (`ladder.pool`).

  In config order, not costliest first: XLA's CPU runtime spreads one run over every core, so a
  run left alone at the end is not idling the machine (the demo, 2 cores: 3 m 39 s in config
  order, 4 m 02 s costliest first, the same 16 losses).
  """
  queue, held = ordered(todo), []
  by_id = {r.run_id: r for r in todo}
  workers = pool.Pool(workdir)
  last_line, stopped = "", False
  try:
    while queue or workers.busy or held:
      startable = ready_rungs(workdir, queue)
      if not startable and not workers.busy:
        if not held:  # only branches whose trunks stopped short are left
          for x in queue:
            say(_blocked(workdir, x))
          break
        # Only runs another runner holds are left: wait, then take over what it did not finish.
        time.sleep(POLL_S)
        back = [r for r in held if store.run_state(workdir, r.run_id)["state"] != "running"]
        queue, held = back + queue, [r for r in held if r not in back]
        continue
      while startable and len(workers.busy) < parallel:
        r = startable.pop(0)
        queue.remove(r)
        workers.start(r.run_id)
      for rid in workers.wait(timeout_s=1.0):
        state = store.run_state(workdir, rid)
        if state["state"] == "running":  # the worker found it locked by another runner
          say(f"[{done}/{total} done] {rid}: another runner is training it; waiting")
          held.append(by_id[rid])
          continue
        done += state["state"] == "complete"
        say(f"[{done}/{total} done] {rid}: {_fmt_state(state)}")
        stopped = stopped or state["state"] == "interrupted"
      if stopped:
        # A signal stopped a worker's run but not this process (started with SIGINT ignored,
        # as a non-interactive shell's background jobs are): start nothing more. The other
        # workers got the signal too, or finish their runs; `close` waits for them. No SIGTERM
        # here: one arriving after a worker's run has left its handler would kill it mid-record.
        say("ladder interrupted; run the same command again to resume")
        break
      line = _progress(workdir, [by_id[rid] for rid in workers.busy])
      if line and line != last_line:
        say(f"[{done}/{total} done] {line}")
        last_line = line
  except KeyboardInterrupt:
    workers.interrupt()  # SIGTERM: each run checkpoints and records `interrupted`
    say("ladder interrupted; run the same command again to resume")
  finally:
    workers.close()
  return done
