"""Stopping cleanly on SIGTERM/SIGINT: the loop checkpoints, records `interrupted` and returns.

Cloud TPU preemption and `scancel` send SIGTERM; Ctrl-C sends SIGINT.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


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
    for s in previous:
      signal.signal(s, lambda signum, frame: setattr(self, "signal", signum))
    try:
      yield self
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)
