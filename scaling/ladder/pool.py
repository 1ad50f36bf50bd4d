"""Long-lived local workers for `scaling ladder run --parallel=K`: K processes, a run at a time.

A process per run paid a Python start and the imports of JAX, Flax, Orbax and grain (~4 CPU-s)
before its first step, while a CPU rung trains in 1-10 s: the demo's and `cpu_branches`' rungs
spent as long starting as training. A pool worker starts once and trains every run the runner
hands it, each exactly as `scaling ladder worker DIR --run_id=ID` would: `runner.work`, under
the run's lock, with the worker's output appended to that run's log.

Protocol: the runner writes a run id and a newline to a worker's stdin; the worker answers on
its stdout with one JSON line, `{"run_id": ..., "state": ...}`, once the run is over. End of
input ends the worker; so does a run that ended `interrupted` (the worker was told to stop), or
one during which a signal arrived outside its training loop (`train.stop.Deferred`: the run
finishes its record first).
A worker that dies mid-run (killed, out of memory) is seen as end of output: the runner reads
that run's state from the workdir and starts a fresh worker for the next run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import select
import subprocess
import sys
from collections.abc import Callable, Iterator

from scaling import gc_policy
from scaling.errors import ScalingError
from scaling.train import stop

log = logging.getLogger(__name__)


def command(workdir, *flags: str) -> list[str]:
  """`scaling ladder worker DIR FLAGS...` in this Python: `--serve` for a pool worker,
  `--run_id=ID` for one run (`runner.worker_command`)."""
  return [sys.executable, "-m", "scaling.cli", "ladder", "worker", os.fspath(workdir), *flags]


class Pool:
  """Worker processes for one ladder workdir: `start` a run on an idle one (or a new one),
  `wait` for any to end. The caller decides how many run at once."""

  def __init__(self, workdir):
    self.workdir = workdir
    self.idle: list[subprocess.Popen] = []
    self.busy: dict[str, subprocess.Popen] = {}

  def start(self, run_id: str) -> None:
    while self.idle and self.idle[-1].poll() is not None:  # died while idle
      self.idle.pop()
    proc = self.idle.pop() if self.idle else subprocess.Popen(
        command(self.workdir, "--serve"), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc.stdin.write(run_id.encode() + b"\n")
    proc.stdin.flush()
    self.busy[run_id] = proc

  def wait(self, timeout_s: float) -> list[str]:
    """The runs that ended within `timeout_s` seconds (their workers are idle again, or gone)."""
    if not self.busy:
      return []
    by_pipe = {proc.stdout: run_id for run_id, proc in self.busy.items()}
    readable, _, _ = select.select(list(by_pipe), [], [], timeout_s)
    ended = []
    for pipe in readable:
      run_id = by_pipe[pipe]
      proc = self.busy.pop(run_id)
      if pipe.readline():
        self.idle.append(proc)
      else:  # the worker died mid-run: the workdir tells what became of the run
        proc.wait()
        log.warning("ladder worker pid %d exited with %s during run %s", proc.pid,
                    proc.returncode, run_id)
      ended.append(run_id)
    return ended

  def interrupt(self) -> None:
    """SIGTERM to every busy worker: each run checkpoints, records `interrupted` and ends its
    worker (`close` then waits for them)."""
    for proc in self.busy.values():
      proc.terminate()

  def close(self) -> None:
    """Ends every worker (end of input) and waits for them."""
    procs = [*self.idle, *self.busy.values()]
    for proc in procs:
      with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
    for proc in procs:
      proc.wait()
    self.idle, self.busy = [], {}


@contextlib.contextmanager
def _output_to(path: str) -> Iterator[None]:
  """Points this process's stdout and stderr (file descriptors 1 and 2, so JAX's and XLA's own
  output too) at `path`, appending, for the block."""
  sys.stdout.flush()
  sys.stderr.flush()
  saved = os.dup(1), os.dup(2)
  fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  try:
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    yield
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    for f in (fd, *saved):
      os.close(f)


def _one_run(work: Callable[[str], dict], log_path: Callable[[str], str], run_id: str) -> str:
  """`work(run_id)`'s state, its output appended to the run's log; a crash is `failed`."""
  with _output_to(log_path(run_id)):
    try:
      state = work(run_id)["state"]
    except ScalingError as e:  # bad input: its one line, as `ladder worker --run_id` gives
      log.error("run %s: %s", run_id, e)
      state = "failed"
    except Exception:  # noqa: BLE001 - one broken run must not end the worker
      log.exception("run %s crashed", run_id)
      state = "failed"
    print(f"{run_id}: {state}", flush=True)
  return state


def serve(work: Callable[[str], dict], log_path: Callable[[str], str]) -> int:
  """The worker's loop: trains each run id read from stdin with `work(run_id)` (a run_state),
  its output appended to `log_path(run_id)`, and answers on the original stdout.

  The callables come from the caller (`runner.work`, `runner.log_path`), so this module, which
  the runner imports, imports nothing of the runner's.
  """
  # Ctrl-C reaches every process of the terminal's group, and the runner SIGTERMs its busy
  # workers: a run's loop stops cleanly on either (its own `StopFlag`); one arriving outside the
  # loop (compiling, writing the record) is kept, never a death mid-record; an idle worker
  # waits for the runner to end it rather than printing a KeyboardInterrupt traceback.
  signals = stop.Deferred().install()
  reply = os.fdopen(os.dup(1), "w", buffering=1)
  # Nothing but answers may reach the runner's pipe: between runs stdout goes nowhere.
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 1)
  os.close(devnull)
  while line := sys.stdin.readline():
    # Between runs what is left is the worker's own state (imports, kept programs): frozen, so
    # the next run's tracing does not walk it again and again (`scaling.gc_policy`).
    gc_policy.for_tracing()
    run_id = line.strip()
    if not run_id:
      continue
    # Idle again before the answer: once the runner has it, this worker is idle to it (a signal
    # after that is an idle worker's), and the record is written.
    state = signals.around(functools.partial(_one_run, work, log_path, run_id))
    reply.write(json.dumps({"run_id": run_id, "state": state}) + "\n")
    if state == "interrupted" or signals.pending is not None:
      break
  return 0
