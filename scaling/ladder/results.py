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
"""

from __future__ import annotations

import csv
import io
import os

from scaling import storage
from scaling.errors import ScalingError
from scaling.ladder import store

COLUMNS = ("run_id", "params", "tokens", "loss", "flops", "params_active", "params_total",
           "experts", "granularity", "budget", "entropy_floor", "status", "wall_time_s")


def _row(result: dict, folder_name: str) -> dict:
  cfg = result.get("config") or {}
  moe = (cfg.get("model") or {}).get("moe") or {}
  labels = cfg.get("ladder") or {}
  experts = int(moe.get("num_experts") or 1)
  granularity = labels.get("granularity")
  if granularity is None:
    granularity = 1
  return dict(
      run_id=result.get("run_id") or folder_name, params=result.get("params_non_embedding"),
      tokens=result.get("tokens"), loss=result.get("final_eval_loss"), flops=result.get("flops"),
      params_active=result.get("params_active"), params_total=result.get("params_total"),
      experts=experts, granularity=granularity, budget=labels.get("budget"),
      entropy_floor=result.get("entropy_floor"), status=result.get("status"),
      wall_time_s=result.get("wall_time_s"))


def collect(workdir, *, include_incomplete: bool = False) -> tuple[list[dict], int]:
  """Rows for every run folder with a result.json (complete ones unless asked); and # skipped.

  Rows are sorted by (budget, params, tokens) so the table reads like the ladder.
  """
  runs = store.Path(workdir) / "runs"
  if not runs.exists():
    raise ScalingError(f"{workdir} has no runs/ folder; pass the --workdir of "
                       "`scaling ladder run`")
  rows, skipped = [], 0
  for d in sorted(runs.iterdir()):
    result = store.read_json(d / "result.json")
    if result is None:
      continue
    row = _row(result, d.name)
    if row["status"] != "complete" and not include_incomplete:
      skipped += 1
      continue
    rows.append(row)
  rows.sort(key=lambda r: (r["budget"] or 0.0, r["params"] or 0, r["tokens"] or 0))
  return rows, skipped


def to_text(rows: list[dict], fmt: str) -> str:
  """The table as CSV (`csv`) or JSON lines (`jsonl`)."""
  if fmt == "jsonl":
    import json

    return "".join(json.dumps({c: r.get(c) for c in COLUMNS}) + "\n" for r in rows)
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
  w.writeheader()
  for r in rows:
    w.writerow({c: ("" if r.get(c) is None else _fmt(r.get(c))) for c in COLUMNS})
  return buf.getvalue()


def _fmt(v) -> str:
  return repr(v) if isinstance(v, float) else str(v)


def write(rows: list[dict], out) -> None:
  """Writes the table to `out` atomically; `.jsonl`/`.json` -> JSON lines, else CSV."""
  out = os.fspath(out)
  fmt = "jsonl" if out.endswith((".jsonl", ".json")) else "csv"
  text = to_text(rows, fmt)
  storage.write_text(out, text)
