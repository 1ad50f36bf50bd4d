"""The Cloud TPU VM backend: `gcloud compute tpus tpu-vm ssh NAME --worker=all --command=...`.

Every worker of the named TPU VM (or pod slice) runs the same command; `scaling train` calls
`jax.distributed.initialize()` itself on a pod slice (JAX detects it), so the workers train each
run together, one run after another. With `ladder.tpu_vm.queued_resource`, a queued-resources
request for the slice is rendered first (Cloud TPU docs, "Manage queued resources":
`gcloud compute tpus queued-resources create`). Keep the workdir on `gs://` so every worker (and
you) sees the same run folders.

The runs go one after another in one `&&` chain, every wsd trunk before its cooldown branches
(`scaling.ladder.runner.ordered`), so a branch starts only after its trunk finished, checkpoint
at the fork step included; a trunk that fails stops the chain before its branches.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

from scaling.errors import ScalingError
from scaling.ladder.spec import Rung


def render(workdir, todo: list[Rung], tpu) -> list[list[str]]:
  """The gcloud command lines, in order, that train `todo` on the TPU VM `ladder.tpu_vm.name`."""
  if not tpu.name or not tpu.zone:
    raise ScalingError("the tpu-vm backend needs ladder.tpu_vm.name and ladder.tpu_vm.zone, "
                       "e.g. --config.ladder.tpu_vm.name=my-v5e-8 "
                       "--config.ladder.tpu_vm.zone=us-west4-a")
  common = [f"--zone={tpu.zone}"] + ([f"--project={tpu.project}"] if tpu.project else [])
  cmds = []
  if tpu.queued_resource:
    if not tpu.accelerator_type or not tpu.runtime_version:
      raise ScalingError("ladder.tpu_vm.queued_resource needs ladder.tpu_vm.accelerator_type "
                         "(e.g. v5litepod-8) and ladder.tpu_vm.runtime_version "
                         "(e.g. v2-alpha-tpuv5-lite)")
    cmds.append(["gcloud", "compute", "tpus", "queued-resources", "create", f"{tpu.name}-qr",
                 f"--node-id={tpu.name}", f"--accelerator-type={tpu.accelerator_type}",
                 f"--runtime-version={tpu.runtime_version}", *common]
                + (["--spot"] if tpu.spot else []))
  from scaling.ladder.runner import ordered

  workers = " && ".join(
      f"{tpu.python} -m scaling.cli ladder worker {shlex.quote(os.fspath(workdir))} "
      f"--run_id={shlex.quote(r.run_id)}" for r in ordered(todo))
  remote = f"cd {tpu.repo_dir}" + (f" && {tpu.setup}" if tpu.setup else "") + f" && {workers}"
  cmds.append(["gcloud", "compute", "tpus", "tpu-vm", "ssh", str(tpu.name), *common,
               "--worker=all", f"--command={remote}"])
  return cmds


def launch(workdir, todo: list[Rung], tpu, *, dry_run: bool = False, out=None) -> int:
  """Prints (dry run) or runs the rendered gcloud commands; returns an exit status."""
  out = out or sys.stdout
  if not todo:
    print("tpu-vm: nothing to run", file=out)
    return 0
  cmds = render(workdir, todo, tpu)
  for cmd in cmds:
    print(shlex.join(cmd), file=out)
  if dry_run:
    return 0
  if shutil.which("gcloud") is None:
    raise ScalingError("gcloud is not installed or not on PATH; install the Google Cloud CLI "
                       "(https://cloud.google.com/sdk/docs/install) or pass --dry_run to print "
                       "the commands")
  for cmd in cmds:
    code = subprocess.run(cmd).returncode
    if code != 0:
      return code
  return 0
