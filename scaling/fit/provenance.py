"""Where a fitted law came from: `fit.json`'s `provenance` block, and the line `scaling plan` shows.

The block records, so that anyone can tell which runs and which code made a law:

  input     the table's path and SHA-256; for a ladder workdir the SHA-256 of the collected
            records (the bytes `scaling results collect DIR --out=FILE.jsonl` writes, so a reader
            can check it with `sha256sum`) and of each run's result.json and metrics.jsonl
  runs      every input run id, its role (`fit` or `held_out`) and config identity
  support   [min, max] of the fitted runs' N, D, N x D and C (what `scaling plan --sweep`
            shades beyond as extrapolation)
  data      each distinct data spec of the runs, with its entropy floor when the data knows it
  filters   --columns, --filter, --drop-highest-loss, --holdout-above as given
  dropped   rows the fit did not use, by run id and row number, with the reason
  command   the exact command line, working directory and time (UTC)
  software  package version and git commit (None outside a git checkout; `dirty` when the
            checkout has uncommitted changes)
  fit       law, approach, method, seed, bootstrap resamples and what they resample
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import shlex
import subprocess
import sys

import numpy as np

from scaling import storage
from scaling.errors import ScalingError
from scaling.fit import variants
from scaling.fit.table import Table
from scaling.train.record import RESULT, RunRecord, read_result


def sha256_bytes(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _collected_records_sha(path: str) -> str | None:
  """SHA-256 of the JSON-lines table `scaling results collect` makes of the workdir."""
  from scaling.ladder import results

  try:
    rows, _ = results.collect(path)
  except ScalingError:
    return None  # no runs/ folder (a single run or a flat folder): the files below still are
  return sha256_bytes(results.to_text(rows, "jsonl").encode())


def input_digest(path: str) -> dict:
  """`{path, kind, sha256, ...}` of a table file or a ladder workdir (see the module doc)."""
  p = storage.Path(path)
  shown = os.path.abspath(path) if storage.is_local(path) else os.fspath(path)
  if not p.is_dir():
    data = p.read_bytes()
    return {"path": shown, "kind": "file", "sha256": sha256_bytes(data), "bytes": len(data)}
  from scaling.ladder import results

  files = []
  for folder, _ in results.read_run_records(path).records:  # the reader `scaling fit` uses
    for g in (folder / RESULT, folder / "metrics.jsonl"):
      if g.exists():
        files.append({"path": os.path.relpath(os.fspath(g), os.fspath(p)),
                      "sha256": sha256_bytes(g.read_bytes())})
  return {"path": shown, "kind": "workdir", "sha256": _collected_records_sha(path),
          "sha256_of": "`scaling results collect DIR --out=FILE.jsonl` output", "files": files}


def _identity_of_run(folder, record: RunRecord) -> str | None:
  """A run's config identity (`scaling.train.identity`): as result.json recorded it, else the
  hash of what `identity.recorded` finds in the folder (identity.json, else the config of a run
  trained before identities were recorded); None without any config."""
  from scaling.train import identity

  if record.config_identity:
    return str(record.config_identity)
  found = identity.recorded(folder)
  return identity.identity_hash(found) if found is not None else None


def _run_record(d) -> RunRecord:
  """The run record in `d`; an empty one (every key None) when there is none."""
  return read_result(d) or RunRecord.from_json({})


def runs(table: Table, role: str) -> list[dict]:
  """`{run_id, role, config_identity}` for each row: for a workdir by `_identity_of_run`, for
  a table file from its `config_identity` column, else None."""
  dirs = table.extra.get("_dir")
  col = table.extra.get("config_identity")
  seeds = table.extra.get("seed_runs")  # a row that averages several seeds (variants.average_seeds)
  out = []
  for i, rid in enumerate(table.run_id):
    ident = None
    if dirs is not None:
      ident = _identity_of_run(dirs[i], _run_record(dirs[i]))
    elif col is not None and col[i]:
      ident = col[i]
    out.append({"run_id": rid, "role": role, "config_identity": ident})
    if seeds is not None and ";" in seeds[i]:
      out[-1]["averaged_with"] = seeds[i].split(";")[1:]
  return out


def data_specs(tables: list[Table]) -> list[dict]:
  """Each distinct data spec of the runs with its entropy floor (nats/token) and run count."""
  seen: dict[str, dict] = {}
  for t in tables:
    dirs = t.extra.get("_dir")
    floors = t.extra.get("entropy_floor")
    for i in range(len(t)):
      if dirs is not None:
        r = _run_record(dirs[i])
        data = r.data or {}
        spec = {"name": data.get("name") or ((r.config or {}).get("data") or {}).get(
            "name"), "spec": data.get("spec") or ((r.config or {}).get("data")),
                "entropy_floor": r.entropy_floor, "floor_formula": data.get(
                    "floor_formula")}
      else:
        v = floors[i] if floors is not None else ""
        spec = {"name": None, "spec": None,
                "entropy_floor": float(v) if v not in ("", "None", "nan") else None}
      if all(v is None for v in spec.values()):
        continue  # a table that says nothing about its data: record nothing, not nulls
      key = json.dumps(spec, sort_keys=True, default=str)
      seen.setdefault(key, dict(spec, runs=0))["runs"] += 1
  return list(seen.values())


def known_floor(prov: dict | None) -> float | None:
  """The entropy floor shared by every input run, or None (unknown, or runs disagree)."""
  floors = {d.get("entropy_floor") for d in (prov or {}).get("data", [])}
  if len(floors) == 1 and None not in floors:
    return float(floors.pop())
  return None


def trace_dropped(raw: Table, filters: list[str], drop_highest_loss: int,
                  best_only: bool = False) -> list[dict]:
  """Rows of `raw` that `--filter`, the best-variant selection (`best_only`:
  `variants.select`) and `--drop-highest-loss` remove, in the order the fit's loader
  applies them (`Table.where`, `select`, `Table.drop_highest_loss`), with the reason."""
  idx = np.arange(len(raw))
  out = []
  best_col = raw.extra.get("sweep_best") if best_only else None
  for f in filters:
    col, _, value = f.partition("=")
    vals = raw.extra.get(col)
    if vals is None:
      continue  # the loader refuses an unknown column before anything is fitted
    keep = np.array([vals[i] == value for i in idx], bool)
    out += [{"row": int(i) + 1, "run_id": raw.run_id[i],
             "reason": f"--filter {f}: {col}={vals[i]!r}"} for i in idx[~keep]]
    idx = idx[keep]
  if best_col is not None:  # as variants.select
    keep = np.array([variants.is_best(best_col[i]) for i in idx], bool)
    out += [{"row": int(i) + 1, "run_id": raw.run_id[i], "reason": "not its rung's best variant "
             "(sweep_best 0; --all-variants fits every variant)"} for i in idx[~keep]]
    idx = idx[keep]
  sub = raw.subset(idx)
  if best_only:  # as variants.average_seeds: a rung's seeds are one row from here on
    sub = variants.average_seeds(sub)
  if 0 < drop_highest_loss < len(sub):
    order = np.argsort(sub.loss, kind="stable")  # as Table.drop_highest_loss
    runs_of = sub.extra.get("seed_runs") or sub.run_id
    row_of = {raw.run_id[i]: int(i) + 1 for i in idx}
    for j in sorted(order[len(sub) - drop_highest_loss:]):
      for rid in runs_of[j].split(";"):
        out.append({"row": row_of[rid], "run_id": rid,
                    "reason": f"--drop-highest-loss={drop_highest_loss}: loss {sub.loss[j]:.4g}"})
  return out


def incomplete_runs(path: str) -> list[dict]:
  """Runs of a workdir the table reader skipped: not complete, or an unreadable record."""
  from scaling.ladder import results

  if not storage.Path(path).is_dir():
    return []
  found = results.read_run_records(path)
  out = [{"row": None, "run_id": r.run_id if r.run_id is not None else folder.name,
          "reason": f"status {r.status!r}: no final loss"}
         for folder, r in found.records if r.status != "complete"]
  return out + [{"row": None, "run_id": None, "reason": f"{f}: {err}"}
                for f, err in found.unreadable]


def software() -> dict:
  """Package version and the git commit of the checkout the package runs from (if any)."""
  try:
    version = importlib.metadata.version("scaling")
  except importlib.metadata.PackageNotFoundError:
    version = None
  pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../scaling
  out = {"package": "scaling", "version": version, "git_commit": None, "git_dirty": None}

  def git(*a):
    return subprocess.run(["git", "-C", pkg, *a], capture_output=True, text=True, timeout=10,
                          check=True).stdout.strip()

  try:
    top = git("rev-parse", "--show-toplevel")
    # Only the checkout the package lives in: an installed copy inside some other repository
    # (a venv under a project) must not report that project's commit.
    if os.path.realpath(os.path.join(top, "scaling")) != os.path.realpath(pkg):
      return out
    out["git_commit"] = git("rev-parse", "HEAD")
    out["git_dirty"] = bool(git("status", "--porcelain", "--untracked-files=no"))
  except (OSError, subprocess.SubprocessError):
    pass  # no git, not a checkout, or a checkout without commits
  return out


def command(argv: list[str] | None) -> dict:
  """The command line as typed (`argv` are the arguments after `scaling fit`)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  return {"argv": ["scaling", "fit", *argv], "command": shlex.join(["scaling", "fit", *argv]),
          "cwd": os.getcwd(),
          "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def build(*, table_path: str, fitted: Table, held: Table | None = None,
          raw: Table | None = None, columns=None, filters=(), drop_highest_loss: int = 0,
          holdout_above: float | None = None, argv: list[str] | None = None,
          law: str, approach: int | None, method: str, seed: int, bootstrap: int,
          best_only: bool = False, resample: str = "runs") -> dict:
  """The provenance block (module doc). `raw` is the table before filters (for `dropped`)."""
  held_rows = runs(held, "held_out") if held is not None and len(held) else []
  tables = [fitted] + ([held] if held is not None and len(held) else [])
  dropped = incomplete_runs(table_path)
  if raw is not None:
    dropped += trace_dropped(raw, list(filters), int(drop_highest_loss), best_only)
  seen: dict[str, dict] = {}  # a long-format curves table has a row per logged step
  for r in runs(fitted, "fit") + held_rows:
    seen.setdefault(r["run_id"], r)
  return {
      "input": input_digest(table_path),
      "runs": list(seen.values()),
      "support": support(fitted),
      "data": data_specs(tables),
      "filters": {"columns": columns, "filter": list(filters),
                  "drop_highest_loss": int(drop_highest_loss), "holdout_above": holdout_above},
      "dropped": dropped,
      "command": command(argv),
      "software": software(),
      "fit": {"law": law, "approach": approach, "method": method, "seed": int(seed),
              "bootstrap": int(bootstrap), "resample": resample},
  }


def support(fitted: Table) -> dict:
  """`[min, max]` of the fitted runs' N, D, N x D and C (FLOPs): the range `scaling plan
  --sweep` shades beyond as extrapolation. Empty for an empty table."""
  if not len(fitted):
    return {}
  cols = (("params", fitted.params), ("tokens", fitted.tokens),
          ("params_x_tokens", fitted.params * fitted.tokens), ("flops", fitted.flops))
  return {name: [float(np.min(v)), float(np.max(v))] for name, v in cols}


def summary(obj: dict) -> str:
  """One line saying where the law in a fit.json came from (for `scaling plan --law=FIT`)."""
  prov = obj.get("provenance")
  if not prov:
    return "provenance: none recorded (fit.json written before provenance was kept)"
  inp, sw, fit = prov.get("input", {}), prov.get("software", {}), prov.get("fit", {})
  roles = [r.get("role") for r in prov.get("runs", [])]
  sha = (inp.get("sha256") or "?")[:12]
  commit = (sw.get("git_commit") or "no git")[:10] + (" dirty" if sw.get("git_dirty") else "")
  floor = known_floor(prov)
  parts = [f"from {roles.count('fit')} runs"
           + (f" (+{roles.count('held_out')} held out)" if "held_out" in roles else "")
           + f" of {inp.get('kind', 'table')} {inp.get('path')} (sha256 {sha})",
           f"{fit.get('law')} approach {fit.get('approach')} {fit.get('method')} "
           f"seed {fit.get('seed')}",
           f"scaling {sw.get('version')} @ {commit}",
           f"{prov.get('command', {}).get('time_utc', '')}"]
  if floor is not None:
    parts.insert(1, f"data floor {floor:.4g}")
  if prov.get("dropped"):
    parts.insert(1, f"{len(prov['dropped'])} rows dropped")
  return "provenance: " + "; ".join(p for p in parts if p)


def write_fit_json(path: str, obj: dict) -> None:
  """fit.json, atomically (a reader sees the old file or the new one, never half)."""
  storage.write_json(path, obj)


def load_fit_json(path: str) -> dict:
  obj = storage.read_json(path)
  if obj is None:
    raise ScalingError(f"{path}: missing or not valid JSON; write it with `scaling fit --out`")
  return obj


def from_args(args, fit, sp=None, held_ids=()) -> dict:
  """`build` from `scaling fit`'s parsed flags (`cli.parse_fit_args`), the fit (its law,
  approach and method as resolved) and the validation split (`validation.Split`; None for
  Approach 1, whose runs are re-read from the table and `held_ids` are the runs it left out)."""
  import contextlib
  import io

  from scaling.fit import table as table_lib

  strict = getattr(args, "strict", False)
  filters = list(getattr(args, "filter", None) or [])
  drop = int(getattr(args, "drop_highest_loss", 0) or 0)
  # Rows the best-variant selection left out are traced (`variants.select` says so in notes).
  best = variants.best_only(args) and sp is not None and any(
      n.startswith(variants.SELECTED) for n in sp.fit_table.notes)
  raw = None
  if sp is None or filters or drop or best:
    # The unfiltered table, for the rows the filters dropped. Quietly: the fit's own load
    # already printed the reader's notes (incomplete runs) once.
    with contextlib.redirect_stderr(io.StringIO()):
      raw = table_lib.load_table(args.table, getattr(args, "columns", None), strict=strict)
  if sp is not None:
    fitted, held = sp.fit_table, sp.held_table
  else:
    is_held = np.array([r in set(held_ids) for r in raw.run_id], bool)
    fitted, held = raw.subset(~is_held), raw.subset(is_held)
  return build(table_path=args.table, fitted=fitted, held=held,
               raw=raw if (filters or drop or best) else None,
               columns=getattr(args, "columns", None), best_only=best,
               filters=filters, drop_highest_loss=drop,
               holdout_above=getattr(args, "holdout_above", None),
               argv=getattr(args, "argv", None), law=fit.law, approach=fit.approach,
               method=fit.method, seed=getattr(args, "seed", 0),
               bootstrap=getattr(args, "bootstrap", 0),
               resample=getattr(args, "resample", "runs"))
