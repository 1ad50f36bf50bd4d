"""`scaling train --config=configs/dense.py:tiny --workdir=DIR [--config.train.steps=...]`.

Trains one run into DIR (resuming when DIR has checkpoints) and prints the run record's summary.
With `--branch_from=TRUNK_DIR [--branch_step=K]` the run is a cooldown branch of that trunk: it
starts from the trunk's checkpoint at step K, bitwise where the trunk was (scaling.train.fork).
"""

from __future__ import annotations

import json
import logging

from absl import flags

from scaling.commands.common import command, parse


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "Run directory (created; resumed when it has "
                      "checkpoints).", flag_values=fv)
  flags.DEFINE_string("branch_from", None, "A trunk's run folder (a constant or wsd run): train "
                      "this run as its cooldown branch, starting from the trunk's checkpoint at "
                      "--branch_step.", flag_values=fv)
  flags.DEFINE_integer("branch_step", None, "The trunk step to fork at (default: this run's "
                       "decay start, steps - decay_fraction x steps).", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_bool("json", False, "Print the whole run record as JSON.", flag_values=fv)
  flags.DEFINE_string("coordinator", None, "host:port of process 0 for multi-host runs; "
                      "TPU pods and Slurm are detected without it.", flag_values=fv)
  flags.DEFINE_integer("num_processes", None, "Processes in a multi-host run.", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_integer("process_id", None, "This process's index in a multi-host run.",
                       lower_bound=0, flag_values=fv)


USAGE = ("scaling train --config=FILE[:PRESET] --workdir=DIR [--config.a.b=VALUE] [--json] "
         "[--branch_from=TRUNK_DIR [--branch_step=K]] "
         "[--coordinator=HOST:PORT --num_processes=N --process_id=I]")


@command
def main(argv: list[str]) -> int:
  fv = parse(argv, _define, prog="scaling train", usage=USAGE, config=True,
             description="Train one run into --workdir (resuming from its newest good "
             "checkpoint) and print the run record's summary.").fv
  from scaling.errors import ScalingError

  if not fv["workdir"].value:
    raise ScalingError("--workdir is required, e.g. --workdir=/tmp/run1")
  cfg = fv["config"].value
  if fv["branch_step"].value is not None and not fv["branch_from"].value:
    raise ScalingError("--branch_step needs --branch_from=TRUNK_DIR, the run to fork from")
  if fv["branch_from"].value:
    from scaling.train.fork import fork

    cfg = fork(cfg, fv["branch_from"].value, fv["branch_step"].value,
               workdir=fv["workdir"].value)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                      force=True)  # absl may have installed its own handler first
  from scaling.parallel.distributed import maybe_initialize
  from scaling.train.loop import train

  maybe_initialize(fv["coordinator"].value, fv["num_processes"].value, fv["process_id"].value)
  result = train(cfg, fv["workdir"].value)
  if fv["json"].value:
    print(json.dumps(result, indent=2, sort_keys=True, default=str))
  else:
    print(f"{result['status']}: {result['run_id']} N={result['params_non_embedding']:,} "
          f"D={result['tokens']:,} C={result['flops']:.3e} ({result['flops_method']}) "
          f"final eval loss {result['final_eval_loss']} (entropy floor "
          f"{result['entropy_floor']}) in {result['wall_time_s']:.1f}s")
  return 0 if result["status"] == "complete" else 1
