"""Per-run locks: exclusive while held, released after, stale locks (dead owner) broken."""

import json
import os
import socket
import subprocess
import sys
import uuid

import pytest

from scaling import storage
from scaling.ladder import store


@pytest.fixture(params=["local", "gcs"])
def folder(request, tmp_path):
  """A run folder on the local disk, or on the GCS emulator (tests/fake_gcs.py)."""
  if request.param == "local":
    return storage.Path(tmp_path)
  return storage.Path(request.getfixturevalue("gcs_bucket")) / "locks" / uuid.uuid4().hex


def test_create_exclusive_lets_exactly_one_creator_win(folder):
  assert storage.create_exclusive(folder / "x", "first")
  assert not storage.create_exclusive(folder / "x", "second")
  assert (folder / "x").read_text() == "first"


def test_lock_is_exclusive_and_released(folder):
  a, b = store.RunLock(folder), store.RunLock(folder)
  assert a.acquire()
  assert not b.acquire()  # same host, live pid: held
  assert store.lock_owner(folder)["pid"] == os.getpid()
  a.release()
  assert not (folder / store.LOCK).exists()
  assert b.acquire()
  b.release()


def test_lock_of_a_dead_process_is_stale_and_broken(folder):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True).stdout.strip()
  folder.mkdir(parents=True, exist_ok=True)
  (folder / store.LOCK).write_text(json.dumps({"host": socket.gethostname(),
                                               "pid": int(dead), "started": 0}))
  with store.locked(folder) as got:
    assert got and store.lock_owner(folder)["pid"] == os.getpid()
  assert not (folder / store.LOCK).exists()
  assert not (folder / f"{store.LOCK}.break").exists()


def test_lock_of_another_host_is_stale_only_after_its_heartbeat_stops(tmp_path):
  lock = tmp_path / store.LOCK
  lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": 0}))
  with store.locked(tmp_path) as got:
    assert not got  # fresh heartbeat: another machine is training it
  old = os.stat(lock).st_mtime - store.STALE_S - 5
  os.utime(lock, (old, old))
  with store.locked(tmp_path) as got:
    assert got


def test_run_state_reads_the_folder(tmp_path):
  d = store.run_dir(tmp_path, "r1")
  assert store.run_state(tmp_path, "r1")["state"] == "pending"
  os.makedirs(d)
  (d / "metrics.jsonl").write_text('{"step": 4, "loss": 3.0, "eval_loss": 3.1, '
                                   '"elapsed_s": 2.0}\n{"step": 8, "loss": 2.')
  s = store.run_state(tmp_path, "r1")
  assert (s["state"], s["steps_done"], s["eval_loss"]) == ("partial", 4, 3.1)
  (d / "result.json").write_text(json.dumps({"status": "complete", "steps_done": 8,
                                             "final_eval_loss": 2.5, "wall_time_s": 9.0}))
  s = store.run_state(tmp_path, "r1")
  assert (s["state"], s["steps_done"], s["eval_loss"], s["wall_time_s"]) == (
      "complete", 8, 2.5, 9.0)
