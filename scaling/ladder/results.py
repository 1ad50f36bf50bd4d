"""`scaling results collect`: every `runs/*/result.json` of a workdir -> one table for fitting.

Columns (`COLUMNS`, documented in the README):
  run_id         the run's id (its folder name)
  params         N, non-embedding parameters (Kaplan et al. 2020 definition)
  tokens         D, training tokens
  loss           final eval loss, nats per token
  flops          C, training FLOPs by the run's `train.flops_method`
  params_active  parameters used per token (= params_total for dense models)
  params_total   all parameters, embeddings included
  experts        routed experts (`model.moe.num_experts`), 1 for dense models
  granularity    MoE granularity G of the ladder rung, 1 for dense models
  budget         the IsoFLOP budget the ladder assigned (FLOPs), empty outside IsoFLOP sweeps
  entropy_floor  the data's irreducible loss when known (synthetic data), nats per token
  status         complete, failed, interrupted, ...
  wall_time_s    seconds of training (resumes included)
  sweep          the ladder sweep the run came from, empty outside ladders
  holdout        1 when the ladder marked the run held out (trained, predicted, not fitted)
  point          `final` (a run's own end), `cooldown` (a wsd branch's end) or `mid-run` (an
                 eval of a wsd trunk before any cooldown: listed only with --all, never fitted
                 unless asked, `scaling fit --filter point=mid-run`)
  parent_run_id  a branch's trunk (a mid-run row's own trunk), empty otherwise
  branch_step    the trunk step a branch forked at (a mid-run row's step)
  cooldown_fraction  the final fraction of the run's tokens spent decaying (wsd schedules)
  lr             the peak learning rate (`train.lr`)
  lr_mult, batch_mult  a sweep variant's multipliers around the size rule (`scaling.ladder.tuning`)
  batch_tokens   tokens per step (`train.global_batch` x `train.seq_len`)
  b2             Adam's beta2 (`train.b2`)
  tune_group     the rung a variant belongs to (every variant of one (N, D) rung shares it)
  sweep_best     1 for the lowest-loss run of its tune_group (every run outside a sweep), else 0;
                 `scaling fit` fits only these unless --all-variants
  under_tuned    `up` / `down` when the group's best LR is the highest / lowest of its sweep
                 (extend the LR sweep that way), else empty
  TASK/METRIC    one column per line of the run's `evals.jsonl` at its final checkpoint
                 (`scaling eval`, `scaling.evals`): e.g. `validation/bpb`, `recall/exact_match`;
                 after the columns above, sorted, present when some run has them
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from typing import NamedTuple

from etils import epath

from scaling import storage
from scaling.errors import ScalingError
from scaling.evals import records as evals_records
from scaling.ladder import tuning
from scaling.train.record import RESULT, RunRecord

COLUMNS = ("run_id", "params", "tokens", "loss", "flops", "params_active", "params_total",
           "experts", "granularity", "budget", "entropy_floor", "status", "wall_time_s",
           "sweep", "holdout", "point", "parent_run_id", "branch_step", "cooldown_fraction",
           "lr")
COLUMNS += tuple(c for c in tuning.COLUMNS if c not in COLUMNS)  # per-rung sweeps (tuning.py)


class RunRecords(NamedTuple):
  """What `read_run_records` found in a workdir.

  Attributes:
    records: (run folder, its RunRecord) per readable record, in folder order.
    unreadable: (path, parse error) per result.json that could not be read (torn, corrupt).
  """
  records: list[tuple[epath.Path, RunRecord]]
  unreadable: list[tuple[str, str]]


def read_run_records(workdir) -> RunRecords:
  """Every run record of a workdir: `DIR/runs/<run_id>/result.json` (a ladder), also
  `DIR/<run>/result.json` and `DIR/result.json` (one `scaling train` workdir).

  The one reader of the layout, for `scaling results collect` and `scaling fit DIR`: nothing is
  dropped unnamed, an unreadable file is returned in `unreadable` for the caller to report.
  Folders without a result.json (runs that never finished) are not records.

  Raises:
    ScalingError: `workdir` is not a directory.
  """
  root = storage.Path(workdir)
  if not root.is_dir():
    raise ScalingError(f"{workdir}: no such directory; pass the --workdir of "
                       "`scaling ladder run` (it holds runs/<run_id>/result.json)")
  files = sorted(root.glob(f"runs/*/{RESULT}")) + sorted(root.glob(f"*/{RESULT}"))
  files += [root / RESULT] if (root / RESULT).exists() else []
  records, unreadable = [], []
  for f in files:
    try:
      result = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError) as e:
      unreadable.append((os.fspath(f), f"cannot read it ({e})"))
      continue
    except json.JSONDecodeError as e:
      unreadable.append((os.fspath(f), f"not valid JSON ({e.msg} at line {e.lineno} "
                                       f"column {e.colno})"))
      continue
    if not isinstance(result, dict):
      unreadable.append((os.fspath(f), f"not a run record (a JSON {type(result).__name__})"))
      continue
    records.append((f.parent, RunRecord.from_json(result)))
  return RunRecords(records, unreadable)


def report_unreadable(unreadable: list[tuple[str, str]], *, strict: bool) -> str:
  """Names each unreadable record on stderr; with `strict`, raises instead.

  Returns the summary-line note (`; 1 unreadable result.json skipped`), empty when none.
  """
  if not unreadable:
    return ""
  if strict:
    path, err = unreadable[0]
    more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
    raise ScalingError(f"{path}: {err}{more}; --strict refuses unreadable run records: "
                       "rerun that run (`scaling ladder run` resumes it) or move the file away")
  for path, err in unreadable:
    print(f"warning: {path}: {err}; skipped (--strict makes this an error)", file=sys.stderr)
  return f"{len(unreadable)} unreadable result.json skipped"


def row(result: RunRecord, folder_name: str) -> dict:
  """One table row (`COLUMNS`) from a run record; `folder_name` names runs without a run_id."""
  cfg = result.config or {}
  moe = (cfg.get("model") or {}).get("moe") or {}
  labels = cfg.get("ladder") or {}
  experts = int(moe.get("num_experts") or 1)
  granularity = labels.get("granularity")
  if granularity is None:
    granularity = 1
  train = cfg.get("train") or {}
  branch = cfg.get("branch") or {}
  point = "cooldown" if branch else "mid-run" if cfg.get("trunk") else "final"
  return dict(
      tuning.row_fields(cfg),
      point=point, parent_run_id=branch.get("parent"), branch_step=branch.get("step"),
      cooldown_fraction=train.get("decay_fraction") if train.get("schedule") == "wsd" else None,
      lr=train.get("lr"),
      run_id=result.run_id or folder_name, params=result.params_non_embedding,
      tokens=result.tokens, loss=result.final_eval_loss, flops=result.flops,
      params_active=result.params_active, params_total=result.params_total,
      experts=experts, granularity=granularity, budget=labels.get("budget"),
      entropy_floor=result.entropy_floor, status=result.status,
      wall_time_s=result.wall_time_s, sweep=labels.get("sweep"),
      holdout=int(bool(labels.get("holdout"))))


class Collected(NamedTuple):
  """The table of a workdir: rows, # incomplete runs left out, (path, error) per unreadable,
  # wsd trunks left out (their evals are mid-run points)."""
  rows: list[dict]
  skipped: int
  unreadable: list[tuple[str, str]]
  trunks: int = 0


def mid_run_rows(folder, trunk_row: dict) -> list[dict]:
  """One `mid-run` row per eval of a wsd trunk (`metrics.jsonl` lines with `eval_loss`): the
  loss at constant learning rate after `tokens`, before any cooldown. Run id `<trunk>@<step>`."""
  from scaling.train.record import METRICS

  out = []
  for line in storage.read_jsonl(storage.Path(folder) / METRICS):
    if line.get("eval_loss") is None:
      continue
    out.append(dict(trunk_row, run_id=f"{trunk_row['run_id']}@{line['step']}",
                    tokens=line.get("tokens"), loss=line["eval_loss"], flops=line.get("flops"),
                    parent_run_id=trunk_row["run_id"], branch_step=line["step"]))
  return out


def gather(workdir, *, include_incomplete: bool = False) -> Collected:
  """Rows for every run record (complete ones unless asked), sorted by (budget, params,
  tokens) so the table reads like the ladder; with what was left out and why.

  `include_incomplete` (`--all`) also lists each wsd trunk's evals as `mid-run` rows; without
  it trunks are left out and counted (a trunk's end is not a cooled-down point).
  """
  found = read_run_records(workdir)
  if not found.records and not found.unreadable and not (storage.Path(workdir) / "runs").exists():
    raise ScalingError(f"{workdir} has no runs/ folder; pass the --workdir of "
                       "`scaling ladder run`")
  rows, skipped, trunks = [], 0, 0
  for folder, result in found.records:
    r = row(result, folder.name)
    if r["point"] == "mid-run":
      trunks += 1
      rows += mid_run_rows(folder, r) if include_incomplete else []
      continue
    if r["status"] != "complete" and not include_incomplete:
      skipped += 1
      continue
    r.update(evals_records.final_columns(folder, result.steps_done))
    rows.append(r)
  rows.sort(key=lambda r: (r["budget"] or 0.0, r["params"] or 0, r["tokens"] or 0))
  tuning.mark(rows)  # sweep_best, under_tuned per rung of a hyperparameter sweep
  return Collected(rows, skipped, found.unreadable, trunks)


def collect(workdir, *, include_incomplete: bool = False) -> tuple[list[dict], int]:
  """`gather` without the unreadable list: (rows, # incomplete runs left out)."""
  got = gather(workdir, include_incomplete=include_incomplete)
  return got.rows, got.skipped


def columns(rows: list[dict]) -> tuple[str, ...]:
  """`COLUMNS`, then the eval columns (`task/metric`) any row has, sorted."""
  return COLUMNS + tuple(sorted({c for r in rows for c in r if "/" in c}))


def to_text(rows: list[dict], fmt: str) -> str:
  """The table as CSV (`csv`) or JSON lines (`jsonl`)."""
  cols = columns(rows)
  if fmt == "jsonl":
    return "".join(json.dumps({c: r.get(c) for c in cols}) + "\n" for r in rows)
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
  w.writeheader()
  for r in rows:
    w.writerow({c: ("" if r.get(c) is None else _fmt(r.get(c))) for c in cols})
  return buf.getvalue()


def _fmt(v) -> str:
  return repr(v) if isinstance(v, float) else str(v)


def write(rows: list[dict], out) -> None:
  """Writes the table to `out` atomically; `.jsonl`/`.json` -> JSON lines, else CSV."""
  out = os.fspath(out)
  fmt = "jsonl" if out.endswith((".jsonl", ".json")) else "csv"
  text = to_text(rows, fmt)
  storage.write_text(out, text)
