"""`scaling eval RUN_DIR [--checkpoints=last|all] [--tasks=...] [--examples=N]`.

Scores a run's checkpoints (`scaling.evals.run.evaluate`) and appends one line per
`{step, tokens, task, metric, value, n}` to `RUN_DIR/evals.jsonl`; a rerun adds nothing. The
run's folder lock (the one ladders take, `scaling.ladder.store.locked`) is held meanwhile, so
an evaluation never races a ladder runner training or evaluating the same run.
"""

from __future__ import annotations

import logging
import sys

from absl import flags

from scaling.commands.common import command, parse
from scaling.errors import ScalingError

USAGE = ("scaling eval RUN_DIR [--checkpoints=last|all] [--tasks=default|validation,recall,"
         "addition,...] [--examples=256] [--json]")


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_enum("checkpoints", "last", ("last", "all"), "Score the newest checkpoint, or "
                    "every checkpoint the run kept.", flag_values=fv)
  flags.DEFINE_string("tasks", "default", "Comma-separated: validation (nll; excess over the "
                      "floor for synthetic data, bpb for text), recall, addition (every k), "
                      "addition<k>; default = validation and the language's tasks.",
                      flag_values=fv)
  flags.DEFINE_integer("examples", 256, "Problems per synthetic task.", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_bool("json", False, "Print the lines added as JSON lines.", flag_values=fv)


@command
def main(argv: list[str]) -> int:
  parsed = parse(argv, _define, prog="scaling eval", usage=USAGE, nargs=(1, 1),
                 description="Score a run's checkpoints on held-out data (nll, bpb) and the "
                 "synthetic tasks (nll, token accuracy, exact match) into RUN_DIR/evals.jsonl.")
  fv, (workdir,) = parsed.fv, parsed.args
  import json

  from scaling import storage
  from scaling.evals import records
  from scaling.evals.run import evaluate
  from scaling.ladder import store

  storage.check_workdir(workdir)
  if not storage.Path(workdir).is_dir():
    raise ScalingError(f"{workdir}: no such run folder; pass a `scaling train` workdir or "
                       "LADDER/runs/<run_id>")
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  with store.locked(workdir) as got:
    if not got:
      owner = store.lock_owner(workdir) or {}
      raise ScalingError(f"{workdir} is held by {owner.get('host')} pid {owner.get('pid')} (a "
                         "ladder runner training or evaluating it); run again when it is done")
    out = evaluate(workdir, checkpoints=fv["checkpoints"].value, tasks_arg=fv["tasks"].value,
                   examples=fv["examples"].value)
  if fv["json"].value:
    for line in out.added:
      print(json.dumps(line))
  else:
    for line in out.added:
      print(f"step {line['step']:>7d}  {line['task']:>12s}/{line['metric']:<15s} "
            f"{line['value']:.6g}  (n={line['n']})")
  print(f"{len(out.added)} lines added to {workdir}/{records.EVALS} from {len(out.steps)} "
        f"checkpoint(s); {out.skipped} already there", file=sys.stderr)
  return 0
