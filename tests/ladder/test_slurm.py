"""`--backend=slurm` end to end on a real single-node Slurm cluster on localhost: a 3-run job
array trains, results land, and a task cancelled with scancel is resubmitted alone."""

import json
import subprocess
import time

import pytest

from scaling import cli
from scaling.ladder import slurm, store
from tests.ladder.slurm_cluster import Cluster, Unavailable

pytestmark = pytest.mark.slow
TINY = "tests/ladder/tiny_ladder.py"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
  c = Cluster(tmp_path_factory.mktemp("slurm"))
  try:
    env = c.start()
  except Unavailable as e:
    pytest.skip(f"no local Slurm cluster: {e}")
  yield env
  c.stop()


def _wait_idle(workdir, env, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    states = slurm.task_states(workdir)
    if all(t["state"] not in slurm.ACTIVE for t in states.values()):
      return states
    time.sleep(1)
  q = subprocess.run(["squeue", "-r", "-t", "all"], capture_output=True, text=True, env=env)
  raise AssertionError(f"Slurm tasks still active after {timeout}s:\n{q.stdout}")


def _status(workdir, capsys):
  assert cli.main(["ladder", "status", str(workdir), "--json"]) == 0
  return {s["run_id"]: s for s in map(json.loads, capsys.readouterr().out.splitlines())}


def test_job_array_runs_and_a_cancelled_task_is_resubmitted_alone(cluster, tmp_path, data_dir,
                                                                   capsys, monkeypatch):
  for k, v in cluster.items():
    monkeypatch.setenv(k, v)
  w = tmp_path / "ladder"
  args = ["ladder", "run", TINY, f"--workdir={w}", "--backend=slurm",
          f"--config.run.data.data_dir={data_dir}", "--config.ladder.slurm.max_parallel=1"]
  assert cli.main(args) == 0
  assert "submitted job array" in capsys.readouterr().out
  (sub,) = slurm.submissions(w)
  assert len(sub["run_ids"]) == 3
  script = open(sub["script"]).read()
  assert "#SBATCH --array=0-2%1" in script and "#SBATCH --cpus-per-task=1" in script
  # Throttled to one task at a time, so the last task is still pending: cancel it.
  cancelled = sub["run_ids"][2]
  subprocess.run(["scancel", f"{sub['job_id']}_2"], check=True)
  _wait_idle(w, cluster)
  status = _status(w, capsys)
  assert status[cancelled]["state"] == "cancelled"
  assert status[cancelled]["job"] == f"{sub['job_id']}_2"
  assert [status[r]["state"] for r in sub["run_ids"][:2]] == ["complete", "complete"]

  assert cli.main(args) == 0
  assert "2 complete, 1 to run" in capsys.readouterr().out
  first, again = slurm.submissions(w)
  assert again["run_ids"] == [cancelled]
  _wait_idle(w, cluster)
  status = _status(w, capsys)
  assert all(s["state"] == "complete" for s in status.values()), status
  assert store.run_state(w, cancelled)["steps_done"] > 0
  assert cli.main(["results", "collect", str(w), f"--out={w}/results.csv"]) == 0
  assert len((w / "results.csv").read_text().splitlines()) == 4
  assert cli.main(args) == 0  # a third time: nothing to submit
  assert "nothing to submit" in capsys.readouterr().out


def test_branches_are_held_by_slurm_until_their_trunk_succeeds(cluster, tmp_path, data_dir,
                                                               capsys, monkeypatch):
  """A wsd ladder: the trunk's array first, its branches' array with afterok on the trunk task
  (no polling job); the branches start only after the trunk finished, from its checkpoints."""
  from scaling.ladder import results, runner
  from scaling.ladder.spec import expand
  from scaling.train.checkpoint import saved_steps
  from tests.helpers import load_config

  for k, v in cluster.items():
    monkeypatch.setenv(k, v)
  w = tmp_path / "wsd"
  args = ["ladder", "run", f"{TINY}:wsd", f"--workdir={w}", "--backend=slurm",
          f"--config.run.data.data_dir={data_dir}"]
  assert cli.main(args) == 0
  out = capsys.readouterr().out
  cfg = load_config(f"{TINY}:wsd")
  cfg.run.data.data_dir = data_dir
  trunk, *branches = expand(cfg)
  first, held = slurm.submissions(w)
  assert first["run_ids"] == [trunk.run_id] and first["dependency"] is None
  assert held["run_ids"] == [b.run_id for b in branches]
  task = f"{first['job_id']}_0"
  assert held["dependency"] == f"afterok:{task}" and f"after {task}" in out
  script = open(held["script"]).read()
  assert f"#SBATCH --dependency=afterok:{task}" in script
  assert "#SBATCH --kill-on-invalid-dep=yes" in script
  # Slurm itself holds the branches while the trunk is queued or running (the reason shows once
  # the scheduler has looked at them: sched_interval=1).
  deadline, seen = time.time() + 20, ""
  while time.time() < deadline and seen != "PENDING|Dependency\n" * 2:
    seen = subprocess.run(["squeue", "-h", "-r", "-j", held["job_id"], "-o", "%T|%r"],
                          capture_output=True, text=True, check=True).stdout
    time.sleep(0.5)
  assert seen == "PENDING|Dependency\n" * 2, seen
  assert slurm.task_states(w)[trunk.run_id]["state"] in slurm.ACTIVE  # the trunk still trains
  _wait_idle(w, cluster)
  status = _status(w, capsys)
  assert all(s["state"] == "complete" for s in status.values()), status
  trunk_done = (store.run_dir(w, trunk.run_id) / "result.json").stat().mtime
  assert all(runner.attempts(w, b.run_id)[0]["time"] > trunk_done for b in branches)
  assert {b.branch_step for b in branches} <= set(saved_steps(store.run_dir(w, trunk.run_id)))
  rows = results.gather(w).rows
  assert [(r["point"], r["parent_run_id"]) for r in rows] == [("cooldown", trunk.run_id)] * 2
  assert cli.main(args) == 0 and "nothing to submit" in capsys.readouterr().out
