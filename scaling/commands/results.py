"""`scaling results collect DIR [--out results.csv] [--all] [--strict]`: the table `scaling fit`
reads.

Gathers every `DIR/runs/<run_id>/result.json` into one table (columns in
`scaling.ladder.results.COLUMNS` and the README). `--out` ending in `.jsonl` or `.json` writes
JSON lines, anything else CSV; without `--out` the CSV goes to stdout. Only complete runs are
listed unless `--all`, which also lists every eval of a wsd trunk as a `mid-run` row
(`scaling fit` leaves those out unless `--filter point=mid-run`). An unreadable `result.json`
is named on stderr and counted in the summary line; `--strict` makes it an error.
"""

from __future__ import annotations

import sys

from absl import flags

from scaling.commands.common import command, parse
from scaling.errors import ScalingError

USAGE = ("scaling results collect DIR [--out results.csv|results.jsonl] [--all] [--strict]")
PROG = "scaling results collect"


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("out", None, "Table to write (.csv, or .jsonl/.json for JSON lines); "
                      "default: CSV on stdout.", flag_values=fv)
  flags.DEFINE_bool("all", False, "Also list runs that are not complete (failed, interrupted) "
                    "and the mid-run evals of wsd trunks.", flag_values=fv)
  flags.DEFINE_bool("strict", False, "An unreadable result.json is an error (exit 2) instead "
                    "of a named, counted skip.", flag_values=fv)


@command
def main(argv: list[str]) -> int:
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(f"usage: {USAGE}\n\n  collect  Gather DIR/runs/*/result.json into one table "
          "(`scaling results collect --help` for its flags).")
    return 0
  if argv[0] != "collect":
    raise ScalingError(f"unknown results command {argv[0]!r}; usage: {USAGE}")
  parsed = parse(argv[1:], _define, prog=PROG, usage=USAGE, nargs=(1, 1),
                 description="Gather every DIR/runs/<run_id>/result.json of a ladder workdir "
                 "into the table `scaling fit` reads (complete runs only unless --all).")
  fv, (workdir,) = parsed.fv, parsed.args
  from scaling.ladder import results

  got = results.gather(workdir, include_incomplete=fv["all"].value)
  notes = [results.report_unreadable(got.unreadable, strict=fv["strict"].value)]
  if got.skipped:
    notes.insert(0, f"{got.skipped} incomplete runs left out; --all lists them")
  if got.trunks and not fv["all"].value:
    notes.insert(0, f"{got.trunks} wsd trunks left out (their evals are mid-run points); --all "
                 "lists them")
  note = "; ".join(n for n in notes if n)
  note = f" ({note})" if note else ""
  if fv["out"].value:
    results.write(got.rows, fv["out"].value)
    print(f"{len(got.rows)} runs -> {fv['out'].value}{note}")
  else:
    sys.stdout.write(results.to_text(got.rows, "csv"))
    print(f"{len(got.rows)} runs{note}", file=sys.stderr)
  return 0
