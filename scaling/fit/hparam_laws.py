"""Hyperparameter laws from per-rung sweeps: lr*(N, D) = c N^a D^b and B*(C) = k C^e tokens.

`scaling fit TABLE_OR_DIR --law=lr` (or `--law=batch`) reads every variant of a ladder's
hyperparameter sweeps (`scaling.ladder.tuning`), finds each rung's optimum (`optima`) and fits
the law to the optima like any other law (`scaling.fit.core.fit_law`: Huber on the log of the
optimum, a grid of starts, bootstrap over rungs; the forms and their sources are in
`scaling.fit.laws`), with the same goodness, self-checks, held-out validation and provenance.
`train.hparam_rule=fit:DIR/fit.json` then sets new runs' learning rate or batch from the fit
(`scaling.hparam_rules`).

A rung's optimum: its variants along the swept quantity (lr, or tokens per step) through its
best variant, the other swept quantities held at the best's values. The best of a discrete sweep
is quantised to the sweep's grid (a x2 grid puts it anywhere within a factor sqrt 2 of the
optimum). With a neighbour on each side, the optimum is the vertex of the parabola in log x
through the best and its two neighbours, a quadratic in log LR being the usual local model of
the loss near its optimum (cf. DeepSeek LLM Sec. 3.1 and Porian et al. 2024, who fit the
near-optimal region of their sweeps); at the sweep's edge it is the edge value, and the rung is
marked `under_tuned` in the table fitted, so the fit's `under_tuned` check says which way to
extend. A rung swept at one value only has no optimum and is left out (`info.optima_skipped`).
"""

from __future__ import annotations

import math

import numpy as np

from scaling.errors import ScalingError
from scaling.fit import core, predict
from scaling.fit.core import Fit
from scaling.fit.laws import HPARAM_LAWS as LAWS
from scaling.fit.table import Table

# Huber threshold on log(optimum): quadratic (least squares) within 10% of the law, linear beyond,
# so one rung with a cut-short or noisy sweep does not drag the law. The loss laws' 1e-3
# (Hoffmann et al. 2022) is far below the scatter of sweep optima (~1-3% in the tests' x2
# sweeps), where it would be nearly least absolute deviations. Measured with least squares on
# 200 synthetic 15-rung tables (tests/fit/test_hparam_laws.py's design, seeds 0-199): the 95%
# case-bootstrap intervals held the true a and b 91% and 93% of the time (small-sample
# percentile intervals run a little narrow).
HUBER_DELTA = 0.1
_SWEPT = {"lr": ("lr", "lr_mult"), "batch": ("batch_tokens", "batch_mult")}  # column, multiplier
_ROW_KEYS = ("lr", "lr_mult", "batch_tokens", "batch_mult", "b2", "tune_group")


def refine(xs, losses) -> tuple[float, str]:
  """The optimum of one sweep: values `xs` (> 0) and their `losses`.

  Returns:
    (x*, how): `parabola` (vertex in log x through the best and its two neighbours), `edge`
    (the best is the lowest or highest x) or `discrete` (a neighbour without a finite loss, or
    no curvature).
  """
  order = np.argsort(np.asarray(xs, np.float64))
  u = np.log(np.asarray(xs, np.float64)[order])
  y = np.asarray(losses, np.float64)[order]
  y = np.where(np.isfinite(y), y, np.inf)
  i = int(np.argmin(y))
  if i in (0, len(u) - 1):
    return float(np.exp(u[i])), "edge"
  (u0, u1, u2), (y0, y1, y2) = u[i - 1:i + 2], y[i - 1:i + 2]
  if not np.all(np.isfinite([y0, y1, y2])):
    return float(np.exp(u1)), "discrete"
  # Vertex of the parabola through three points (Lagrange form, e.g. Press et al., Numerical
  # Recipes, 3rd ed., Eq. 10.3.1).
  num = (u1 - u0) ** 2 * (y1 - y2) - (u1 - u2) ** 2 * (y1 - y0)
  den = (u1 - u0) * (y1 - y2) - (u1 - u2) * (y1 - y0)
  if not den < 0:  # y1 lowest makes den <= 0; 0 is a flat triple, no curvature
    return float(np.exp(u1)), "discrete"
  return float(np.exp(np.clip(u1 - 0.5 * num / den, u0, u2))), "parabola"


def _rows(table: Table) -> list[dict]:
  """The table as the row dicts `scaling.ladder.tuning` reads."""
  extra = {k: table.extra.get(k) for k in _ROW_KEYS}
  return [dict(params=table.params[i], tokens=table.tokens[i], loss=table.loss[i],
               **{k: (v[i] if v is not None else None) for k, v in extra.items()})
          for i in range(len(table))]


def optima(table: Table, law: str) -> Table:
  """One row per rung with a sweep of the law's quantity: the best variant's N, D, C and columns,
  its `loss` replaced by the optimum (module doc), `under_tuned` by the edge mark of this sweep
  (`up` / `down` for lr, `batch:up` / `batch:down` for batch) and `sweep_points` / `optimum`
  (how it was found) added. `table.notes` says how many rungs were left out.

  Raises:
    ScalingError: the table lacks the swept column, or no rung has two or more values of it.
  """
  from scaling.ladder import tuning

  col, mult = _SWEPT[law]
  if col not in table.extra:
    raise ScalingError(f"{table.source}: column {col!r} is required by --law={law} (each run's "
                       f"{'peak learning rate' if law == 'lr' else 'tokens per step'}); pass a "
                       "ladder workdir or a table from `scaling results collect`")
  rows = _rows(table)
  picked, marks, points, how, skipped = [], [], [], [], 0
  for idx in tuning.groups(rows):
    best = tuning.best_of(rows, idx)
    if best is None:
      continue
    sib = tuning.siblings(rows, idx, best, law)
    seeds: dict[float, list] = {}  # a value's seeds (`tune(seeds=k)`): their mean loss
    for i in sib:
      x = tuning._num(rows[i][col])
      if x is not None and x > 0:
        loss = tuning._num(rows[i]["loss"])
        seeds.setdefault(x, []).append(math.inf if loss is None else loss)
    by_x = {x: sum(v) / len(v) for x, v in seeds.items()}
    if len(by_x) < 2:
      skipped += 1
      continue
    x_opt, found = refine(list(by_x), list(by_x.values()))
    picked.append((best, x_opt))
    edge = tuning.edge(rows, idx, best, law)
    marks.append(edge if law == "lr" or not edge else f"{law}:{edge}")
    points.append(str(len(by_x)))
    how.append(found)
  if not picked:
    raise ScalingError(f"{table.source}: no rung has a {law} sweep (two or more values of "
                       f"{col!r} at one (N, D)); give the ladder's sweeps a tune block, e.g. "
                       f"ladder.sweeps.iso.tune = tune({law}=(0.5, 1, 2))")
  idx = np.array([b for b, _ in picked])
  out = table.subset(idx)
  out.loss = np.array([x for _, x in picked], np.float64)
  out.extra.update(under_tuned=marks, sweep_points=points, optimum=how)
  out.extra.setdefault(mult, ["None"] * len(out))
  out.notes.append(f"--law={law}: the optimum of each of {len(out)} rungs' sweeps "
                   f"({how.count('parabola')} by a parabola in log {col}, {how.count('edge')} at "
                   f"the sweep's edge, {how.count('discrete')} discrete)"
                   + (f"; {skipped} rungs swept at one value left out" if skipped else ""))
  out.source = table.source
  return out


def fit_law(table: Table, law: str, *, bootstrap: int = 0, seed: int = 0) -> Fit:
  """Fits `law` (`lr` or `batch`) to a table of optima (`optima`) by `scaling.fit.core`'s grid
  of starts and bootstrap over rungs, with the Huber threshold `HUBER_DELTA`."""
  if law not in LAWS:
    raise ScalingError(f"--law={law!r}: the hyperparameter laws are {', '.join(LAWS)}")
  fit, state = core.fit_grid(table, law, x="flops" if law == "batch" else None,
                             delta=HUBER_DELTA)
  if bootstrap:
    core.bootstrap_grid(table, fit, state, bootstrap, seed)
  predict.summarise(fit, table)
  fit.approach = None
  return fit


def run_fit(args, load) -> tuple[Fit, Table]:
  """`scaling fit --law=lr|batch`: `load(args)` reads the table (every variant), then the
  optima are fitted, checked, validated on held-out rungs and given their provenance."""
  from scaling.fit import checks, provenance, validation

  raw = load(args)
  table = optima(raw, args.law)
  sp = validation.split(table, args.holdout_above)
  fit = fit_law(sp.fit_table, args.law, bootstrap=args.bootstrap, seed=args.seed)
  fit.info["optima"] = [
      {"run_id": table.run_id[i], "params": float(table.params[i]),
       "tokens": float(table.tokens[i]), "flops": float(table.flops[i]),
       "optimum": float(table.loss[i]), "found_by": table.extra["optimum"][i],
       "sweep_points": int(table.extra["sweep_points"][i]),
       "under_tuned": table.extra["under_tuned"][i]} for i in range(len(table))]
  fit.validation = validation.validate(fit, sp, level=fit.ci, seed=args.seed)
  fit.checks = checks.run_checks(fit, sp.fit_table)
  fit.provenance = provenance.from_args(args, fit, sp)
  # Every variant of the fitted rungs informed its optimum, not only the best one named above.
  named = {r["run_id"] for r in fit.provenance.get("runs", [])}
  rest = raw.subset(np.array([r not in named for r in raw.run_id], bool))
  fit.provenance.setdefault("runs", []).extend(provenance.runs(rest, "sweep"))
  return fit, sp.fit_table

