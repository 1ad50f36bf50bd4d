"""Per-run locks: exclusive while held, released after, stale locks (dead owner) broken."""

import json
import os
import subprocess
import sys

from scaling.ladder import store


def test_lock_is_exclusive_and_released(tmp_path):
  a, b = store.RunLock(tmp_path), store.RunLock(tmp_path)
  assert a.acquire()
  assert not b.acquire()  # same host, live pid: held
  assert store.lock_owner(tmp_path)["pid"] == os.getpid()
  a.release()
  assert not (tmp_path / store.LOCK).exists()
  assert b.acquire()
  b.release()


def test_lock_of_a_dead_process_is_stale_and_broken(tmp_path):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True).stdout.strip()
  import socket

  (tmp_path / store.LOCK).write_text(json.dumps({"host": socket.gethostname(),
                                                 "pid": int(dead), "started": 0}))
  with store.locked(tmp_path) as got:
    assert got and store.lock_owner(tmp_path)["pid"] == os.getpid()
  assert not (tmp_path / store.LOCK).exists()


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
