"""The ladder workdir: manifest, one `scaling train` folder per run, per-run locks, run states.

Layout of DIR (local path or `gs://...`, read through `etils.epath`):

  DIR/ladder.json            the manifest: ladder name, the expanded rungs (ids, labels, counts)
  DIR/runs/<run_id>/         exactly a `scaling train` workdir (result.json, metrics.jsonl,
                             checkpoints/), plus spec.json (the run config the worker trains)
                             and .lock while a runner holds it
  DIR/slurm/                 sbatch scripts, task logs and submissions.json (slurm backend)

Locks: `runs/<id>/.lock` is created exclusively (O_CREAT | O_EXCL on local disks) and holds the
owner's host, pid and start time; its owner touches it every `HEARTBEAT_S`. A lock is stale when
its owner is a dead pid on this host, or its heartbeat is older than `STALE_S` (another host
died). On `gs://` there is no exclusive create: the lock is written and read back (last writer
wins), which narrows but does not close the race; run one runner per GCS workdir.
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

from scaling.errors import ScalingError

MANIFEST = "ladder.json"
SPEC = "spec.json"
LOCK = ".lock"
HEARTBEAT_S = 30.0
STALE_S = 300.0  # 10 missed heartbeats


def Path(p) -> epath.Path:  # noqa: N802 - a constructor
  return epath.Path(p)


def is_local(path) -> bool:
  return "://" not in os.fspath(path)


def write_json(path, obj) -> None:
  """Atomic JSON write: rename on local disks; a single object PUT on GCS is already atomic."""
  path = Path(path)
  if is_local(path):
    from scaling.train.record import write_json_atomic

    write_json_atomic(os.fspath(path), obj)
  else:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path) -> dict | None:
  path = Path(path)
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    return None
  except json.JSONDecodeError:
    return None  # a torn write of a non-atomic producer: treat as absent


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
  result = read_json(d / "result.json")
  steps_done, eval_loss, wall = 0, None, None
  metrics = d / "metrics.jsonl"
  if metrics.exists():
    for line in metrics.read_text().splitlines():
      try:
        x = json.loads(line)
      except json.JSONDecodeError:
        break
      steps_done, wall = x.get("step", steps_done), x.get("elapsed_s", wall)
      eval_loss = x.get("eval_loss", eval_loss)
  lock = lock_owner(d)
  if lock is not None and not _stale(lock):
    state = "running"
  elif result is not None:
    state = result.get("status", "unknown")
    steps_done = result.get("steps_done", steps_done)
    eval_loss = result.get("final_eval_loss") or eval_loss
    wall = result.get("wall_time_s", wall)
  elif steps_done or (d / "checkpoints").exists():
    state = "partial"
  else:
    state = "pending"
  return dict(run_id=run_id, state=state, steps_done=steps_done, eval_loss=eval_loss,
              wall_time_s=wall, error=(result or {}).get("error"))


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
    owner["heartbeat"] = path.stat().mtime if not is_local(path) else os.stat(path).st_mtime
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

    Under a short-lived `.lock.break` (same link() trick), the owner is read again and the lock
    removed only if it is still the stale one: two runners breaking one stale lock cannot
    remove the fresh lock the faster of them just created.
    """
    if seen is None:
      return
    if not is_local(self.path):
      with contextlib.suppress(FileNotFoundError):
        self.path.unlink()
      return
    breaker = self.path.parent / f"{LOCK}.break"
    tmp = self.path.parent / f"{LOCK}.break.{socket.gethostname()}.{os.getpid()}"
    tmp.write_text(json.dumps(self.owner))
    try:
      os.link(tmp, breaker)
    except FileExistsError:
      with contextlib.suppress(FileNotFoundError):
        if time.time() - os.stat(breaker).st_mtime > 60:  # its owner died mid-break
          os.unlink(breaker)
      time.sleep(0.05)
      return
    finally:
      os.unlink(tmp)
    try:
      now = lock_owner(self.path.parent)
      if now is not None and now == seen and _stale(now):
        with contextlib.suppress(FileNotFoundError):
          os.unlink(self.path)
    finally:
      os.unlink(breaker)

  def _create(self) -> bool:
    text = json.dumps(self.owner)
    if is_local(self.path):
      # Write the owner aside, then hard-link it into place: link() fails if the lock exists,
      # and a lock never exists without its owner written in it (O_EXCL + write would leave a
      # window in which another runner reads an empty lock and takes it for stale).
      tmp = self.path.parent / f"{LOCK}.{socket.gethostname()}.{os.getpid()}"
      tmp.write_text(text)
      try:
        os.link(tmp, self.path)
      except FileExistsError:
        return False
      finally:
        os.unlink(tmp)
      return True
    if self.path.exists():
      return False
    self.path.write_text(text)
    return self.path.read_text() == text

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
