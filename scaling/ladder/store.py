"""The ladder workdir: manifest, one `scaling train` folder per run, per-run locks, run states.

Layout of DIR (local path or `gs://...`, read through `etils.epath`):

  DIR/ladder.json            the manifest: ladder name, the expanded rungs (ids, labels, counts)
  DIR/runs/<run_id>/         exactly a `scaling train` workdir (result.json, metrics.jsonl,
                             checkpoints/), plus spec.json (the run config the worker trains)
                             and .lock while a runner holds it
  DIR/slurm/                 sbatch scripts, task logs and submissions.json (slurm backend)

Locks: `runs/<id>/.lock` is created exclusively (`storage.create_exclusive`: link(2) on local
disks, an `ifGenerationMatch=0` upload on GCS) and holds the owner's host, pid and start time;
its owner refreshes it every `HEARTBEAT_S`. A lock is stale when its owner is a dead pid on this
host, or its heartbeat is older than `STALE_S` (another host died).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator

from etils import epath

from scaling import storage
from scaling.errors import ScalingError
from scaling.train import record

MANIFEST = "ladder.json"
SPEC = "spec.json"
LOCK = ".lock"
HEARTBEAT_S = 30.0
STALE_S = 300.0  # 10 missed heartbeats


Path = storage.Path
is_local = storage.is_local
write_json = storage.write_json
read_json = storage.read_json


def run_dir(workdir, run_id: str) -> epath.Path:
  return Path(workdir) / "runs" / run_id


def read_manifest(workdir) -> dict:
  manifest = read_json(Path(workdir) / MANIFEST)
  if manifest is None:
    raise ScalingError(f"{workdir} has no {MANIFEST}; it is not a ladder workdir (start one with "
                       "`scaling ladder run CONFIG --workdir=DIR`)")
  return manifest


def write_manifest(workdir, name: str, rows: list[dict]) -> None:
  """Merges `rows` into the manifest: runs of earlier ladder configs in DIR are kept."""
  path = Path(workdir) / MANIFEST
  old = read_json(path) or {}
  runs = {r["run_id"]: r for r in old.get("runs", [])}
  runs.update({r["run_id"]: r for r in rows})
  write_json(path, {"name": name, "runs": list(runs.values())})


def run_state(workdir, run_id: str) -> dict:
  """What the run folder says: state, steps done, last eval loss, wall time.

  state: `complete`, `failed`, `interrupted` (checkpointed and stopped, e.g. SIGTERM from
  scancel or preemption), `running` (a live lock), `partial` (checkpoints or metrics but no
  runner: killed), `pending` (nothing yet).
  """
  d = run_dir(workdir, run_id)
  result = record.read_result(d)
  steps_done, eval_loss, wall = 0, None, None
  for x in storage.read_jsonl(d / "metrics.jsonl"):
    steps_done, wall = x.get("step", steps_done), x.get("elapsed_s", wall)
    eval_loss = x.get("eval_loss", eval_loss)
  lock = lock_owner(d)
  if lock is not None and not _stale(lock):
    state = "running"
  elif result is not None:
    state = result.status if result.status is not None else "unknown"
    steps_done = result.steps_done if result.steps_done is not None else steps_done
    eval_loss = result.final_eval_loss or eval_loss
    wall = result.wall_time_s if result.wall_time_s is not None else wall
  elif steps_done or (d / "checkpoints").exists():
    state = "partial"
  else:
    state = "pending"
  return dict(run_id=run_id, state=state, steps_done=steps_done, eval_loss=eval_loss,
              wall_time_s=wall, error=result.error if result is not None else None)


# ------------------------------------------------------------------------------------- locks


def lock_owner(d) -> dict | None:
  path = Path(d) / LOCK
  try:
    owner = json.loads(path.read_text())
  except FileNotFoundError:
    return None
  except json.JSONDecodeError:
    owner = {}  # torn or foreign: held until its age says otherwise
  try:
    owner["heartbeat"] = path.stat().mtime
  except (FileNotFoundError, OSError):
    return None
  return owner


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _stale(owner: dict) -> bool:
  if owner.get("host") == socket.gethostname() and not _pid_alive(int(owner.get("pid", -1))):
    return True
  return time.time() - float(owner.get("heartbeat", 0)) > STALE_S


class RunLock:
  """An exclusive, heartbeated lock on one run folder; `acquire()` returns False if held."""

  def __init__(self, d):
    self.path = Path(d) / LOCK
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}

  def acquire(self) -> bool:
    self.path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
      if self._create():
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return True
      owner = lock_owner(self.path.parent)
      if owner is None or _stale(owner):
        self._break(owner)
        continue
      return False
    return False

  def _break(self, seen: dict | None) -> None:
    """Removes the stale lock `seen`, unless another runner replaced it meanwhile.

    Under a short-lived `.lock.break` (itself created exclusively), the owner is read again and
    the lock removed only if it is still the stale one: two runners breaking one stale lock cannot
    remove the fresh lock the faster of them just created.
    """
    if seen is None:
      return
    breaker = self.path.parent / f"{LOCK}.break"
    if not storage.create_exclusive(breaker, json.dumps(self.owner)):
      with contextlib.suppress(FileNotFoundError):
        if time.time() - breaker.stat().mtime > 60:  # its owner died mid-break
          breaker.unlink(missing_ok=True)
      time.sleep(0.05)
      return
    try:
      now = lock_owner(self.path.parent)
      if now is not None and now == seen and _stale(now):
        self.path.unlink(missing_ok=True)
    finally:
      breaker.unlink(missing_ok=True)

  def _create(self) -> bool:
    return storage.create_exclusive(self.path, json.dumps(self.owner))

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_S):
      with contextlib.suppress(OSError):
        if is_local(self.path):
          os.utime(self.path)
        else:
          self.path.write_text(json.dumps(self.owner))

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=5)
    owner = lock_owner(self.path.parent)
    if owner and owner.get("pid") == self.owner["pid"] and owner.get("host") == self.owner["host"]:
      with contextlib.suppress(FileNotFoundError):
        self.path.unlink()


@contextlib.contextmanager
def locked(d) -> Iterator[bool]:
  """`with locked(run_folder) as got:` holds the run's lock for the block when `got`."""
  lock = RunLock(d)
  got = lock.acquire()
  try:
    yield got
  finally:
    if got:
      lock.release()
