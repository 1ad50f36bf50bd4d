"""The `scaling` console script: a thin dispatcher to one function per sub-command.

Each sub-command is `module:function`, where the function takes the arguments after the
sub-command name and returns an exit status. Modules are imported lazily so `scaling fit`
never pays for JAX start-up it does not need.
"""

from __future__ import annotations

import importlib
import os
import sys

from scaling.commands.common import HelpShown
from scaling.errors import ScalingError

COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("scaling.commands.info", "Parameter, FLOP and memory counts for a config."),
    "train": ("scaling.commands.train", "Train one run into --workdir."),
    "ladder": ("scaling.commands.ladder", "Show, run or inspect a ladder of runs."),
    "results": ("scaling.commands.results", "Collect run records into one table."),
    "eval": ("scaling.commands.eval", "Score a run's checkpoints into RUN_DIR/evals.jsonl."),
    "fit": ("scaling.commands.fit:fit_main", "Fit a scaling law to a results table."),
    "plan": ("scaling.commands.fit:plan_main",
             "Compute-optimal model size and tokens for a budget."),
    "export": ("scaling.commands.export", "Write a run as a Hugging Face checkpoint."),
    "import": ("scaling.commands.import_hf", "Start a run from a Hugging Face checkpoint."),
    "score": ("scaling.commands.score", "Per-token NLL of a token sequence under a run."),
}


def _usage() -> str:
  lines = ["usage: scaling <command> [flags]", "", "commands:"]
  lines += [f"  {name:8s} {help_}" for name, (_, help_) in COMMANDS.items()]
  lines += ["", "`scaling <command> --help` lists a command's flags."]
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  """Runs the sub-command named in `argv[0]` with the remaining arguments."""
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(_usage())
    return 0
  name, rest = argv[0], list(argv[1:])
  if name not in COMMANDS:
    print(f"error: unknown command {name!r}; choose one of {', '.join(COMMANDS)}",
          file=sys.stderr)
    return 2
  target = COMMANDS[name][0]
  module_name, _, func_name = target.partition(":")
  try:
    module = importlib.import_module(module_name)
    return int(getattr(module, func_name or "main")(rest) or 0)
  except HelpShown:
    return 0
  except ScalingError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except ModuleNotFoundError as e:
    if e.name and e.name.startswith("scaling"):
      print(f"error: command {name!r} is not available in this version ({e.name} missing)",
            file=sys.stderr)
      return 2
    raise


def run() -> None:
  """Console-script entry point."""
  try:
    status = main(sys.argv[1:])
    sys.stdout.flush()
  except BrokenPipeError:  # `scaling ... | head`: the reader left; that is not an error
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    status = 0
  sys.exit(status)


if __name__ == "__main__":
  run()
