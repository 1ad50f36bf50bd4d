"""The local backend end to end: runs land, reruns are no-ops, interrupted runs resume, a killed
runner loses no finished result, and two runners on one workdir never train the same run twice."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from scaling import cli
from scaling.ladder import pool, runner, store
from tests.helpers import ROOT

pytestmark = pytest.mark.slow
TINY = "tests/ladder/tiny_ladder.py"


def _ids(workdir):
  return [r["run_id"] for r in store.read_manifest(workdir)["runs"]]


def test_run_rerun_resume_status_collect(tmp_path, data_dir, capsys):
  w = tmp_path / "ladder"
  args = ["ladder", "run", TINY, f"--workdir={w}", f"--config.run.data.data_dir={data_dir}"]
  assert cli.main(args) == 0
  out = capsys.readouterr().out
  assert "3 to run" in out and "[3/3 done]" in out
  ids = _ids(w)
  results = {i: json.loads((w / "runs" / i / "result.json").read_text()) for i in ids}
  assert all(r["status"] == "complete" for r in results.values())
  assert all(len(runner.attempts(w, i)) == 1 for i in ids)
  # Each run folder is a `scaling train` workdir, with the run id as its record's run_id.
  assert all(results[i]["run_id"] == i and (w / "runs" / i / "checkpoints").is_dir()
             for i in ids)

  assert cli.main(args) == 0  # nothing left: nothing trains
  assert "3 complete, 0 to run" in capsys.readouterr().out
  assert all(len(runner.attempts(w, i)) == 1 for i in ids)

  # An interrupted run (checkpoints, no record) resumes alone and ends where it would have.
  big = max(ids, key=lambda i: results[i]["params_non_embedding"])
  (w / "runs" / big / "result.json").unlink()
  assert cli.main(args) == 0
  assert "2 complete, 1 to run" in capsys.readouterr().out
  (first, again) = runner.attempts(w, big)
  assert again["from_step"] == results[big]["steps"]  # restored from the last checkpoint
  assert json.loads((w / "runs" / big / "result.json").read_text())["final_eval_loss"] == (
      results[big]["final_eval_loss"])

  assert cli.main(["ladder", "status", str(w)]) == 0
  status = capsys.readouterr().out
  assert status.count(" complete ") == 3 and "tiny: 3 complete" in status
  assert cli.main(["results", "collect", str(w), f"--out={w}/results.csv"]) == 0
  rows = (w / "results.csv").read_text().splitlines()
  assert len(rows) == 4 and all(",4000000000.0," in r for r in rows[1:])


def _runner(w, data_dir, *extra):
  # The ladder of test_run_rerun_resume_status_collect: its compiled steps are in the
  # persistent cache by now (make test), so the runners spend their time on the locks.
  return subprocess.Popen(
      [sys.executable, "-m", "scaling.cli", "ladder", "run", TINY, f"--workdir={w}",
       f"--config.run.data.data_dir={data_dir}", *extra],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_runner_keeps_results_and_two_runners_share_the_work(tmp_path, data_dir):
  w = tmp_path / "ladder"
  a = _runner(w, data_dir)
  deadline = time.time() + 240
  while time.time() < deadline and a.poll() is None:
    states = [store.run_state(w, i)["state"] for i in _ids(w)] if (w / "ladder.json").exists() \
        else []
    if states.count("complete") >= 1 and "running" in states:
      break
    time.sleep(0.05)
  assert a.poll() is None, a.communicate()[0]
  a.send_signal(signal.SIGKILL)
  a.communicate()
  ids = _ids(w)
  finished = {i: (w / "runs" / i / "result.json").read_bytes() for i in ids
              if store.run_state(w, i)["state"] == "complete"}
  assert finished
  before = {i: len(runner.attempts(w, i)) for i in ids}

  b, c = _runner(w, data_dir), _runner(w, data_dir)
  outs = [p.communicate(timeout=300)[0] for p in (b, c)]
  assert [b.returncode, c.returncode] == [0, 0], outs
  for i in ids:
    assert store.run_state(w, i)["state"] == "complete"
    # The killed runner's lock (a dead pid) was broken; after that each run trained once.
    expected = before[i] + (0 if i in finished else 1)
    assert len(runner.attempts(w, i)) == expected, (i, runner.attempts(w, i))
  for i, blob in finished.items():
    assert (w / "runs" / i / "result.json").read_bytes() == blob  # untouched
  assert not any((w / "runs" / i / store.LOCK).exists() for i in ids)


# `python -m scaling.cli` with SIGINT set in the child, not by `preexec_fn`, which forks a
# multithreaded (JAX) process. A process started with SIGINT ignored (the convention for
# background jobs of a non-interactive shell, which is how some CI agents and sandboxes start
# pytest) passes the ignore on, as `nohup` relies on; its workers install their own handler.
def _interrupt_parallel(w, data_dir, depths: str, sigint: str) -> str:
  """Starts `ladder run --parallel=2` with SIGINT as `sigint` (`default`, a terminal's; `ignored`,
  a background job's) in a session of its own, sends SIGINT to the whole group once a run has
  stepped, and returns the runner's output (it exits 1)."""
  handler = "signal.default_int_handler" if sigint == "default" else "signal.SIG_IGN"
  cli_cmd = [sys.executable, "-c", "import runpy, signal; "
             f"signal.signal(signal.SIGINT, {handler}); "
             "runpy.run_module('scaling.cli', run_name='__main__', alter_sys=True)"]
  a = subprocess.Popen(
      [*cli_cmd, "ladder", "run", TINY, f"--workdir={w}", "--parallel=2",
       f"--config.run.data.data_dir={data_dir}", f"--config.ladder.sweeps.iso.depths={depths}"],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      start_new_session=True)
  deadline = time.time() + 240
  while time.time() < deadline and a.poll() is None:
    if (w / "ladder.json").exists() and any(
        store.run_state(w, i)["steps_done"] > 0 for i in _ids(w)):
      break
    time.sleep(0.05)
  assert a.poll() is None, a.communicate()[0]
  os.killpg(a.pid, signal.SIGINT)
  out = a.communicate(timeout=120)[0]
  assert "ladder interrupted; run the same command again to resume" in out, out
  assert "Traceback" not in out and a.returncode == 1, out
  locked = [(i, store.run_state(w, i)["state"]) for i in _ids(w)
            if (w / "runs" / i / store.LOCK).exists()]
  assert not locked, (locked, out)
  return out


def test_ctrl_c_on_a_parallel_ladder_stops_cleanly_and_a_rerun_finishes(tmp_path, data_dir,
                                                                        capsys):
  w = tmp_path / "ladder"
  two = "--config.ladder.sweeps.iso.depths=(1,2)"
  # A terminal's Ctrl-C: SIGINT to the runner and its workers at once (one process group).
  _interrupt_parallel(w, data_dir, "(1,2)", "default")
  assert cli.main(["ladder", "run", TINY, f"--workdir={w}", "--parallel=2",
                   f"--config.run.data.data_dir={data_dir}", two]) == 0
  assert "[2/2 done]" in capsys.readouterr().out
  ids = _ids(w)
  assert all(store.run_state(w, i)["state"] == "complete" for i in ids)
  assert os.getpid() not in {a["pid"] for i in ids for a in runner.attempts(w, i)}
  for i in ids:  # each run's own output in its log, none of another run's
    log = (w / "runs" / i / "train.log").read_text()
    assert f"{i}: complete" in log and all(f"{j}: complete" not in log for j in ids if j != i)
  assert os.environ.get("XLA_FLAGS")  # the workers saw the same 8 simulated devices


def test_a_runner_that_ignores_sigint_stops_with_its_workers(tmp_path, data_dir):
  # A background job's Ctrl-C to the group reaches only the workers: the runner sees their runs
  # end interrupted and stops too, starting none of the queued runs.
  w = tmp_path / "ladder"
  _interrupt_parallel(w, data_dir, "(1,2,3)", "ignored")
  states = [store.run_state(w, i)["state"] for i in _ids(w)]
  assert sorted(states) == ["interrupted", "interrupted", "pending"], states


def _wait_any(workers, limit_s: float = 120) -> list[str]:
  deadline, ended = time.time() + limit_s, []
  while not ended and time.time() < deadline:
    ended = workers.wait(timeout_s=1.0)
  return ended


def test_pool_worker_answers_and_dead_workers_are_replaced(tmp_path):
  w = tmp_path / "empty"
  (w / "runs" / "nope").mkdir(parents=True)
  workers = pool.Pool(w)
  workers.start("nope")
  workers.busy["nope"].kill()  # dies mid-run (still importing): seen as the run's end
  assert _wait_any(workers) == ["nope"] and not workers.busy and not workers.idle
  workers.start("nope")  # a fresh worker; no spec.json, so the run fails and the worker lives on
  assert _wait_any(workers) == ["nope"] and len(workers.idle) == 1
  log = (w / "runs" / "nope" / "train.log").read_text()
  assert "has no spec.json" in log and "Traceback" not in log
  (idle,) = workers.idle
  workers.start("nope")  # the same process takes the next run
  assert workers.busy["nope"] is idle
  assert _wait_any(workers) == ["nope"] and workers.idle == [idle]
  idle.kill()  # an idle worker that died (out of memory, say) is not handed the next run
  idle.wait()
  workers.start("nope")
  assert workers.busy["nope"] is not idle
  assert _wait_any(workers) == ["nope"] and len(workers.idle) == 1
  (last,) = workers.idle
  last.send_signal(signal.SIGINT)  # Ctrl-C reaches the idle worker too: it waits to be ended
  time.sleep(1.0)
  assert last.poll() is None
  workers.close()  # end of input ends a worker cleanly
  assert last.returncode == 0


# A pool worker whose run is signalled after its training loop, while it writes the record (the
# moment the runner's SIGTERM after a Ctrl-C can land): `serve` with a run that signals itself,
# then takes a while to finish and writes its record.
_SIGNALLED_RUN = """
import os, pathlib, signal, sys, time
from scaling.ladder import pool
def work(run_id):
  os.kill(os.getpid(), getattr(signal, sys.argv[2]))
  time.sleep(0.3)
  pathlib.Path(sys.argv[1], run_id).write_text("recorded")
  return {"state": "complete"}
sys.exit(pool.serve(work, lambda run_id: os.devnull))
"""


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_worker_signalled_outside_its_loop_writes_the_record_and_ends(tmp_path, signame):
  proc = subprocess.Popen([sys.executable, "-c", _SIGNALLED_RUN, str(tmp_path), signame],
                          cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  proc.stdin.write("r1\n")
  proc.stdin.flush()  # stdin stays open: the worker ends of its own accord
  assert json.loads(proc.stdout.readline()) == {"run_id": "r1", "state": "complete"}
  assert proc.wait(timeout=60) == 0
  assert (tmp_path / "r1").read_text() == "recorded"


_SIGNALLED_ONE_RUN = """
import os, pathlib, signal, sys, time
from scaling import cli
from scaling.ladder import runner
def work(workdir, run_id):
  os.kill(os.getpid(), getattr(signal, sys.argv[2]))
  time.sleep(0.3)
  pathlib.Path(workdir, run_id).write_text("recorded")
  return {"state": "complete"}
runner.work = work
sys.exit(cli.main(["ladder", "worker", sys.argv[1], "--run_id=r1"]))
"""


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_one_run_worker_signalled_outside_its_loop_writes_the_record(tmp_path, signame):
  """`ladder worker --run_id` (Slurm, TPU VMs) keeps a signal that lands outside the run's loop
  (here while the run writes its record) and ends as the run did, record written."""
  done = subprocess.run([sys.executable, "-c", _SIGNALLED_ONE_RUN, str(tmp_path), signame],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  assert "r1: complete" in done.stdout
  assert (tmp_path / "r1").read_text() == "recorded"


def test_a_kept_signal_stops_the_next_loop_and_sigterm_ends_an_idle_worker():
  from scaling.train.stop import Deferred, StopFlag

  saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    signals = Deferred().install()
    signals.busy = True
    os.kill(os.getpid(), signal.SIGTERM)  # while a run compiles: kept, not fatal
    assert signals.pending == signal.SIGTERM
    with StopFlag().installed() as flag:  # the run's loop starts stopped
      assert flag.signal == signal.SIGTERM
    signals.busy, signals.pending = False, None
    os.kill(os.getpid(), signal.SIGINT)  # idle: Ctrl-C is the runner's to act on
    assert signals.pending is None
    with pytest.raises(SystemExit):
      os.kill(os.getpid(), signal.SIGTERM)  # idle: nothing under way, so the worker ends
  finally:
    for s, handler in saved.items():
      signal.signal(s, handler)
