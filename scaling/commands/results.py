"""`scaling results collect DIR [--out results.csv] [--all]`: the table `scaling fit` reads.

Gathers every `DIR/runs/<run_id>/result.json` into one table (columns in
`scaling.ladder.results.COLUMNS` and the README). `--out` ending in `.jsonl` or `.json` writes
JSON lines, anything else CSV; without `--out` the CSV goes to stdout. Only complete runs are
listed unless `--all`.
"""

from __future__ import annotations

import sys

from absl import flags

from scaling.commands.common import parse
from scaling.errors import ScalingError

USAGE = "usage: scaling results collect DIR [--out results.csv|results.jsonl] [--all]"


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("out", None, "Table to write (.csv, or .jsonl/.json for JSON lines); "
                      "default: CSV on stdout.", flag_values=fv)
  flags.DEFINE_bool("all", False, "Also list runs that are not complete (failed, interrupted).",
                    flag_values=fv)


def main(argv: list[str]) -> int:
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(USAGE)
    return 0
  if argv[0] != "collect":
    raise ScalingError(f"unknown results command {argv[0]!r}; {USAGE}")
  positional = [a for a in argv[1:] if not a.startswith("-")]
  fv = parse([a for a in argv[1:] if a.startswith("-")], _define, needs_config=False)
  if len(positional) != 1:
    raise ScalingError(f"scaling results collect needs exactly one ladder directory; {USAGE}")
  from scaling.ladder import results

  rows, skipped = results.collect(positional[0], include_incomplete=fv["all"].value)
  note = f" ({skipped} incomplete runs left out; --all lists them)" if skipped else ""
  if fv["out"].value:
    results.write(rows, fv["out"].value)
    print(f"{len(rows)} runs -> {fv['out'].value}{note}")
  else:
    sys.stdout.write(results.to_text(rows, "csv"))
    if note:
      print(note.strip(), file=sys.stderr)
  return 0
