"""`RUN_DIR/evals.jsonl`: one line per (checkpoint step, task, metric), appended idempotently.

A line is `{"step", "tokens", "task", "metric", "value", "n"}`: the checkpoint's step and the
training tokens it had seen, the task and metric names (`scaling.evals`), the value (units of
the metric: nats, bits per byte, fractions) and `n`, what it averages over (answer problems,
scored tokens or bytes). Its key is (step, task, metric): `append` adds only lines whose key is
not in the file yet, so evaluating a run again adds nothing. The file is rewritten whole and
atomically (`scaling.storage`, local or `gs://`), its existing text kept byte for byte.

This module imports no JAX: `scaling results collect` and the fit layer read evals through it.
"""

from __future__ import annotations

import json
import os

from scaling import storage
from scaling.errors import ScalingError

EVALS = "evals.jsonl"
FIELDS = ("step", "tokens", "task", "metric", "value", "n")


def key(line: dict) -> tuple[int, str, str]:
  """A line's identity: (step, task, metric)."""
  return int(line["step"]), str(line["task"]), str(line["metric"])


def _parse(path, text: str) -> list[dict]:
  out = []
  for i, raw in enumerate(text.splitlines()):
    if not raw.strip():
      continue
    try:
      line = json.loads(raw)
      key(line)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
      raise ScalingError(f"{os.fspath(path)}: line {i + 1} is not an eval line "
                         f"({{{', '.join(FIELDS)}}}); fix or move the file, then evaluate "
                         "again") from None
    out.append(line)
  return out


def read(workdir) -> list[dict]:
  """Every line of `workdir/evals.jsonl` ([] when there is none yet)."""
  path = storage.Path(workdir) / EVALS
  if not path.exists():
    return []
  return _parse(path, path.read_text())


def done(workdir) -> set[tuple[int, str, str]]:
  """The keys already evaluated."""
  return {key(x) for x in read(workdir)}


def append(workdir, lines: list[dict]) -> list[dict]:
  """Adds the lines whose key is new (first one wins within `lines` too); returns them.

  The file is rewritten atomically with its old text unchanged and the new lines after it.
  """
  path = storage.Path(workdir) / EVALS
  text = path.read_text() if path.exists() else ""
  seen = {key(x) for x in _parse(path, text)}
  new = []
  for line in lines:
    k = key(line)
    if k not in seen:
      seen.add(k)
      new.append({f: line.get(f) for f in FIELDS})
  if new:
    if text and not text.endswith("\n"):
      text += "\n"
    storage.write_text(path, text + "".join(json.dumps(x) + "\n" for x in new))
  return new


def at_step(lines: list[dict], step: int) -> dict[str, float]:
  """`{"task/metric": value}` of the lines at `step` (the results-table columns)."""
  return {f"{x['task']}/{x['metric']}": x["value"] for x in lines if int(x["step"]) == step}


def final_columns(workdir, step: int | None) -> dict[str, float]:
  """The eval columns of a run's final checkpoint `step` (its `steps_done`); {} without."""
  if step is None:
    return {}
  try:
    return at_step(read(workdir), int(step))
  except ScalingError as e:  # a hand-broken evals.jsonl must not hide the run from its table
    import sys

    print(f"warning: {e}; its eval columns are left empty", file=sys.stderr)
    return {}
