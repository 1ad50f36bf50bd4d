"""Stopping cleanly on SIGTERM/SIGINT: the loop checkpoints, records `interrupted` and returns.

Cloud TPU preemption and `scancel` send SIGTERM; Ctrl-C sends SIGINT. A process that trains
run after run (a ladder's pool worker) keeps `Deferred` installed between the loops, so that a
signal landing outside one (while a run compiles, or writes its record) neither kills the
process mid-record nor is lost: the next loop starts stopped, or the worker ends after its run.
Each run goes through `Deferred.around`, in a pool worker and in a one-run worker (`ladder
worker --run_id`, what Slurm and TPU VMs run) alike.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


class StopFlag:
  """`signal` is the number of the latest SIGTERM/SIGINT received inside `installed()`, else
  None. Outside the main thread (where Python cannot install handlers) it is never set."""

  def __init__(self):
    self.signal: int | None = None

  @contextlib.contextmanager
  def installed(self) -> Iterator[StopFlag]:
    """Within the block the two signals set the flag; the previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
      yield self
      return
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for handler in previous.values():  # a signal a Deferred kept for this run stops it now
      if isinstance(handler, Deferred) and handler.pending is not None:
        self.signal = handler.pending
    for s in previous:
      signal.signal(s, lambda signum, frame: setattr(self, "signal", signum))
    try:
      yield self
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)


class Deferred:
  """A SIGTERM/SIGINT handler for a process that trains run after run, installed for its life
  (`install`). While `busy` (a run under way, outside its loop's own `StopFlag`), a signal is
  kept in `pending`: the run's loop, if it has yet to start, starts stopped, and the process
  ends once the run's record is written. While idle, SIGTERM ends the process at once (nothing
  is under way) and SIGINT is ignored (Ctrl-C reaches the whole group; the parent ends it)."""

  def __init__(self):
    self.busy = False
    self.pending: int | None = None

  def install(self) -> Deferred:
    for s in (signal.SIGTERM, signal.SIGINT):
      signal.signal(s, self)
    return self

  def around(self, run: Callable[[], T]) -> T:
    """`run()` (one run: build, loop, record), busy; idle again once it returns. A signal
    before the run's loop starts stops that loop at once; one after it is kept until the run's
    record is written. A pool worker wraps each run it trains; a one-run worker (`ladder worker
    --run_id`) its only one, and then ends as the run did."""
    self.busy = True
    try:
      return run()
    finally:
      self.busy = False

  def __call__(self, signum: int, frame) -> None:
    if self.busy:
      self.pending = signum
    elif signum == signal.SIGTERM:
      raise SystemExit(128 + signum)
