"""`scaling ladder show|run|status|worker`: expand, launch and inspect a ladder of runs.

  scaling ladder show CONFIG [--config.ladder.x=...] [--json]
  scaling ladder run CONFIG --workdir=DIR [--backend=local|slurm|tpu-vm] [--parallel=N]
                     [--dry_run]
  scaling ladder status DIR [--json]
  scaling ladder worker DIR --run_id=ID      (what every backend runs for one run)

CONFIG is a ladder config file and preset (`configs/ladders/cpu_demo.py`, or `FILE:ARG`); it may
also be given as `--config=CONFIG`, and any field overridden with `--config.a.b=value`.
"""

from __future__ import annotations

import functools
import json
import logging
import sys

from absl import flags

from scaling.commands.common import command, parse
from scaling.errors import ScalingError

USAGE = ("usage: scaling ladder show CONFIG | run CONFIG --workdir=DIR [--backend=local|slurm|"
         "tpu-vm] [--parallel=N] [--dry_run] | status DIR | worker DIR --run_id=ID\n"
         "(`scaling ladder SUBCOMMAND --help` lists a sub-command's flags)")
BACKENDS = ("local", "slurm", "tpu-vm")
SUBCOMMANDS = {
    "show": ("scaling ladder show CONFIG [--config.ladder.x=VALUE] [--json]",
             "Expand a ladder config into its runs and print the table; trains nothing."),
    "run": ("scaling ladder run CONFIG --workdir=DIR [--backend=local|slurm|tpu-vm] "
            "[--parallel=N] [--dry_run]", "Launch every run of the ladder that is not complete."),
    "status": ("scaling ladder status DIR [--json]", "The state of every run of a ladder."),
    "worker": ("scaling ladder worker DIR --run_id=ID | --serve",
               "Train one run of a ladder (what every backend runs); with --serve, train each "
               "run id read from stdin (the local backend's --parallel workers)."),
}


def _define(sub: str):
  """The flags of one sub-command."""

  def define(fv: flags.FlagValues) -> None:
    if sub in ("run", "status", "worker"):
      flags.DEFINE_string("workdir", None, "Ladder directory: DIR/runs/<run_id>/ per run "
                          "(local path or gs://); status and worker also take it as DIR.",
                          flag_values=fv)
    if sub == "run":
      flags.DEFINE_enum("backend", "local", BACKENDS, "Where runs train.", flag_values=fv)
      flags.DEFINE_integer("parallel", 1, "local backend: runs at once, in as many worker "
                           "processes (1: one after another in this process).", lower_bound=1,
                           flag_values=fv)
      flags.DEFINE_bool("dry_run", False, "Print what would be launched (worker commands, "
                        "sbatch script, gcloud commands) without launching.", flag_values=fv)
    if sub in ("show", "status"):
      flags.DEFINE_bool("json", False, "Print JSON lines instead of a table.", flag_values=fv)
    if sub == "worker":
      flags.DEFINE_string("run_id", None, "The run to train.", flag_values=fv)
      flags.DEFINE_bool("serve", False, "Train each run id read from stdin, one a line, and "
                        "answer a JSON line on stdout as each ends (what `ladder run "
                        "--parallel=N` starts).", flag_values=fv)

  return define


@command
def main(argv: list[str]) -> int:
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(USAGE)
    return 0
  sub, argv = argv[0], list(argv[1:])
  if sub not in SUBCOMMANDS:
    raise ScalingError(f"unknown ladder command {sub!r}; {USAGE.splitlines()[0]}")
  usage, description = SUBCOMMANDS[sub]
  prog = f"scaling ladder {sub}"
  if sub in ("show", "run"):
    fv = parse(argv, _define(sub), prog=prog, usage=usage, description=description,
               config=True, config_positional=True).fv
    return _show(fv) if sub == "show" else _run(fv)
  parsed = parse(argv, _define(sub), prog=prog, usage=usage, description=description,
                 nargs=(0, 1))
  fv = parsed.fv
  workdir = parsed.args[0] if parsed.args else fv["workdir"].value
  if not workdir:
    raise ScalingError(f"scaling ladder {sub} needs the ladder directory, e.g. "
                       f"`scaling ladder {sub} runs/demo`")
  return _status(fv, workdir) if sub == "status" else _worker(fv, workdir)


def _expand(fv):
  from scaling.ladder.spec import expand

  return expand(fv["config"].value)


def _human(n: float | None) -> str:
  if n is None:
    return "-"
  for unit, scale in (("e18", 1e18), ("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
    if abs(n) >= scale and unit != "e18":
      return f"{n / scale:.3g}{unit}"
  return f"{n:.3g}"


def _duration(s: float | None) -> str:
  if s is None:
    return "-"
  for unit, scale in (("d", 86400), ("h", 3600), ("m", 60)):
    if s >= scale:
      return f"{s / scale:.1f}{unit}"
  return f"{s:.0f}s"


def _table(header: list[str], rows: list[list[str]]) -> str:
  widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
            for i, h in enumerate(header)]
  lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
  lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
  return "\n".join(lines)


def _grouped(rungs: list) -> list:
  """The rungs in ladder order, each wsd trunk followed by its branches."""
  out = []
  for r in rungs:
    if r.parent is None:
      out.append(r)
      out += [b for b in rungs if b.parent == r.run_id]
  return out + [r for r in rungs if r not in out]


def _fork(r) -> str:
  return {"trunk": "trunk", "branch": f"@{r.branch_step}"}.get(r.role, "-")


def _show(fv) -> int:
  rungs = _grouped(_expand(fv))
  lad = fv["config"].value.ladder
  if fv["json"].value:
    for r in rungs:
      print(json.dumps(r.row(), sort_keys=True))
    return 0
  # C is the (N, D) point's compute; a branch spends only its steps after the fork.
  rows = [[r.run_id, f"{r.sweep}/{r.label}", _fork(r), r.row()["shape"],
           _human(r.counts["params_non_embedding"]), _human(r.counts["params_active"]),
           _human(r.counts["tokens"]), f"{r.counts['flops']:.3g}", f"{r.spent_flops:.3g}",
           f"{r.budget:.3g}" if r.budget else "-", str(r.config.train.steps),
           str(r.config.train.global_batch), f"{r.config.train.lr:.3g}",
           _duration(r.est_time_s)] for r in rungs]
  print(_table(["run_id", "rung", "fork", "shape", "N", "N_active", "D", "C", "C_spent",
                "budget", "steps", "batch", "lr", "est_time"], rows))
  total = sum(r.est_time_s for r in rungs)
  print(f"{len(rungs)} runs, {sum(r.spent_flops for r in rungs):.3g} FLOPs; estimated "
        f"{_duration(total)} on {lad.devices} x {lad.hardware} at MFU {lad.mfu}")
  trunks = [r for r in rungs if r.role == "trunk"]
  if trunks:
    branches = [r for r in rungs if r.role == "branch"]
    spent = sum(r.spent_flops for r in trunks + branches)
    alone = sum(r.independent_flops for r in branches)
    print(f"wsd: {len(trunks)} trunks and {len(branches)} cooldown branches spend {spent:.3g} "
          f"FLOPs for {len(branches)} (N, D) points; the same grid as independent runs: "
          f"{alone:.3g} FLOPs ({spent / alone:.0%})")
  return 0


def _run(fv) -> int:
  from scaling.ladder import runner

  workdir = fv["workdir"].value
  if not workdir:
    raise ScalingError("--workdir is required, e.g. --workdir=runs/demo")
  backend = fv["backend"].value
  if backend not in BACKENDS:
    raise ScalingError(f"--backend={backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
  rungs = _expand(fv)  # every rung is validated before anything is launched
  lad = fv["config"].value.ladder
  if fv["dry_run"].value and backend == "local":
    for r in runner.ordered(rungs):
      print(" ".join(runner.worker_command(workdir, r.run_id)))
    return 0
  from scaling import storage

  storage.check_workdir(workdir)  # a file in the way or an unreachable bucket: before the manifest
  todo = runner.prepare(workdir, str(lad.name), rungs)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  if todo and (backend == "slurm" or fv["parallel"].value > 1) and not fv["dry_run"].value:
    runner.prepare_data(todo)  # once, before several tasks would race to prepare it
  if backend == "local":
    return runner.run_local(workdir, rungs, todo, parallel=fv["parallel"].value)
  if backend == "slurm":
    from scaling.ladder import slurm

    print(f"ladder: {len(rungs)} runs, {len(rungs) - len(todo)} complete, {len(todo)} to run")
    return slurm.submit(workdir, str(lad.name), todo, lad.slurm, dry_run=fv["dry_run"].value)
  from scaling.ladder import tpu_vm

  return tpu_vm.launch(workdir, todo, lad.tpu_vm, dry_run=fv["dry_run"].value)


def _status(fv, workdir: str) -> int:
  from scaling.ladder import slurm, store

  manifest = store.read_manifest(workdir)
  tasks = slurm.task_states(workdir)
  out = []
  for row in manifest["runs"]:
    s = store.run_state(workdir, row["run_id"])
    task = tasks.get(row["run_id"])
    s["state"] = slurm.merge_state(s, task)
    s["job"] = task["job"] if task else None
    s.update(rung=f"{row['sweep']}/{row['label']}", steps=row["steps"])
    out.append(s)
  from scaling.ladder import tuning

  warnings = tuning.mark_status(manifest["runs"], out)  # best variant per rung, under-tuned
  if fv["json"].value:
    for s in out:
      print(json.dumps(s, sort_keys=True))
    return 0
  rows = [[s["run_id"], s["rung"], s["state"], f"{s['steps_done']}/{s['steps']}",
           f"{s['eval_loss']:.4f}" if s["eval_loss"] is not None else "-",
           _duration(s["wall_time_s"]), s["job"] or "-", s["tune"]] for s in out]
  print(_table(["run_id", "rung", "state", "steps", "eval_loss", "wall", "job", "tune"], rows))
  for line in warnings:
    print(line, file=sys.stderr)
  counts: dict[str, int] = {}
  for s in out:
    counts[s["state"]] = counts.get(s["state"], 0) + 1
  print(f"{manifest['name']}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
  return 0


def _worker(fv, workdir: str) -> int:
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                      stream=sys.stdout)
  run_id = fv["run_id"].value
  if fv["serve"].value:
    if run_id:
      raise ScalingError("scaling ladder worker: give --run_id=ID or --serve, not both")
    from scaling.ladder import pool, runner
    from scaling.train.programs import Programs

    # One worker trains run after run: the rungs of one shape share their jitted programs.
    return pool.serve(functools.partial(runner.work, workdir, programs=Programs()),
                      functools.partial(runner.log_path, workdir))
  if not run_id:
    raise ScalingError("scaling ladder worker needs --run_id=ID (see `scaling ladder status`)")
  from scaling.ladder import runner
  from scaling.parallel.distributed import maybe_initialize
  from scaling.train import stop
  maybe_initialize()  # pod slices and multi-task Slurm steps are detected
  # A scheduler's SIGTERM (preemption, scancel) landing while the run compiles or writes its
  # record is kept, not a death mid-record that leaves its lock behind.
  state = stop.Deferred().install().around(lambda: runner.work(workdir, run_id))
  print(f"{run_id}: {state['state']}")
  return 0 if state["state"] == "complete" else 1
