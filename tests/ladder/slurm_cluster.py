"""A real single-node Slurm cluster on localhost for the tests (Debian `slurmctld slurmd munge`).

`start(tmp)` launches munged, slurmctld and slurmd with a generated slurm.conf on free ports,
state under `tmp`, and waits until the node is idle; it returns the environment (SLURM_CONF)
clients need, or raises `Unavailable` with the reason it cannot start. `stop` ends exactly the
daemons it started (by pid). Settings that work in a container: root as
SlurmUser, proctrack/linuxproc and task/none (no cgroups in containers), cons_tres by core.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel")


class Unavailable(RuntimeError):
  """Slurm cannot run here; the message says why."""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _which(name: str) -> str | None:
  return shutil.which(name) or next(
      (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)


class Cluster:
  def __init__(self, tmp: pathlib.Path):
    self.tmp = pathlib.Path(tmp)
    self.pids: list[int] = []
    self.env: dict[str, str] = {}

  def start(self, timeout: float = 60.0) -> dict[str, str]:
    missing = [d for d in DAEMONS if _which(d) is None]
    if missing:
      raise Unavailable(f"Slurm is not installed ({', '.join(missing)} missing; Debian: "
                        "apt-get install slurmctld slurmd slurm-client munge)")
    if os.geteuid() != 0:
      raise Unavailable("a local Slurm cluster needs root (SlurmUser=root, munged)")
    t = self.tmp
    for sub in ("state", "spool", "munge"):
      (t / sub).mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    conf = t / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=scalingtest", f"SlurmctldHost={host}", "SlurmUser=root",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}", "AuthType=auth/munge",
        f"StateSaveLocation={t}/state", f"SlurmdSpoolDir={t}/spool",
        f"SlurmctldPidFile={t}/slurmctld.pid", f"SlurmdPidFile={t}/slurmd.pid",
        f"SlurmctldLogFile={t}/slurmctld.log", f"SlurmdLogFile={t}/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill", "ReturnToService=2", "MpiDefault=none",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt", f"JobCompLoc={t}/jobcomp.txt",
        "SchedulerParameters=sched_interval=1", "MinJobAge=600", "KillWait=10",
        f"NodeName={host} CPUs={cpus} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
    self.env = {"SLURM_CONF": str(conf)}
    env = dict(os.environ, **self.env)
    socket_path = t / "munge" / "munge.socket"
    munge = subprocess.run(
        [_which("munged"), "--force", f"--socket={socket_path}", f"--pid-file={t}/munged.pid",
         f"--log-file={t}/munged.log", f"--seed-file={t}/munge.seed"],
        capture_output=True, text=True)
    if munge.returncode != 0:
      raise Unavailable(f"munged would not start: {munge.stderr.strip()}")
    self._pidfile(t / "munged.pid")
    # Slurm's auth/munge plugin reads the socket path from AuthInfo.
    with conf.open("a") as f:
      f.write(f"AuthInfo=socket={socket_path}\n")
    for daemon in ("slurmctld", "slurmd"):
      proc = subprocess.run([_which(daemon), "-f", str(conf)], env=env, capture_output=True,
                            text=True)
      if proc.returncode != 0:
        self.stop()
        raise Unavailable(f"{daemon} would not start: {proc.stderr.strip()}")
      self._pidfile(t / f"{daemon}.pid")
    deadline = time.time() + timeout
    state = ""
    while time.time() < deadline:
      q = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
      state = q.stdout.strip()
      if q.returncode == 0 and state.startswith("idle"):
        return self.env
      time.sleep(0.5)
    logs = "".join((t / f"{d}.log").read_text()[-500:] for d in ("slurmctld", "slurmd")
                   if (t / f"{d}.log").exists())
    self.stop()
    raise Unavailable(f"the Slurm node did not become idle (state {state!r}): {logs}")

  def _pidfile(self, path: pathlib.Path, wait: float = 10.0) -> None:
    deadline = time.time() + wait
    while time.time() < deadline:
      if path.exists() and path.read_text().strip():
        self.pids.append(int(path.read_text().split()[0]))
        return
      time.sleep(0.1)

  def stop(self) -> None:
    for pid in reversed(self.pids):
      try:
        os.kill(pid, signal.SIGTERM)
      except ProcessLookupError:
        pass
    self.pids = []
