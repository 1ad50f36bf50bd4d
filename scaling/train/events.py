"""Where each logged training line goes: `metrics.jsonl`, TensorBoard events, the console.

`MetricSinks` is what the loop writes a line to (the chief process only); `Events` writes
TensorBoard event files (copying them up for a gs:// workdir); `Progress` is a tqdm bar on a
terminal, else one printed line per logged step.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile

import numpy as np

from scaling import storage
from scaling.train.record import METRICS

log = logging.getLogger(__name__)


def _summary_writer() -> type:
  """tensorboardX's SummaryWriter, imported without torch.

  tensorboardX imports torch whenever it is installed (the dev extra has it, for the HF parity
  tests) only to accept torch tensors, which are never logged here; that import cost every run
  2.5-2.9 s on 2 cores (measured). A `None` entry in `sys.modules` makes `import torch` raise
  ImportError, which tensorboardX handles; a torch already imported is left alone.
  """
  if "torch" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter


class Events:
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
      self.writer = _summary_writer()(self.local)
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


class Progress:
  """A tqdm bar when stderr is a terminal (and tqdm is installed), else printed lines."""

  def __init__(self, total: int, initial: int):
    self.total = total
    self.bar = None
    if sys.stderr.isatty():
      try:
        from tqdm import tqdm
        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
      except ImportError:
        pass

  def report(self, line: dict) -> None:
    text = (f"step {line['step']}/{self.total} loss {line['loss']:.4f} "
            f"{line['tokens_per_s']:,.0f} tok/s")
    if "eval_loss" in line:
      text += f" eval {line['eval_loss']:.4f}"
    if self.bar is not None:
      self.bar.update(line["step"] - self.bar.n)
      self.bar.set_postfix_str(text.split(" ", 2)[2])
    else:
      print(text, flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


class MetricSinks:
  """Each logged line to `metrics.jsonl`, TensorBoard and the console; with `enabled=False`
  (every process but the chief) to nowhere. Open it after a resume has truncated the metrics
  (a gs:// log reads the lines it keeps when it opens)."""

  def __init__(self, workdir, *, total_steps: int, start: int, enabled: bool):
    self.enabled = enabled
    if not enabled:
      return
    self.metrics = storage.JsonlLog(storage.Path(workdir) / METRICS)
    self.events = Events(workdir)
    self.progress = Progress(total_steps, start)

  def write(self, line: dict) -> None:
    if self.enabled:
      self.metrics.append(line)
      self.events.write(line)
      self.progress.report(line)

  def close(self) -> None:
    if self.enabled:
      self.events.close()
      self.progress.close()
