"""The Slurm backend: one `sbatch` job array per `ladder run`, one task per pending run.

Each task runs `scaling ladder worker DIR --run_id=<id>` (resuming the run from its checkpoints,
under the run's lock). Submissions are recorded in `DIR/slurm/submissions.json` so that
`ladder status` can map array tasks back to runs, and the next `ladder run` resubmits only runs
that are neither complete nor still queued or running: a cancelled or failed task is resubmitted
alone.

Task states come from `squeue -t all` (Slurm keeps finished jobs for `MinJobAge`, 300 s by
default), then `sacct` where accounting is enabled, else from the run folder: a task that left
the queue without starting was cancelled; one that stopped with a checkpoint after SIGTERM
(scancel, time limit, preemption) is `interrupted`.

Cooldown branches (wsd sweeps) are submitted in the same `ladder run` as their trunks, one job
array per trunk, held by Slurm itself until the trunk's task succeeds
(`--dependency=afterok:<job>_<task>`, with `--kill-on-invalid-dep=yes` so that a failed trunk
cancels its branches instead of leaving them pending; the next `ladder run` resubmits both).
Nothing polls: a branch whose trunk is already complete joins the first array, and one whose
trunk is still queued from an earlier `ladder run` depends on that task.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time

from scaling.errors import ScalingError
from scaling.ladder import store
from scaling.ladder.spec import Rung

SUBMISSIONS = "submissions.json"
ACTIVE = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED")


def _slurm_dir(workdir) -> store.epath.Path:
  return store.Path(workdir) / "slurm"


def submissions(workdir) -> list[dict]:
  return (store.read_json(_slurm_dir(workdir) / SUBMISSIONS) or {}).get("submissions", [])


def render_script(workdir, name: str, run_ids: list[str], slurm, *, python: str | None = None,
                  chdir: str | None = None, dependency: str | None = None) -> str:
  """The sbatch job-array script for `run_ids` with the resources in `ladder.slurm`;
  `dependency` (e.g. `afterok:123_0`) holds the array until that job succeeds."""
  python = python or sys.executable
  chdir = chdir or os.getcwd()
  logs = _slurm_dir(workdir) if store.is_local(workdir) else "slurm-logs"
  array = f"0-{len(run_ids) - 1}" + (f"%{slurm.max_parallel}" if slurm.max_parallel else "")
  lines = ["#!/bin/bash", f"#SBATCH --job-name=scaling-{name}", f"#SBATCH --array={array}",
           f"#SBATCH --output={logs}/%A_%a.out", f"#SBATCH --chdir={chdir}",
           f"#SBATCH --cpus-per-task={int(slurm.cpus_per_task)}"]
  if slurm.partition:
    lines.append(f"#SBATCH --partition={slurm.partition}")
  if slurm.gpus_per_task:
    lines.append(f"#SBATCH --gpus-per-task={int(slurm.gpus_per_task)}")
  if slurm.mem:
    lines.append(f"#SBATCH --mem={slurm.mem}")
  if slurm.time:
    lines.append(f"#SBATCH --time={slurm.time}")
  if dependency:
    lines += [f"#SBATCH --dependency={dependency}", "#SBATCH --kill-on-invalid-dep=yes"]
  lines += [f"#SBATCH {x.strip()}" for x in str(slurm.extra).split(";") if x.strip()]
  lines += ["set -euo pipefail"]
  if slurm.setup:
    lines.append(str(slurm.setup))
  lines += ["RUN_IDS=(" + " ".join(shlex.quote(r) for r in run_ids) + ")",
            # exec: the worker itself receives scancel's SIGTERM, checkpoints and stops cleanly.
            f"exec {shlex.quote(python)} -m scaling.cli ladder worker "
            f"{shlex.quote(os.fspath(workdir))} --run_id=\"${{RUN_IDS[$SLURM_ARRAY_TASK_ID]}}\"",
            ""]
  return "\n".join(lines)


def _run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
  if shutil.which(cmd[0]) is None:
    raise ScalingError(f"`{cmd[0]}` is not installed or not on PATH; the slurm backend needs "
                       "the Slurm client tools (Debian: apt-get install slurm-client)")
  return subprocess.run(cmd, capture_output=True, text=True, input=stdin)


def task_states(workdir) -> dict[str, dict]:
  """run_id -> {job, state} for the newest submission of each run, from squeue then sacct."""
  subs = submissions(workdir)
  latest: dict[str, tuple[str, int]] = {}
  for s in subs:
    for i, rid in enumerate(s["run_ids"]):
      latest[rid] = (str(s["job_id"]), i)
  if not latest:
    return {}
  jobs = sorted({j for j, _ in latest.values()})
  states: dict[str, str] = {}
  if shutil.which("squeue"):
    q = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(jobs), "-o", "%i|%T"],
                       capture_output=True, text=True)
    if q.returncode == 0:
      states.update(_parse_pairs(q.stdout))
  if shutil.which("sacct"):
    q = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(jobs), "-o", "JobID,State"],
                       capture_output=True, text=True)
    if q.returncode == 0:
      for k, v in _parse_pairs(q.stdout).items():
        states.setdefault(k, v)
  out = {}
  for rid, (job, i) in latest.items():
    out[rid] = {"job": f"{job}_{i}", "state": states.get(f"{job}_{i}")}
  return out


def _parse_pairs(text: str) -> dict[str, str]:
  out = {}
  for line in text.splitlines():
    if "|" in line:
      k, v = line.split("|", 1)
      out[k.strip()] = v.strip().split()[0] if v.strip() else ""
  return out


def submit(workdir, name: str, todo: list[Rung], slurm, *, dry_run: bool = False,
           out=None) -> int:
  """Submits the runs in `todo` that are not queued or running already: one job array for the
  runs that can start now, then one per trunk for its branches, held until the trunk succeeds."""
  from scaling.ladder.runner import ready_rungs

  out = out or sys.stdout
  tasks = task_states(workdir)
  queued = {rid: t["job"] for rid, t in tasks.items() if t["state"] in ACTIVE}
  pending = [r for r in todo if r.run_id not in queued
             and store.run_state(workdir, r.run_id)["state"] != "running"]
  skipped = len(todo) - len(pending)
  if skipped:
    print(f"slurm: {skipped} runs are already queued or running; not resubmitting them",
          file=out)
  if not pending:
    print("slurm: nothing to submit", file=out)
    return 0
  now = ready_rungs(workdir, pending)
  held: dict[str, list[Rung]] = {}
  for r in pending:
    if r not in now:
      held.setdefault(r.parent, []).append(r)
  job = _submit_array(workdir, name, [r.run_id for r in now], slurm, dry_run=dry_run,
                      out=out) if now else None
  where = {r.run_id: f"{job}_{i}" for i, r in enumerate(now)}
  for parent, group in held.items():
    dep = where.get(parent) or queued.get(parent)
    if dep is None:
      state = store.run_state(workdir, parent)["state"]
      print(f"slurm: not submitting the {len(group)} branches of trunk {parent}: it is {state}, "
            "not queued, and has not saved their fork checkpoints; run `scaling ladder run` "
            "again once it has (another runner may hold it)", file=out)
      continue
    _submit_array(workdir, name, [r.run_id for r in group], slurm, dependency=f"afterok:{dep}",
                  dry_run=dry_run, out=out)
  return 0


def _submit_array(workdir, name: str, ids: list[str], slurm, *, dependency: str | None = None,
                  dry_run: bool = False, out) -> str:
  """sbatch of one job array for `ids`, recorded in submissions.json; returns its job id
  (`<array N>` in a dry run, which submits and records nothing)."""
  sdir = _slurm_dir(workdir)
  sdir.mkdir(parents=True, exist_ok=True)
  subs = submissions(workdir)
  stamp = time.strftime("%Y%m%d-%H%M%S")
  n = len(subs)
  while (sdir / f"array-{stamp}-{n}.sh").exists():  # a dry run left one; arrays of one run
    n += 1
  script = sdir / f"array-{stamp}-{n}.sh"
  text = render_script(workdir, name, ids, slurm, dependency=dependency)
  script.write_text(text)
  # sbatch reads a local script file; one kept on gs:// is handed over on stdin instead.
  cmd = ["sbatch", "--parsable"] + ([os.fspath(script)] if store.is_local(script) else [])
  after = f" after {dependency.split(':', 1)[1]}" if dependency else ""
  print(f"slurm: {len(ids)} runs{after} -> {shlex.join(cmd)}", file=out)
  if dry_run:
    print(script.read_text(), file=out)
    return f"<array {n}>"
  proc = _run(cmd, None if store.is_local(script) else text)
  if proc.returncode != 0:
    raise ScalingError(f"sbatch failed: {proc.stderr.strip() or proc.stdout.strip()}; check "
                       "ladder.slurm (partition, resources) and that slurmctld is reachable")
  job_id = proc.stdout.strip().split(";")[0]
  subs.append({"job_id": job_id, "run_ids": ids, "script": os.fspath(script),
               "time": time.time(), "dependency": dependency})
  store.write_json(sdir / SUBMISSIONS, {"submissions": subs})
  print(f"slurm: submitted job array {job_id} ({len(ids)} tasks{after}); follow it with "
        f"`scaling ladder status {workdir}`", file=out)
  return job_id


def merge_state(folder: dict, task: dict | None) -> str:
  """One state for `ladder status` from the run folder and the Slurm task (may be None)."""
  if folder["state"] in ("complete", "running") or task is None:
    return folder["state"]
  slurm = (task.get("state") or "").upper()
  if slurm in ACTIVE:
    return slurm.lower()
  if slurm in ("CANCELLED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
               "BOOT_FAIL", "DEADLINE"):
    return slurm.lower()
  if folder["state"] == "pending":
    return "cancelled"  # left the queue without ever starting
  return folder["state"]
