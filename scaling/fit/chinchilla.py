"""Chinchilla's three approaches (Hoffmann et al. 2022, Sec. 3) to the compute-optimal frontier.

Approach 1 (Sec. 3.1): lower envelope of training curves over FLOPs; the run on the envelope
at each C gives (N, D); fit N_opt ∝ C^a, D_opt ∝ C^b.
Approach 2 (Sec. 3.2): IsoFLOP profiles: per budget a parabola in log N (and in log D); its
minimum gives N_opt(C), D_opt(C); fit the same power laws.
Approach 3 (Sec. 3.3): fit L(N, D) = E + A/N^alpha + B/D^beta (`core.fit_law`) and derive
the frontier in closed form (Eq. 4).
"""

from __future__ import annotations

import numpy as np

from scaling.errors import ScalingError
from scaling.fit import core
from scaling.fit import laws as laws_lib
from scaling.fit.core import Fit
from scaling.fit.table import Curve, Table


def add_derived(fit: Fit, predict_flops: float, flops_per_param_token: float = 6.0) -> Fit:
  """Adds a, b, G and N_opt, D_opt, loss at `predict_flops` (FLOPs) to an Approach 3 fit.

  Hoffmann et al. 2022, Eq. 4 under C = k N D (k = 6 there; another FLOP accounting changes
  k). Bootstrap samples, when present, get the same quantities so each has an interval.
  """
  p = fit.params
  opt = laws_lib.chinchilla_optimal(p["E"], p["A"], p["B"], p["alpha"], p["beta"],
                                    predict_flops, flops_per_param_token)
  fit.derived.update({"a": float(opt["a"]), "b": float(opt["b"]), "G": float(opt["G"]),
                      "predict_flops": float(predict_flops),
                      "params_opt": float(opt["params"]), "tokens_opt": float(opt["tokens"]),
                      "loss_opt": float(opt["loss"]),
                      "tokens_per_param": float(opt["tokens"] / opt["params"])})
  fit.info["flops_per_param_token"] = flops_per_param_token
  if fit.samples:
    s = fit.samples
    o = laws_lib.chinchilla_optimal(s["E"], s["A"], s["B"], s["alpha"], s["beta"],
                                    predict_flops, flops_per_param_token)
    with np.errstate(divide="ignore", invalid="ignore"):  # degenerate replicates: inf/NaN
      ratio = o["tokens"] / o["params"]
    s.update({"a": o["a"], "b": o["b"], "G": o["G"], "params_opt": o["params"],
              "tokens_opt": o["tokens"], "loss_opt": o["loss"], "tokens_per_param": ratio})
  return fit


def approach3(table: Table, *, method: str = "grid", bootstrap: int = 0, seed: int = 0,
              predict_flops: float | None = None, flops_per_param_token: float = 6.0,
              resample: str = "runs") -> Fit:
  """Approach 3: the parametric fit plus its compute-optimal frontier.

  Args:
    resample: the bootstrap's resampling, `runs` or `residuals` (`core.bootstrap_grid`).
    predict_flops: budget (FLOPs) for the N_opt / D_opt / loss prediction; default 10x the
      largest run's compute.
  """
  fit = core.fit_law(table, "chinchilla", bootstrap=bootstrap, seed=seed, method=method,
                     resample=resample)
  fit.approach = 3
  predict_flops = predict_flops or 10.0 * float(np.max(table.flops))
  return add_derived(fit, predict_flops, flops_per_param_token)


# --- Approach 2 ----------------------------------------------------------------------------------
def group_budgets(table: Table, rel_tol: float = 0.1) -> np.ndarray:
  """A budget (FLOPs) per row: the `budget` column, else C (flops or 6ND) clustered so that
  runs within `rel_tol` of each other share a budget (their geometric mean)."""
  b = table.get("budget")
  if b is not None:
    return b
  c = table.flops
  order = np.argsort(c)
  labels = np.empty(len(c))
  group = [order[0]]
  for i in order[1:]:
    if c[i] <= c[group[0]] * (1 + rel_tol):
      group.append(i)
    else:
      labels[group] = np.exp(np.mean(np.log(c[group])))
      group = [i]
  labels[group] = np.exp(np.mean(np.log(c[group])))
  return labels


def _weighted_parabola(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
  """Least-squares y = p2 x^2 + p1 x + p0 with weights; batched over leading axes of `w`.

  Returns coefficients [..., 3] as (p2, p1, p0); NaN where the system is singular.
  """
  X = np.stack([x * x, x, np.ones_like(x)], -1)  # [n, 3]
  G = np.einsum("...n,ni,nj->...ij", w, X, X)
  h = np.einsum("...n,ni,n->...i", w, X, y)
  with np.errstate(all="ignore"):
    ok = np.abs(np.linalg.det(G)) > 1e-12 * np.maximum(1.0, np.abs(G).max(axis=(-1, -2))) ** 3
    G = np.where(ok[..., None, None], G, np.eye(3))
    coef = np.linalg.solve(G, h[..., None])[..., 0]
  return np.where(ok[..., None], coef, np.nan)


def _isoflop_minima(table: Table, budgets: np.ndarray, weights: np.ndarray, min_points: int):
  """Per budget: parabola minima of loss in log N and in log D, batched over weight rows."""
  out = []
  for c in np.unique(budgets):
    idx = np.flatnonzero(budgets == c)
    if len(np.unique(table.params[idx])) < min_points:
      continue
    w = weights[..., idx]
    res = {"budget": float(c), "n_runs": int(len(idx))}
    for name, col in (("params", table.params), ("tokens", table.tokens)):
      x = np.log(col[idx])
      x0 = x.mean()  # centred for conditioning
      p2, p1, p0 = np.moveaxis(_weighted_parabola(x - x0, table.loss[idx], w), -1, 0)
      with np.errstate(all="ignore"):
        xm = -p1 / (2 * p2)
        valid = (p2 > 0) & np.isfinite(xm) & ((w > 0).sum(-1) >= min_points)
        res[name] = np.where(valid, np.exp(xm + x0), np.nan)
        res[f"{name}_loss"] = np.where(valid, p0 - p1 * p1 / (4 * p2), np.nan)
        res[f"{name}_inside"] = (xm + x0 >= x.min()) & (xm + x0 <= x.max())
    out.append(res)
  return out


def _power_fit(logc: np.ndarray, logy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """OLS of log y = slope log C + intercept, batched over the leading axis; NaN-aware."""
  ok = np.isfinite(logy)
  n = ok.sum(-1)
  x = np.where(ok, logc, 0.0)
  y = np.where(ok, logy, 0.0)
  with np.errstate(all="ignore"):
    mx, my = x.sum(-1) / n, y.sum(-1) / n
    sxx = (np.where(ok, (logc - mx[..., None]) ** 2, 0)).sum(-1)
    sxy = (np.where(ok, (logc - mx[..., None]) * (logy - my[..., None]), 0)).sum(-1)
    slope = np.where(n >= 2, sxy / sxx, np.nan)
  return slope, my - slope * mx


def approach2(table: Table, *, bootstrap: int = 0, seed: int = 0, min_points: int = 3,
              predict_flops: float | None = None) -> Fit:
  """Approach 2: IsoFLOP parabolas, then N_opt = k_N C^a and D_opt = k_D C^b by OLS in logs.

  Budgets come from the `budget` column (or clustered compute). The bootstrap resamples runs
  with replacement within each budget, so every profile keeps its size; a replicate whose
  parabola is not convex at a budget drops that budget.

  Raises:
    ScalingError: fewer than two budgets with `min_points` distinct model sizes.
  """
  budgets = group_budgets(table)
  if np.isnan(budgets).any():
    # A mixed ladder: only the IsoFLOP rows carry a budget; the grid rows have no profile.
    keep = np.flatnonzero(np.isfinite(budgets))
    table, budgets = table.subset(keep), budgets[keep]
  minima = _isoflop_minima(table, budgets, np.ones(len(table)), min_points)
  usable = [m for m in minima if np.isfinite(m["params"]) and np.isfinite(m["tokens"])]
  if len(usable) < 2:
    found = ", ".join(f"{c:.3g}" for c in np.unique(budgets))
    raise ScalingError(
        f"{table.source}: Approach 2 needs IsoFLOP profiles at two or more budgets, each with "
        f"at least {min_points} model sizes and a convex (U-shaped) loss; found budget(s) "
        f"{found} with {len(usable)} usable. Add runs at other budgets (column 'budget'), or "
        "use --approach=3")
  logc = np.log([m["budget"] for m in usable])
  a, ka = _power_fit(logc, np.log([m["params"] for m in usable]))
  b, kb = _power_fit(logc, np.log([m["tokens"] for m in usable]))
  predict_flops = predict_flops or 10.0 * float(np.max(budgets))
  params = {"a": float(a), "k_N": float(np.exp(ka)), "b": float(b), "k_D": float(np.exp(kb))}
  derived = {"predict_flops": predict_flops,
             "params_opt": float(np.exp(ka) * predict_flops ** a),
             "tokens_opt": float(np.exp(kb) * predict_flops ** b)}
  fit = Fit("chinchilla", 2, "isoflop", params, derived, len(table),
            info={"formula": "N_opt = k_N C^a, D_opt = k_D C^b from IsoFLOP parabola minima",
                  "source": "Hoffmann et al. 2022, Sec. 3.2", "table": table.source,
                  "preparation": list(table.notes),
                  "minima": [{k: _scalar(v) for k, v in m.items()} for m in usable],
                  "budgets_dropped": [m["budget"] for m in minima if m not in usable]})
  if bootstrap:
    counts = core.resample_counts(len(table), bootstrap, seed, strata=budgets)
    reps = _isoflop_minima(table, budgets, counts, min_points)
    reps = [r for r in reps if any(r["budget"] == m["budget"] for m in usable)]
    lc = np.broadcast_to(np.log([r["budget"] for r in reps]), (bootstrap, len(reps)))
    sa, ska = _power_fit(lc, np.log(np.stack([r["params"] for r in reps], -1)))
    sb, skb = _power_fit(lc, np.log(np.stack([r["tokens"] for r in reps], -1)))
    fit.samples = {"a": sa, "k_N": np.exp(ska), "b": sb, "k_D": np.exp(skb),
                   "params_opt": np.exp(ska) * predict_flops ** sa,
                   "tokens_opt": np.exp(skb) * predict_flops ** sb}
    fit.info["bootstrap"] = {"samples": bootstrap, "seed": seed,
                             "resampling": "runs, with replacement, within each budget"}
  return fit


def _scalar(v):
  v = np.asarray(v)
  return v.item() if v.ndim == 0 else v.tolist()


# --- Approach 1 ----------------------------------------------------------------------------------
def envelope(curves: list[Curve], n_points: int = 1500, keep_edges: bool = False) -> dict:
  """Lower envelope of loss over FLOPs (Hoffmann et al. 2022, Sec. 3.1).

  Each curve is interpolated linearly in log C; at `n_points` log-spaced FLOP values (1,500 in
  the paper) the run with the lowest loss among those whose curve reaches C is on the
  envelope. Unless `keep_edges`, points won by the smallest or largest model are dropped: there
  the optimum may lie outside the ladder, and keeping them bends the fitted exponent.

  Returns:
    dict of arrays `flops`, `params`, `tokens`, `loss`, `run` (index into curves).
  """
  if len(curves) < 2:
    raise ScalingError(f"Approach 1 needs training curves of two or more runs; got {len(curves)}")
  lo = min(float(c.flops[c.flops > 0].min()) for c in curves)
  hi = max(float(c.flops.max()) for c in curves)
  grid = np.geomspace(lo, hi, n_points)
  losses = np.full((len(curves), n_points), np.inf)
  tokens = np.zeros((len(curves), n_points))
  for i, c in enumerate(curves):
    ok = c.flops > 0
    lf = np.log(c.flops[ok])
    inside = (np.log(grid) >= lf.min()) & (np.log(grid) <= lf.max())
    losses[i, inside] = np.interp(np.log(grid[inside]), lf, c.loss[ok])
    tokens[i] = np.interp(np.log(grid), lf, c.tokens[ok])
  win = np.argmin(losses, axis=0)
  n = np.array([c.params for c in curves])
  keep = np.isfinite(losses[win, np.arange(n_points)])
  if not keep_edges:
    keep &= (n[win] > n.min()) & (n[win] < n.max())
  idx = np.flatnonzero(keep)
  return {"flops": grid[idx], "params": n[win[idx]], "tokens": tokens[win[idx], idx],
          "loss": losses[win[idx], idx], "run": win[idx]}


def approach1(curves: list[Curve], *, bootstrap: int = 0, seed: int = 0,
              n_points: int = 1500, keep_edges: bool = False,
              predict_flops: float | None = None) -> Fit:
  """Approach 1: fit N_opt ∝ C^a and D_opt ∝ C^b to the envelope of training curves.

  The bootstrap resamples runs (whole curves) with replacement and recomputes the envelope.
  """
  env = envelope(curves, n_points, keep_edges)
  if len(np.unique(env["params"])) < 2:
    raise ScalingError("Approach 1: fewer than two model sizes lie on the loss envelope (after "
                       "dropping the smallest and largest); add runs of intermediate size")
  lc = np.log(env["flops"])
  a, ka = _power_fit(lc, np.log(env["params"]))
  b, kb = _power_fit(lc, np.log(env["tokens"]))
  predict_flops = predict_flops or 10.0 * float(env["flops"].max())
  fit = Fit("chinchilla", 1, "envelope",
            {"a": float(a), "k_N": float(np.exp(ka)), "b": float(b), "k_D": float(np.exp(kb))},
            {"predict_flops": predict_flops, "params_opt": float(np.exp(ka) * predict_flops ** a),
             "tokens_opt": float(np.exp(kb) * predict_flops ** b)},
            len(curves),
            info={"formula": "N_opt = k_N C^a, D_opt = k_D C^b on the loss envelope",
                  "source": "Hoffmann et al. 2022, Sec. 3.1", "envelope_points": len(lc),
                  "runs_on_envelope": sorted({curves[i].run_id for i in env["run"]})})
  if bootstrap:
    rng = np.random.default_rng(seed)
    samples = {k: [] for k in ("a", "k_N", "b", "k_D", "params_opt", "tokens_opt")}
    for _ in range(bootstrap):
      pick = np.unique(rng.integers(0, len(curves), len(curves)))  # duplicates add nothing
      try:
        e = envelope([curves[i] for i in pick], n_points // 5, keep_edges)
        sa, ska = _power_fit(np.log(e["flops"]), np.log(e["params"]))
        sb, skb = _power_fit(np.log(e["flops"]), np.log(e["tokens"]))
      except ScalingError:
        sa = ska = sb = skb = np.nan
      for k, v in (("a", sa), ("k_N", np.exp(ska)), ("b", sb), ("k_D", np.exp(skb)),
                   ("params_opt", np.exp(ska) * predict_flops ** sa),
                   ("tokens_opt", np.exp(skb) * predict_flops ** sb)):
        samples[k].append(float(v) if np.isfinite(v) else np.nan)
    fit.samples = {k: np.array(v) for k, v in samples.items()}
    fit.info["bootstrap"] = {"samples": bootstrap, "seed": seed,
                             "resampling": "runs (whole curves), with replacement"}
  return fit
