"""Fits that check themselves: the warnings a careful reader of a scaling-law fit would raise.

The list follows the (Mis)Fitting checklist of Li et al. 2025 ("(Mis)Fitting: a survey of
scaling laws", arXiv:2502.18969: report the range of compute, the initialisation grid and the
optimiser, check residuals and held-out predictions) and Besiroglu et al. 2024 ("Chinchilla
scaling: a replication attempt", arXiv:2404.10102: implausibly narrow or wide intervals, fits
that do not describe the data). Each check is a dict `{name, ok, detail}`; `detail` says what
was measured and, when `ok` is False, the fix. A check that cannot apply to this fit (no
bootstrap, no budgets, no E) is `ok` with a detail starting "skipped:".

Thresholds are stated in each function; they are heuristics that flag a fit for a closer look,
not hypothesis tests with a guaranteed error rate (except `residual_trend`).
"""

from __future__ import annotations

import numpy as np

from scaling.errors import ScalingError
from scaling.fit import core
from scaling.fit.core import Fit, fmt_num
from scaling.fit.laws import HPARAM_LAWS
from scaling.fit.table import Table

TREND_P = 0.01  # residual_trend: two-sided Spearman p-value per variable (N, D)
TREND_RHO = 0.2  # ... and |rho| at least this, so a huge table's tiny trends pass
LOBO_RATIO = 2.0  # leave-one-budget-out RMSE over in-sample RMSE (issue threshold)
SCALE_DECADES = 3.0  # interval_bounds: a scale (E, A, B, ...) interval wider than 10^3 x
EXPONENT_WIDTH = 1.0  # interval_bounds: an exponent interval wider than this


def _check(name: str, ok: bool, detail: str) -> dict:
  return {"name": name, "ok": bool(ok), "detail": detail}


def _skip(name: str, why: str) -> dict:
  return _check(name, True, f"skipped: {why}")


def _budgets(table: Table) -> np.ndarray:
  from scaling.fit import chinchilla
  return chinchilla.group_budgets(table)


def check_budgets(fit: Fit, table: Table | None) -> dict:
  """Fewer than 3 budgets, or compute spanning less than one decade (Li et al. 2025: the fitted
  exponents are only as good as the range of C they were fitted over)."""
  if table is None:
    return _skip("budgets", "no run table (training curves)")
  b = _budgets(table)
  nb = int(np.unique(b[np.isfinite(b)]).size)
  c = table.flops
  decades = float(np.log10(c.max() / c.min()))
  detail = (f"{nb} budget(s), C from {fmt_num(c.min())} to {fmt_num(c.max())} FLOPs "
            f"({decades:.2f} decades)")
  if nb >= 3 and decades >= 1.0:
    return _check("budgets", True, detail)
  return _check("budgets", False, detail + ": add runs at 3 or more budgets spanning at least "
                "one decade of compute, or the exponents are extrapolated from a sliver")


def check_isoflop_edge(fit: Fit, table: Table | None) -> dict:
  """Per IsoFLOP profile (a budget with 3+ model sizes): is the lowest loss at the smallest or
  largest model? Then the optimum lies outside the profile (Hoffmann et al. 2022, Sec. 3.2
  fit a parabola whose minimum must be inside it)."""
  if table is None:
    return _skip("isoflop_edge", "no run table")
  if fit is not None and fit.law in HPARAM_LAWS:
    return _skip("isoflop_edge", f"the {fit.law} law fits optima, not losses")
  b = table.get("budget")
  if b is None:
    return _skip("isoflop_edge", "no 'budget' column (no IsoFLOP profiles)")
  edges, profiles = [], 0
  for c in np.unique(b[np.isfinite(b)]):
    idx = np.flatnonzero(b == c)
    n = table.params[idx]
    if np.unique(n).size < 3:
      continue
    profiles += 1
    best = idx[np.argmin(table.loss[idx])]
    if table.params[best] in (n.min(), n.max()):
      side = "smallest" if table.params[best] == n.min() else "largest"
      edges.append(f"{fmt_num(c)} FLOPs at its {side} model (N = "
                   f"{fmt_num(table.params[best])})")
  if not profiles:
    return _skip("isoflop_edge", "no budget has 3 or more model sizes")
  if not edges:
    return _check("isoflop_edge", True, f"all {profiles} profiles have their minimum inside")
  return _check("isoflop_edge", False,
                f"{len(edges)} of {profiles} profiles have their minimum at an edge: "
                + "; ".join(edges[:4]) + ": add a model beyond that edge at the budget")


def check_floor(fit: Fit, table: Table | None) -> dict:
  """Fitted E below (or at) 0, or above the lowest observed loss: the irreducible loss cannot
  be negative, and a run cannot beat the law's floor (Besiroglu et al. 2024 discuss E)."""
  e = fit.params.get("E")
  if e is None or table is None:
    return _skip("floor", "the law has no irreducible loss E")
  low = float(table.loss.min())
  detail = f"E = {e:.4g}, lowest observed loss {low:.4g}"
  if e <= 1e-9 * low:
    return _check("floor", False, detail + ": E sits at its bound 0, so the data want a "
                  "negative floor; add runs nearer the floor (larger N and D) or check the "
                  "loss units")
  if e >= low:
    return _check("floor", False, detail + ": the floor is above a run that beat it; the "
                  "runs do not constrain the curvature; add larger runs or drop outliers "
                  "(--drop-highest-loss)")
  return _check("floor", True, detail)


_EXPONENTS = {"alpha", "beta", "alpha_N", "alpha_D", "gamma", "alpha_B", "e_D"}
_FRONTIER_EXPONENTS = {"a", "b"}  # approaches 1 and 2 (in krajewski, a and b are scales)
_HPARAM_EXPONENTS = {"a", "b", "e"}  # lr* = c N^a D^b, B* = k C^e


def check_interval_bounds(fit: Fit, table: Table | None) -> dict:
  """Bootstrap intervals that are unbounded (non-finite replicates, a scale interval wider
  than 10^3 x, an exponent interval wider than 1) or that run into the optimiser's bounds
  (a scale's lower end at 0, below 1e-6 of its estimate: variable projection's non-negativity,
  or exp(theta) running off; an exponent replicate on the edge of its search window)."""
  if not fit.samples:
    return _skip("interval_bounds", "no bootstrap (run with --bootstrap=K)")
  linear = fit.law == "clark"  # its coefficients are signed, with no natural bounds
  window = fit.info.get("bootstrap_window") if fit.method == "varpro" else None
  exponents = (_FRONTIER_EXPONENTS if fit.approach in (1, 2) else
               _HPARAM_EXPONENTS if fit.law in HPARAM_LAWS else _EXPONENTS)
  bad = []
  for k, v in fit.params.items():
    s = np.asarray(fit.samples.get(k, []), np.float64)
    if s.size == 0:
      continue
    finite = s[np.isfinite(s)]
    if finite.size < 0.99 * s.size:
      bad.append(f"{k}: {s.size - finite.size} of {s.size} replicates non-finite")
      continue
    if linear:
      continue
    lo, hi = np.percentile(finite, [50 * (1 - fit.ci), 50 * (1 + fit.ci)])
    span = f"{k} in [{fmt_num(lo)}, {fmt_num(hi)}]"
    if k in exponents:
      if window is not None and np.mean(np.abs(finite - v) >= window * (1 - 1e-6)) > 0.025:
        bad.append(f"{span} runs into the bootstrap search window (+-{window} around {v:.3g})")
      elif hi - lo > EXPONENT_WIDTH:
        bad.append(f"{span} is unbounded (wider than {EXPONENT_WIDTH})")
    else:
      if lo <= 1e-6 * abs(v):  # exactly 0 (NNLS) or exp(theta) run off towards 0
        bad.append(f"{span} runs into the bound {k} >= 0")
      elif lo > 0 and np.log10(hi / lo) > SCALE_DECADES:
        bad.append(f"{span} is unbounded (over {SCALE_DECADES:.0f} decades)")
  if not bad:
    return _check("interval_bounds", True, f"all {len(fit.params)} parameter intervals bounded")
  return _check("interval_bounds", False, "; ".join(bad[:4]) + ": the table does not pin the "
                "law down; add runs at more sizes and budgets (the intervals are honest)")


def check_grid_edge(fit: Fit, table: Table | None) -> dict:
  """Does the grid of starts bracket the optimum? If the fitted point lies beyond the grid
  in some coordinate, the best start was on the grid's edge and a better basin may lie beyond
  (Li et al. 2025 on initialisation; Hoffmann et al. 2022, App. D.2 for the grid)."""
  info = fit.info
  if fit.method == "varpro" and "exponent_range" in info:
    lo, hi = info["exponent_range"]
    step = info.get("exponent_grid_step", (hi - lo) / 50)
    out = [f"{k} = {fit.params[k]:.4g}" for k in ("alpha", "beta")
           if fit.params[k] <= lo + step or fit.params[k] >= hi - step]
    detail = f"exponent search over [{lo:g}, {hi:g}]"
    if out:
      return _check("grid_edge", False, detail + f": {', '.join(out)} at its edge; the optimum "
                    "may lie beyond it: add runs that constrain the exponents")
    return _check("grid_edge", True, detail + ": the optimum is inside")
  if "grid_range" not in info or "theta" not in info:
    return _skip("grid_edge", f"method {fit.method} has no grid of starts")
  lo, hi = (np.asarray(v) for v in info["grid_range"])
  theta = np.asarray(info["theta"])
  names = info.get("theta_names") or [str(i) for i in range(len(theta))]
  out = [f"{n} = {t:.3g} {'<' if t < a else '>'} {'grid min' if t < a else 'grid max'} "
         f"{a if t < a else b:g}" for n, t, a, b in zip(names, theta, lo, hi, strict=True)
         if t < a or t > b]
  if out:
    return _check("grid_edge", False, "the optimum lies beyond the grid of starts ("
                  + "; ".join(out) + "): the best start was on its edge; the fit may sit in a "
                  "poor basin; compare --method=varpro and add runs that pin the law")
  return _check("grid_edge", True, f"the optimum lies inside the grid of {info.get('starts')} "
                "starts")


def _residuals(fit: Fit, table: Table) -> np.ndarray:
  from scaling.fit import predict
  data = core.design(table, fit.law, fit.info.get("x"))
  return predict.log_predict(fit.law, predict._theta(fit), data) - data["logL"]


def check_residual_trend(fit: Fit, table: Table | None) -> dict:
  """Residuals of log loss trending with N or D: Spearman rank correlation, two-sided p below
  `TREND_P` (0.01 per variable) and |rho| >= `TREND_RHO` (Spearman 1904; Li et al. 2025
  recommend inspecting residuals against each variable)."""
  from scipy import stats

  if table is None or not fit.goodness:
    return _skip("residual_trend", "no loss surface fitted to a table")
  r = _residuals(fit, table)
  parts, bad = [], []
  for sym, col in (("N", table.params), ("D", table.tokens)):
    if np.unique(col).size < 3:
      continue
    rho, p = stats.spearmanr(np.log(col), r)
    parts.append(f"rho({sym}) = {rho:+.2f} (p = {p:.2g})")
    if p < TREND_P and abs(rho) >= TREND_RHO:
      bad.append(sym)
  if not parts:
    return _skip("residual_trend", "fewer than 3 distinct N and D")
  detail = ", ".join(parts)
  if bad:
    return _check("residual_trend", False, detail + f": residuals trend with {' and '.join(bad)}"
                  "; the law's form misses a trend; look at plots/residuals and consider "
                  "another law or dropping a regime (e.g. the smallest models)")
  return _check("residual_trend", True, detail)


def check_leave_one_budget_out(fit: Fit, table: Table | None) -> dict:
  """Refits with each budget left out and predicts it; warns when the pooled RMSE of log loss
  on the left-out runs exceeds `LOBO_RATIO` (2) times the in-sample error (Li et al. 2025:
  validate on data the fit has not seen).

  The in-sample error is `s_log`, the residual scatter on n - P degrees of freedom: the RMSE
  of a fit's own residuals is biased low by sqrt((n - P) / n), which on a 20-run table made
  a correct law fail the ratio when its extreme budget was left out.
  """
  if table is None or not fit.goodness:
    return _skip("leave_one_budget_out", "no loss surface fitted to a table")
  b = _budgets(table)
  labels = np.unique(b[np.isfinite(b)])
  if labels.size < 3:
    return _skip("leave_one_budget_out", f"{labels.size} budget(s); needs 3 or more")
  keep = []
  for c in labels:
    try:
      core.check_identifiable(table.subset(b != c), fit.law, fit.info.get("x"))
      keep.append(c)
    except ScalingError:
      pass
  if len(keep) < 2:
    return _skip("leave_one_budget_out", "no budget can be left out with the law identifiable")
  weights = np.stack([(b != c).astype(np.float64) for c in keep])
  with np.errstate(all="ignore"):
    thetas = core.refit_weighted(fit, table, weights)
    data = core.design(table, fit.law, fit.info.get("x"))
    from scaling.fit import predict
    errs = predict.log_predict(fit.law, thetas, data) - data["logL"]  # [R, n]
  held = [errs[i][b == c] for i, c in enumerate(keep)]
  pooled = float(np.sqrt(np.mean(np.concatenate(held) ** 2)))
  per = [float(np.sqrt(np.mean(h * h))) for h in held]
  worst = int(np.nanargmax(per))
  ins = float(fit.goodness["s_log"])
  ratio = pooled / ins if ins > 0 else float("inf")
  detail = (f"RMSE of log loss on left-out budgets {pooled:.4g} vs in-sample s {ins:.4g} "
            f"({ratio:.2f}x, {len(keep)} budgets; worst {fmt_num(keep[worst])} FLOPs, "
            f"{per[worst]:.4g})")
  if np.isfinite(ratio) and ratio <= LOBO_RATIO:
    return _check("leave_one_budget_out", True, detail)
  return _check("leave_one_budget_out", False, detail + ": the law does not predict budgets "
                "it has not seen; do not trust its extrapolation; add budgets or check the "
                "worst one's runs")


_TRUE = {"1", "1.0", "true", "yes", "y", "t"}


def _under_tuned_marks(table: Table) -> list[str] | None:
  """Each row's under-tuned mark: `up` / `down` (the LR sweep), `batch:up` ... (another swept
  quantity, in the tables `scaling.fit.hparam_laws` fits), `?` (a bare true), '' (tuned);
  None without the column."""
  col = table.get("under_tuned")
  if col is not None:
    return ["?" if v > 0 else "" for v in np.asarray(col, np.float64)]
  if "under_tuned" not in table.extra:
    return None
  out = []
  for v in table.extra["under_tuned"]:
    v = v.strip().lower()
    out.append(v if v.rpartition(":")[2] in ("up", "down") else "?" if v in _TRUE else "")
  return out


def check_under_tuned(fit: Fit, table: Table | None) -> dict:
  """Runs the ladder marked `under_tuned`: their hyperparameter sweep's best sat at its edge
  (`scaling.ladder.tuning`), so the optimum lies outside the sweep. A fit over such rungs
  measures the tuning, not the scaling (Porian et al. 2024 trace most of the Kaplan-Chinchilla
  gap to tuning; Li et al. 2025 on hyperparameters). The detail says which way to extend."""
  from scaling.ladder import tuning

  if table is None:
    return _skip("under_tuned", "no run table")
  marks = _under_tuned_marks(table)
  if marks is None:
    return _skip("under_tuned", "the table has no 'under_tuned' column")
  idx = [i for i, m in enumerate(marks) if m]
  if not idx:
    return _check("under_tuned", True, f"none of {len(table)} runs is marked under-tuned")
  groups = table.extra.get("tune_group") or [None] * len(table)
  best = table.extra.get("sweep_best") or ["1"] * len(table)
  shown: dict = {}  # one line per rung: its best variant when the table lists them all
  for i in sorted(idx, key=lambda i: best[i].strip() != "1"):
    shown.setdefault(groups[i] if groups[i] not in (None, "", "None") else i, i)
  parts = []
  for i in list(shown.values())[:5]:
    param, _, way = marks[i].rpartition(":")
    param = param or "lr"
    if way not in ("up", "down"):
      parts.append(f"{table.run_id[i]}")
      continue
    key = {"lr": ("lr_mult", "lr"), "batch": ("batch_mult", "batch_tokens")}.get(param)
    mult, value = ((table.extra.get(k) or [None] * len(table))[i] for k in key) if key else (
        None, None)
    parts.append(f"{table.run_id[i]}: {tuning.hint(way, mult, value, param)}")
  more = ", ..." if len(shown) > 5 else ""
  return _check("under_tuned", False, f"{len(idx)} of {len(table)} runs are under-tuned ("
                + "; ".join(parts) + more + "): extend those sweeps, or leave the rungs out "
                "(--filter under_tuned= keeps the rest)")


CHECKS = (check_budgets, check_isoflop_edge, check_floor, check_interval_bounds,
          check_grid_edge, check_residual_trend, check_leave_one_budget_out, check_under_tuned)


def run_checks(fit: Fit, table: Table | None, *, skip: tuple[str, ...] = ()) -> list[dict]:
  """Every check in `CHECKS` on `fit` and the `table` it was fitted on (None for curves).

  Args:
    skip: check names not to run (e.g. `("leave_one_budget_out",)`, which refits once per
      budget).

  Returns:
    `[{name, ok, detail}, ...]` in `CHECKS` order.
  """
  out = []
  for check in CHECKS:
    name = check.__name__.removeprefix("check_")
    if name in skip:
      continue
    with np.errstate(all="ignore"):
      out.append(check(fit, table))
  return out


def failed(checks: list[dict]) -> list[dict]:
  """The checks that did not pass."""
  return [c for c in checks if not c["ok"]]

