"""Result tables: read CSV, JSON lines or a ladder workdir into numpy columns, and validate them.

The documented columns: `params` (N, non-embedding unless
stated), `tokens` (D), `loss` (nats/token), optional `flops` (C), `params_active`, `experts`,
`granularity`, `budget` (the IsoFLOP budget a run belongs to, FLOPs) and `run_id`. Other names
are mapped with `columns={"params": "Model Size", ...}` (`--columns params="Model Size"`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import sys
from importlib import resources

import numpy as np

from scaling import storage
from scaling.errors import ScalingError

REQUIRED = ("params", "tokens", "loss")
OPTIONAL = ("flops", "params_active", "experts", "granularity", "budget")
TARGETS = REQUIRED + OPTIONAL + ("run_id",)  # the names `--columns NAME=COLUMN` may map
FIX = ("add it, map another column to it with --columns {col}=NAME, or pass a table from "
       "`scaling results collect`")


@dataclasses.dataclass
class Table:
  """One row per run. Numeric columns are float64 arrays of equal length.

  Attributes:
    params: N, parameters (non-embedding unless the table says otherwise).
    tokens: D, training tokens.
    loss: final loss, nats/token.
    optional: the optional numeric columns present (`flops`, `params_active`, `experts`,
      `granularity`, `budget`), FLOPs for `flops`/`budget`.
    run_id: run names (row numbers when the table has none).
    extra: every other column, as strings.
    source: where it was read from, for messages and reports.
    notes: preparation steps applied (dropped rows, derived columns), for the report.
  """
  params: np.ndarray
  tokens: np.ndarray
  loss: np.ndarray
  optional: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  run_id: list[str] = dataclasses.field(default_factory=list)
  extra: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  source: str = "<table>"
  notes: list[str] = dataclasses.field(default_factory=list)

  def __len__(self) -> int:
    return int(self.loss.shape[0])

  def get(self, name: str) -> np.ndarray | None:
    """A numeric column by name (`params`, `tokens`, `loss` or an optional one), or None."""
    if name in REQUIRED:
      return getattr(self, name)
    return self.optional.get(name)

  def require(self, name: str, why: str) -> np.ndarray:
    """The optional column `name`, or a `ScalingError` saying that `why` needs it."""
    col = self.get(name)
    if col is None:
      raise ScalingError(f"{self.source}: column {name!r} is required {why}; "
                         + FIX.format(col=name))
    return col

  @property
  def flops(self) -> np.ndarray:
    """C in FLOPs: the `flops` column when present, else 6ND (Kaplan et al. 2020, Sec. 2.1)."""
    col = self.optional.get("flops")
    return col if col is not None else 6.0 * self.params * self.tokens

  def subset(self, index) -> Table:
    """Rows `index` (a boolean mask or integer indices), as a new table."""
    idx = np.arange(len(self))[index]
    return Table(self.params[idx], self.tokens[idx], self.loss[idx],
                 {k: v[idx] for k, v in self.optional.items()},
                 [self.run_id[i] for i in idx],
                 {k: [v[i] for i in idx] for k, v in self.extra.items()},
                 self.source, list(self.notes))

  def where(self, **equals: str) -> Table:
    """Rows whose string column equals the value, e.g. `where(experiment="...")`."""
    mask = np.ones(len(self), bool)
    for col, value in equals.items():
      if col not in self.extra:
        raise ScalingError(f"{self.source}: no column {col!r} to filter on; columns: "
                           f"{', '.join(sorted(self.extra))}")
      vals = self.extra[col]
      mask &= np.array([v == value for v in vals])
      if not mask.any():
        choices = sorted(set(vals))
        raise ScalingError(f"{self.source}: no row has {col}={value!r}; values present: "
                           f"{', '.join(choices[:12])}")
    out = self.subset(mask)
    out.notes.append(f"kept rows with {', '.join(f'{k}={v}' for k, v in equals.items())}")
    return out

  def drop_highest_loss(self, k: int) -> Table:
    """Drops the `k` highest-loss rows (Besiroglu et al. 2024 drop 5 of 245 before fitting)."""
    if k <= 0:
      return self
    if k >= len(self):
      raise ScalingError(f"--drop-highest-loss={k} would drop all {len(self)} rows")
    keep = np.sort(np.argsort(self.loss, kind="stable")[: len(self) - k])
    out = self.subset(keep)
    out.notes.append(f"dropped the {k} highest-loss rows (outlier handling, as Besiroglu et al. "
                     "2024 did for the Chinchilla table)")
    return out


def _parse_columns(columns) -> dict[str, str]:
  if columns is None:
    return {}
  items = columns.items() if isinstance(columns, dict) else []
  out = {}
  for key, value in items:
    if key not in TARGETS:
      raise ScalingError(f"columns: {key!r} is not a column name scaling fit knows; map one "
                         f"of {', '.join(TARGETS)}")
    out[key] = value
  if isinstance(columns, dict):
    return out
  for item in columns:
    for part in str(item).split(","):
      if not part.strip():
        continue
      key, sep, value = part.partition("=")
      if not sep:
        raise ScalingError(f"--columns entry {part!r} must look like params=\"Model Size\"")
      if key.strip() not in TARGETS:
        raise ScalingError(f"--columns entry {part!r}: {key.strip()!r} is not a column name "
                           f"scaling fit knows; map one of {', '.join(TARGETS)}")
      out[key.strip()] = value.strip().strip('"').strip("'")
  return out


def _records_to_table(records: list[dict], source: str, columns: dict[str, str],
                      line_offset: int) -> Table:
  """Validates raw records (dicts of strings/numbers) and builds a `Table`."""
  if not records:
    raise ScalingError(f"{source}: the table has no rows")
  names = list(records[0].keys())
  mapping = {c: columns.get(c, c) for c in REQUIRED + OPTIONAL + ("run_id",)}
  for want, have in columns.items():
    if have not in names:
      raise ScalingError(f"{source}: --columns maps {want} to {have!r}, which is not a column "
                         f"(columns: {', '.join(names)})")

  notes = []
  if mapping["tokens"] not in names and mapping["flops"] in names and mapping["params"] in names:
    # Besiroglu et al. 2024 (and the Epoch notebook) derive D = C / (6N) for the Chinchilla data.
    notes.append("tokens derived as D = flops / (6 params)")
    derive_tokens = True
  else:
    derive_tokens = False
  for col in REQUIRED:
    if col == "tokens" and derive_tokens:
      continue
    if mapping[col] not in names:
      raise ScalingError(f"{source}: column {col!r} is missing (columns: {', '.join(names)}); "
                         + FIX.format(col=col))

  def number(row_i: int, col: str, raw, required: bool) -> float:
    where = f"{source}: row {row_i + 1} (line {row_i + 1 + line_offset})"
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
      if required:
        raise ScalingError(f"{where}: column {col!r} is empty; fill it in or drop the row")
      return math.nan
    try:
      v = float(raw)
    except (TypeError, ValueError):
      raise ScalingError(f"{where}: column {col!r} is {raw!r}, not a number") from None
    if not math.isfinite(v):
      raise ScalingError(f"{where}: column {col!r} is {raw!r}; it must be a finite number "
                         "(drop the row or fix the value)")
    if v <= 0:
      raise ScalingError(f"{where}: column {col!r} is {raw!r}; it must be positive "
                         "(losses, parameters, tokens and FLOPs are all > 0)")
    return v

  cols: dict[str, list[float]] = {c: [] for c in REQUIRED}
  present_opt = [c for c in OPTIONAL if mapping[c] in names]
  for c in present_opt:
    cols[c] = []
  for i, rec in enumerate(records):
    for c in ("params", "loss"):
      cols[c].append(number(i, c, rec.get(mapping[c]), True))
    if derive_tokens:
      flops = number(i, "flops", rec.get(mapping["flops"]), True)
      cols["tokens"].append(flops / (6.0 * cols["params"][-1]))
    else:
      cols["tokens"].append(number(i, "tokens", rec.get(mapping["tokens"]), True))
    for c in present_opt:
      cols[c].append(number(i, c, rec.get(mapping[c]), False))
  optional = {}
  for c in present_opt:
    arr = np.array(cols[c], np.float64)
    if np.isnan(arr).all():
      continue  # an empty optional column is an absent one
    if np.isnan(arr).any() and c != "budget":  # budget: empty outside IsoFLOP sweeps
      i = int(np.flatnonzero(np.isnan(arr))[0])
      raise ScalingError(f"{source}: row {i + 1} (line {i + 1 + line_offset}): column {c!r} "
                         "is empty "
                         "while other rows have it; fill it in for every row or for none")
    optional[c] = arr
  used = {mapping[c] for c in REQUIRED + OPTIONAL}
  run_col = mapping["run_id"]
  run_id = [str(r.get(run_col, i + 1)) for i, r in enumerate(records)]
  extra = {n: [str(r.get(n, "")) for r in records] for n in names if n not in used}
  table = Table(np.array(cols["params"]), np.array(cols["tokens"]), np.array(cols["loss"]),
                optional, run_id, extra, source, notes)
  if run_col in names and len(set(run_id)) == len(run_id):
    # Runs in run-id order: a fit (its bootstrap draws rows by index) then gives the same law
    # from a workdir, its `results collect` CSV or a reordered copy of either.
    table = table.subset(np.argsort(np.array(run_id), kind="stable"))
  return table


def _read_csv(text: str) -> list[dict]:
  return list(csv.DictReader(io.StringIO(text)))


def _read_jsonl(text: str, source: str) -> list[dict]:
  out = []
  for i, line in enumerate(text.splitlines()):
    if not line.strip():
      continue
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError as e:
      raise ScalingError(f"{source}: line {i + 1} is not valid JSON ({e.msg})") from None
  return out


_WORKDIR_COLUMNS = ("run_id", "params", "tokens", "loss", "flops", "params_active", "experts",
                    "budget")


def _workdir_records(path: str, strict: bool = False) -> tuple[list[dict], list[str]]:
  """Complete runs of a workdir as table records (with `_dir`, the run folder), and notes.

  The records are read by `scaling.ladder.results.read_run_records`, the same reader (and
  rule) as `scaling results collect`: each unreadable result.json is named on stderr and
  counted; `strict` makes it an error.
  """
  from scaling.ladder import results, tuning

  found = results.read_run_records(path)
  if not found.records and not found.unreadable:
    raise ScalingError(f"{path}: no runs found (expected {path}/runs/<run_id>/result.json); "
                       "pass a workdir written by `scaling ladder run` or a CSV/JSONL table")
  unreadable = results.report_unreadable(found.unreadable, strict=strict)
  records = []
  for folder, r in found.records:
    if r.status != "complete":
      continue  # unfinished or failed runs have no final loss to fit
    row = results.row(r, folder.name)
    rec = {c: row[c] for c in _WORKDIR_COLUMNS}
    # A ladder without MoE granularity labels stays without the column (the law is then Clark's).
    rec["granularity"] = ((r.config or {}).get("ladder") or {}).get("granularity")
    rec["_dir"] = folder
    rec["point"] = row["point"]  # final | cooldown | mid-run (a wsd trunk: not fitted)
    rec.update({c: row.get(c) for c in tuning.COLUMNS})  # lr, tune_group, ... (strings here)
    records.append(rec)
  tuning.mark(records)  # sweep_best / under_tuned, as `scaling results collect` writes them
  incomplete = len(found.records) - len(records)
  notes = [n for n in (f"{incomplete} runs not complete left out" if incomplete else "",
                       unreadable) if n]
  if notes:
    print(f"{path}: {len(records)} complete runs read; {'; '.join(notes)}", file=sys.stderr)
  if not records:
    raise ScalingError(f"{path}: {len(found.records) + len(found.unreadable)} run records "
                       "found but none is readable with status 'complete'; wait for the "
                       "ladder to finish (`scaling ladder status`)")
  return records, notes


def load_table(path_or_dir: str, columns=None, *, strict: bool = False,
               mid_run: bool = False) -> Table:
  """Reads a results table: CSV, JSON lines (`.jsonl`/`.json`) or a ladder workdir.

  Rows whose `point` is `mid-run` (a wsd trunk's evals at a constant learning rate, before any
  cooldown: not converged points of their (N, D)) are left out, with a note, unless `mid_run`.

  A table whose rows name their runs (a `run_id` column without repeats) comes back in run-id
  order, whatever order the source lists them in, so that a fit (its bootstrap draws rows by
  index) gives the same law from a workdir, its `results collect` CSV or a reordered copy.

  Args:
    path_or_dir: a file, or a workdir holding `runs/<run_id>/result.json` (only runs with
      `status == "complete"` are kept; `final_eval_loss` is the loss, `params_non_embedding`
      is N).
    columns: optional mapping from documented names to the table's names, as a dict or as
      strings `"params=Model Size"` (comma-separated or a list).
    strict: for a workdir, an unreadable result.json is an error instead of a named skip.
    mid_run: keep `mid-run` rows (`scaling fit --filter point=mid-run` asks for them).

  Raises:
    ScalingError: a missing column, an empty/NaN/non-positive value (naming row and column), or
      an unreadable file.
  """
  columns = _parse_columns(columns)
  path = os.fspath(path_or_dir)
  if storage.Path(path).is_dir():
    records, notes = _workdir_records(path, strict)
    table = _records_to_table(records, path, columns, line_offset=0)
    table.notes += notes
    return table if mid_run else _without_mid_run(table)
  if not storage.Path(path).exists():
    raise ScalingError(f"{path}: no such file or directory")
  text = storage.Path(path).read_text(encoding="utf-8")
  if path.endswith((".jsonl", ".json", ".ndjson")) or text.lstrip().startswith("{"):
    table = _records_to_table(_read_jsonl(text, path), path, columns, line_offset=0)
  else:
    table = _records_to_table(_read_csv(text), path, columns, line_offset=1)
  return table if mid_run else _without_mid_run(table)


def _without_mid_run(table: Table) -> Table:
  """`table` without its `point == mid-run` rows (noted); unchanged when it has none."""
  points = table.extra.get("point")
  if not points or "mid-run" not in points:
    return table
  keep = np.array([p != "mid-run" for p in points])
  if not keep.any():
    raise ScalingError(f"{table.source}: every row is a mid-run point (a wsd trunk's evals "
                       "before any cooldown); fit the cooldown branches, or ask for these with "
                       "--filter point=mid-run")
  out = table.subset(keep)
  out.notes.append(f"{int((~keep).sum())} mid-run rows (wsd trunk evals) left out; "
                   "--filter point=mid-run fits them")
  return out


# --- The tables shipped in scaling/reference_data (see SOURCES.md there). -------------------------
def _reference_text(name: str) -> str:
  return resources.files("scaling").joinpath("reference_data", name).read_text("utf-8")


def epoch_chinchilla(drop_highest_loss: int = 5) -> Table:
  """The Chinchilla Fig. 4 points digitised by Besiroglu et al. 2024 (245 rows).

  Prepared as they did: D = C / (6N), and the `drop_highest_loss` (default 5) highest-loss
  points dropped, leaving 240. With all 245 the Approach 3 fit moves a lot (beta ~0.45), so
  the outlier rule is part of the method.
  """
  name = "epoch_chinchilla_svg_extracted_data.csv"
  table = _records_to_table(_read_csv(_reference_text(name)), f"reference_data/{name}",
                            {"params": "Model Size", "flops": "Training FLOP"}, line_offset=1)
  return table.drop_highest_loss(drop_highest_loss)


ISOFLOP_EXPERIMENTS = (
    "ml_scalefit__massivetext__chinchilla", "epochai_chinchilla__massivetext__chinchilla",
    "misfitting__fineweb_c4__transformer", "llama_3__raw_loss", "llama_3__exp_loss",
    "marin_202603__comma__llama_2", "marin_202603__dclm__llama_2",
    "marin_202603__nemotron__llama_2")


def isoflops(experiment: str | None = None) -> Table:
  """The Open-Athena IsoFLOP extract (columns params, tokens, budget, loss, experiment, ...)."""
  name = "openathena_isoflops_extract.csv"
  table = _records_to_table(_read_csv(_reference_text(name)), f"reference_data/{name}", {},
                            line_offset=1)
  return table.where(experiment=experiment) if experiment else table


@dataclasses.dataclass
class Curve:
  """One run's training curve: cumulative FLOPs, tokens and loss per logged step."""
  run_id: str
  params: float
  flops: np.ndarray
  tokens: np.ndarray
  loss: np.ndarray


def load_curves(path_or_dir: str, loss_key: str = "loss", *, strict: bool = False
                ) -> list[Curve]:
  """Training curves for Chinchilla Approach 1.

  Reads a ladder workdir (`runs/<id>/metrics.jsonl` beside each complete `result.json`; lines
  with `step`, `tokens`, `flops`, `loss`) or a long-format CSV/JSONL with columns `run_id`,
  `params`, `tokens`, `flops`, `loss` (one row per logged step).
  """
  path = os.fspath(path_or_dir)
  curves = []
  if storage.Path(path).is_dir():
    for rec in _workdir_records(path, strict)[0]:
      mpath = rec["_dir"] / "metrics.jsonl"
      if not mpath.exists():
        raise ScalingError(f"{mpath}: missing; Approach 1 needs each run's training curve")
      lines = _read_jsonl(mpath.read_text(), mpath)
      pts = [(ln.get("flops"), ln.get("tokens"), ln.get(loss_key)) for ln in lines]
      pts = [p for p in pts if None not in p]
      if len(pts) < 2:
        raise ScalingError(f"{mpath}: fewer than 2 lines with 'flops', 'tokens' and "
                           f"{loss_key!r}; Approach 1 needs the curve")
      arr = np.array(pts, np.float64)
      curves.append(Curve(str(rec["run_id"]), float(rec["params"]), arr[:, 0], arr[:, 1],
                          arr[:, 2]))
    return curves
  table = load_table(path)
  flops = table.require("flops", "for training curves (Approach 1)")
  if not any(r != str(i + 1) for i, r in enumerate(table.run_id)):
    raise ScalingError(f"{path}: column 'run_id' is required for training curves (one row per "
                       "logged step, grouped by run_id)")
  ids = list(dict.fromkeys(table.run_id))
  for rid in ids:
    idx = np.array([i for i, r in enumerate(table.run_id) if r == rid])
    order = idx[np.argsort(flops[idx])]
    curves.append(Curve(rid, float(table.params[order[0]]), flops[order], table.tokens[order],
                        table.loss[order]))
  return curves
