"""Which variants of a per-rung hyperparameter sweep a fit uses (`scaling.ladder.tuning`).

A ladder with a `tune` block trains every rung at several learning rates (batches, beta2s);
`scaling results collect` marks each rung's lowest-loss variant `sweep_best`. A loss law measures
the scaling of tuned models, so `scaling fit` fits only those (`select`), and names every other
variant in fit.json's `provenance.dropped`; `--all-variants` fits them all. The hyperparameter
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
