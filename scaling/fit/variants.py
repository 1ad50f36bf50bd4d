"""Which variants of a per-rung hyperparameter sweep a fit uses (`scaling.ladder.tuning`).

A ladder with a `tune` block trains every rung at several learning rates (batches, beta2s);
`scaling results collect` marks each rung's lowest-loss variant `sweep_best`. A loss law measures
the scaling of tuned models, so `scaling fit` fits only those (`select`), and names every other
variant in fit.json's `provenance.dropped`; `--all-variants` fits them all. A rung trained with
several seeds (`tune(seeds=k)`) enters a loss fit as one row, the mean of its seeds' losses
(`average_seeds`): the law is fitted to the expected loss at (N, D), and the bootstrap then
resamples rung means, not seeds. The hyperparameter
laws (`--law=lr|batch`, `scaling.fit.hparam_laws`) read every variant: the sweep is their data.
"""

from __future__ import annotations

import numpy as np

from scaling.fit.laws import HPARAM_LAWS
from scaling.fit.table import Table

SELECTED = "kept each rung's best variant"  # the note `select` leaves when it drops rows


def best_only(args) -> bool:
  """Whether `scaling fit` keeps only each rung's best variant: loss laws do unless
  `--all-variants`; the hyperparameter laws read every variant."""
  return not getattr(args, "all_variants", False) and getattr(args, "law", None) not in HPARAM_LAWS


def is_best(value: str) -> bool:
  """A `sweep_best` cell of a table: 0 / false is a variant that lost; 1 or empty is kept."""
  return str(value).strip().lower() not in ("0", "0.0", "false")


def select(table: Table, args) -> Table:
  """`table` without the variants that are not their rung's best (`sweep_best` 0) when
  `best_only(args)`; unchanged for a table without the column."""
  col = table.extra.get("sweep_best")
  if not best_only(args) or col is None:
    return table
  keep = np.array([is_best(v) for v in col], bool)
  if keep.all():
    return table
  out = table.subset(keep)
  out.notes.append(f"{SELECTED} (sweep_best): {int((~keep).sum())} other variants left out "
                   "(--all-variants fits them all)")
  return out


def average_seeds(table: Table, args=None) -> Table:
  """One row per rung variant trained with several seeds: its mean final loss (nats), the
  columns of its lowest seed, and `seeds` (how many), `loss_sd` (their standard deviation) and
  `seed_runs` (their run ids, `;`-joined). Unchanged when no variant has two seeds, and under
  `--all-variants` (every run is fitted)."""
  if (args is not None and not best_only(args)) or "seed" not in table.extra \
      or "tune_group" not in table.extra:
    return table
  from scaling.ladder import tuning

  cols = {c: table.extra.get(c) for c in tuning.VARIANT_COLUMNS}
  groups: dict = {}
  for i, g in enumerate(table.extra["tune_group"]):
    row = {c: (v[i] if v is not None else None) for c, v in cols.items()}
    # Rows outside a tune group (a wsd trunk's, a hand-made table's) are never averaged.
    key = ("row", i) if g in ("", "None", "nan") else (g, tuning.variant_of(row))
    groups.setdefault(key, []).append(i)
  if all(len(g) == 1 for g in groups.values()):
    return table

  def seed_of(i: int) -> float:
    try:
      return float(table.extra["seed"][i])
    except (TypeError, ValueError):
      return float("inf")

  members = [sorted(g, key=seed_of) for g in groups.values()]
  out = table.subset(np.array([m[0] for m in members]))
  out.loss = np.array([table.loss[m].mean() for m in members])
  out.extra["seeds"] = [str(len(m)) for m in members]
  out.extra["loss_sd"] = [f"{table.loss[m].std(ddof=1):.6g}" if len(m) > 1 else ""
                          for m in members]
  out.extra["seed_runs"] = [";".join(table.run_id[i] for i in m) for m in members]
  out.notes.append(f"averaged each rung's seeds: {len(table)} runs -> {len(out)} rows, the mean "
                   "final loss of each (--all-variants fits every run)")
  return out
