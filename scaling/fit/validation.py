"""Held-out validation: runs the fit never sees, predicted with a 95% prediction interval.

A run is held out when its row says so (column `holdout`: 1/0, true/false, yes/no; a ladder
writes it for a sweep or rung marked `holdout`), or, with `--holdout-above=C`, when its compute
exceeds C FLOPs. Held-out runs are trained like any other; the fit leaves them out and then
predicts each one. The result is `fit.json`'s `validation` list, one entry per held-out run:

  {run_id, params, tokens, flops, loss, predicted, interval: [lo, hi], rel_error, inside, reason}

with `rel_error = predicted / loss - 1` (signed; the report shows its magnitude), the interval
from `scaling.fit.predict.prediction_interval` (it includes the scatter of runs around the law,
not only the uncertainty of the parameters), and `inside` whether the observed loss lies in it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from scaling.errors import ScalingError
from scaling.fit import core
from scaling.fit import laws as laws_lib
from scaling.fit.core import Fit, design
from scaling.fit.table import Table

COLUMN = "holdout"
_TRUE = {"1", "1.0", "true", "t", "yes", "y"}
_FALSE = {"0", "0.0", "false", "f", "no", "n", "", "none", "null", "nan"}
REASON_MARKED = "marked holdout"


@dataclasses.dataclass
class Split:
  """A table divided into the runs to fit and the runs to predict.

  Attributes:
    fit_table: the rows the law is fitted on.
    held_table: the held-out rows (possibly empty).
    held_index: row numbers (0-based, into the table given to `split`) of the held-out rows.
    reasons: why each held-out row is held out, aligned with `held_index`.
    threshold: the `--holdout-above` FLOPs, or None.
    unmarked: the rows not marked held out (what `--holdout-above` divides).
  """
  fit_table: Table
  held_table: Table
  held_index: np.ndarray
  reasons: list[str]
  threshold: float | None = None
  unmarked: Table | None = None


def _parse(value, where: str) -> bool:
  if isinstance(value, bool):
    return value
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    if value in (0, 1):
      return bool(value)
  s = str(value).strip().lower()
  if s in _TRUE:
    return True
  if s in _FALSE:
    return False
  raise ScalingError(f"{where}: column {COLUMN!r} is {value!r}; write 1/0 or true/false "
                     "(1 = train the run but leave it out of the fit and predict it)")


def _from_workdir(table: Table) -> list | None:
  """The holdout marks of a ladder workdir's runs, from each run's result.json.

  Used when the table reader did not carry a `holdout` column: the ladder records the mark in
  the run's config (`config.ladder.holdout`) and, in newer versions, in result.json itself.
  """
  dirs = table.extra.get("_dir")
  if dirs is None:
    return None
  from scaling.train.record import RunRecord, read_result

  marks = []
  for d in dirs:
    r = read_result(d) or RunRecord.from_json({})  # local or gs://
    labels = (r.config or {}).get("ladder") or {}
    marks.append(r.extra.get(COLUMN, labels.get(COLUMN)))
  return marks


def holdout_mask(table: Table) -> np.ndarray:
  """Boolean `[rows]`: True where the row is marked held out (all False without the column).

  Raises:
    ScalingError: a value that is not 1/0/true/false, naming the row and run.
  """
  col = table.get(COLUMN)
  raw = list(col) if col is not None else table.extra.get(COLUMN)
  if raw is None:
    raw = _from_workdir(table)
  if raw is None:
    return np.zeros(len(table), bool)
  return np.array([_parse(v, f"{table.source}: row {i + 1} (run {table.run_id[i]})")
                   for i, v in enumerate(raw)], bool)


def split(table: Table, holdout_above: float | None = None) -> Split:
  """Separates the held-out runs (marked, or with compute above `holdout_above` FLOPs).

  Raises:
    ScalingError: nothing left to fit, or a `holdout_above` that leaves no run to predict or
      fewer than 6 to fit (the rule of `core.extrapolation_check`).
  """
  marked = holdout_mask(table)
  above = np.zeros(len(table), bool)
  if holdout_above is not None:
    above = (table.flops > float(holdout_above)) & ~marked
    n_train = int((~marked & ~above).sum())
    if not above.any() or n_train < 6:
      raise ScalingError(f"extrapolation check at C = {float(holdout_above):.3g} FLOPs leaves "
                         f"{n_train} runs to fit and {int(above.sum())} to predict; "
                         "choose another --holdout-above")
  held = marked | above
  if held.all():
    raise ScalingError(f"{table.source}: every run is held out (column {COLUMN!r} or "
                       "--holdout-above); leave the runs to fit with holdout=0")
  idx = np.flatnonzero(held)
  reasons = [REASON_MARKED if marked[i] else f"C > {float(holdout_above):.3g} FLOPs"
             for i in idx]
  fit_table = table.subset(~held)
  if held.any():
    fit_table.notes.append(f"held out {len(idx)} run(s) from the fit, predicted in 'validation'")
  return Split(fit_table, table.subset(held), idx, reasons,
               None if holdout_above is None else float(holdout_above), table.subset(~marked))


def point_predict(fit: Fit, table: Table) -> np.ndarray | None:
  """The fitted law's loss at each row of `table`, or None when the fit predicts no loss
  (Chinchilla approaches 1 and 2 give only the frontier N_opt(C), D_opt(C))."""
  p = fit.params
  if fit.law == "chinchilla":
    if "E" not in p:
      return None
    return p["E"] + p["A"] / table.params ** p["alpha"] + p["B"] / table.tokens ** p["beta"]
  theta = fit.info.get("theta")
  if theta is None or fit.law not in laws_lib.LAWS:
    return None
  return laws_lib.predict(fit.law, np.asarray(theta), design(table, fit.law, fit.info.get("x")))


def _intervals(fit: Fit, fit_table: Table, held: Table, level: float, seed: int):
  """(lo, hi) arrays from `predict.prediction_interval`, or None for laws it cannot handle
  (the MoE laws need experts and granularity per point)."""
  from scaling.fit import predict

  if fit.law in ("clark", "krajewski"):
    return None
  n, d = held.params, held.tokens
  if fit.info.get("x") == "flops":  # the interval reads C = 6 N D: give it the table's C
    n, d = held.flops / 6.0, np.ones(len(held))
  _, lo, hi = predict.prediction_interval(fit, fit_table, n, d, level=level, seed=seed)
  return np.asarray(lo, np.float64), np.asarray(hi, np.float64)


def validate(fit: Fit, sp: Split, *, level: float = 0.95, seed: int = 0) -> list[dict]:
  """The `validation` entries: each held-out run with its prediction and interval.

  Returns an empty list when nothing is held out. Units: params, tokens, FLOPs, loss in the
  table's nats/token.
  """
  held = sp.held_table
  if len(held) == 0:
    return []
  pred = point_predict(fit, held)
  if pred is None:
    fit.info["validation_note"] = (f"{len(held)} held-out run(s) left out of the fit; a "
                                   f"{fit.method} fit predicts no loss, so none is scored")
    pred = np.full(len(held), np.nan)
    iv = None
  else:
    iv = _intervals(fit, sp.fit_table, held, level, seed)
  out = []
  for j in range(len(held)):
    loss, p = float(held.loss[j]), float(pred[j])
    lo_hi = None if iv is None else [float(iv[0][j]), float(iv[1][j])]
    out.append({
        "run_id": held.run_id[j], "params": float(held.params[j]),
        "tokens": float(held.tokens[j]), "flops": float(held.flops[j]), "loss": loss,
        "predicted": p if np.isfinite(p) else None, "interval": lo_hi,
        "rel_error": float(p / loss - 1) if np.isfinite(p) else None,
        "inside": None if lo_hi is None else bool(lo_hi[0] <= loss <= lo_hi[1]),
        "reason": sp.reasons[j]})
  return out


def extrapolation_summary(fit: Fit, sp: Split) -> dict | None:
  """`fit.info["extrapolation"]` for `--holdout-above` (the keys of `core.extrapolation_check`):
  the fit already saw exactly the unmarked runs with C <= threshold, so its law is the
  predictor; None without a threshold or for a fit that predicts no loss."""
  if sp.threshold is None or point_predict(fit, sp.fit_table) is None:
    return None
  return core.extrapolation_check(sp.unmarked, lambda _train: lambda t: point_predict(fit, t),
                                  sp.threshold)


def split_curves(fit_curves: list, path: str, holdout_above: float | None = None
                 ) -> tuple[list, list[str]]:
  """Approach 1's training curves (`table.Curve`) without the held-out runs: those marked in
  their run records (a ladder workdir) or whose compute ends above `holdout_above` FLOPs.

  Returns (curves to fit, run ids held out). Approach 1 predicts no loss, so the held-out runs
  are only left out (and named in the provenance), not scored.
  """
  from scaling import storage
  from scaling.ladder import results

  marked = set()
  if storage.Path(path).is_dir():
    for folder, r in results.read_run_records(path).records:
      rid = r.run_id or folder.name
      labels = (r.config or {}).get("ladder") or {}
      if _parse(r.extra.get(COLUMN, labels.get(COLUMN)), f"{folder}/result.json (run {rid})"):
        marked.add(rid)
  held = [c.run_id for c in fit_curves if c.run_id in marked
          or (holdout_above is not None and float(c.flops.max()) > holdout_above)]
  kept = [c for c in fit_curves if c.run_id not in set(held)]
  if held and len(kept) < 2:
    raise ScalingError(f"{path}: {len(held)} of {len(fit_curves)} runs are held out, leaving "
                       f"{len(kept)} training curves; Approach 1 needs two or more")
  return kept, held
