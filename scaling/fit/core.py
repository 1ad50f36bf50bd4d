"""Fitting any law in `laws.LAWS` to a table: grid of starts, bootstrap, extrapolation check.

A fit is Hoffmann et al.'s procedure (2022, Sec. 3.3, App. D.2): Huber (delta = 1e-3) on the
log of the loss, L-BFGS from every point of a grid, keep the best. The grid runs as one batched
program (`optim.minimize_batched`). The bootstrap resamples runs with replacement (Efron 1979);
a resample is a vector of counts used as weights in the same objective, so all replicates share
one compiled program and run side by side.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from scaling.errors import ScalingError
from scaling.fit import laws as laws_lib
from scaling.fit import optim
from scaling.fit.table import Table

# Which table column each law's `logX` reads; `x` picks it for single-variable laws.
X_COLUMNS = {"params": "params", "N": "params", "tokens": "tokens", "D": "tokens",
             "flops": "flops", "C": "flops"}


@dataclasses.dataclass
class Fit:
  """A fitted law with its uncertainty.

  Attributes:
    law: `chinchilla`, `kaplan`, `kaplan_nd`, `power`, `clark` or `krajewski`.
    approach: Chinchilla approach (1, 2, 3) or None.
    method: `grid` (Hoffmann's procedure), `varpro`, `envelope` (approach 1), `isoflop`
      (approach 2), `ols`.
    params: fitted parameters by their published names (`E`, `A`, `B`, `alpha`, `beta`, ...).
    derived: derived quantities (`a`, `b`, `G`, N_opt/D_opt/loss at `prediction_flops`, ...).
    n_points: runs (or envelope points) used.
    samples: bootstrap replicates of every parameter and derived quantity (empty if none).
    ci: two-sided level of the percentile intervals.
    objective: final value of the fitted objective (Huber sum), when there is one.
    info: everything else a report shows (x variable, preparation notes, per-budget minima).
    goodness: fit quality on log loss (`predict.goodness`): `r2`, `rmse_log`, `s_log` (the
      residual standard deviation on n - p degrees of freedom), `dof`, `n`.
    checks: self-checks (`checks.run_checks`), each `{name, ok, detail}`.
    validation: held-out runs and their predictions (`validation.validate`).
    provenance: where the law came from (`provenance.build`).
  """
  law: str
  approach: int | None
  method: str
  params: dict[str, float]
  derived: dict[str, float] = dataclasses.field(default_factory=dict)
  n_points: int = 0
  samples: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  ci: float = 0.95
  objective: float | None = None
  info: dict = dataclasses.field(default_factory=dict)
  goodness: dict = dataclasses.field(default_factory=dict)
  checks: list[dict] = dataclasses.field(default_factory=list)
  validation: list[dict] = dataclasses.field(default_factory=list)
  provenance: dict = dataclasses.field(default_factory=dict)

  def intervals(self) -> dict[str, list[float]]:
    """Percentile bootstrap intervals `[low, high]` for every sampled quantity."""
    lo, hi = 50 * (1 - self.ci), 50 * (1 + self.ci)
    out = {}
    for k, v in self.samples.items():
      v = np.asarray(v, np.float64)
      v = v[np.isfinite(v)]
      if v.size:
        out[k] = [float(np.percentile(v, lo)), float(np.percentile(v, hi))]
    return out

  def to_json(self, include_samples: bool = False) -> dict:
    """The contract of `scaling fit --json`: law, approach, params, intervals,
    n_points, plus the derived quantities as top-level keys (`a`, `b`, ...)."""
    out = {"law": self.law, "approach": self.approach, "method": self.method,
           "params": {k: float(v) for k, v in self.params.items()},
           "intervals": self.intervals(), "n_points": int(self.n_points),
           "ci": self.ci, "bootstrap": int(_n_samples(self.samples)),
           "derived": {k: _num(v) for k, v in self.derived.items()}}
    for k, v in self.derived.items():
      out.setdefault(k, _num(v))
    if self.objective is not None:
      out["objective"] = float(self.objective)
    out["info"] = _jsonable(self.info)
    if self.goodness:
      out["goodness"] = _jsonable(self.goodness)
    out["checks"] = _jsonable(self.checks)
    out["validation"] = _jsonable(self.validation)
    if self.provenance:
      out["provenance"] = _jsonable(self.provenance)
    if include_samples and self.samples:
      out["samples"] = {k: [float(x) for x in np.asarray(v)] for k, v in self.samples.items()}
    return out

  @classmethod
  def from_json(cls, obj: dict) -> Fit:
    """Inverse of `to_json` (samples restored when they were written)."""
    samples = {k: np.asarray(v, np.float64) for k, v in obj.get("samples", {}).items()}
    return cls(obj["law"], obj.get("approach"), obj.get("method", "grid"),
               dict(obj["params"]), dict(obj.get("derived", {})), int(obj.get("n_points", 0)),
               samples, float(obj.get("ci", 0.95)), obj.get("objective"),
               dict(obj.get("info", {})), dict(obj.get("goodness", {})),
               list(obj.get("checks", [])), list(obj.get("validation", [])),
               dict(obj.get("provenance", {})))


def _n_samples(samples) -> int:
  return len(next(iter(samples.values()))) if samples else 0


def _num(v):
  try:
    return float(v)
  except (TypeError, ValueError):
    return v


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return [_jsonable(v) for v in x.tolist()]
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  return x


def design(table: Table, law: str, x: str | None = None) -> dict[str, np.ndarray]:
  """The arrays `laws.LAWS[law].log_predict` reads, from `table` (logs of N, D, C, E, G, L)."""
  spec = laws_lib.LAWS[law]
  d = {"logL": np.log(table.loss), "w": np.ones(len(table))}
  for key in spec.inputs:
    if key == "logN":
      col = table.params
      if law == "clark":
        # Clark et al. 2022 measure size by the dense model a routed model is built from,
        # i.e. the parameters active per token.
        col = table.get("params_active") if table.get("params_active") is not None else col
      d["logN"] = np.log(col)
    elif key == "logD":
      d["logD"] = np.log(table.tokens)
    elif key == "logE":
      d["logE"] = np.log(table.require("experts", f"by the {law} law (number of experts)"))
    elif key == "logG":
      d["logG"] = np.log(table.require("granularity", f"by the {law} law (granularity G)"))
    elif key == "logX":
      if x not in X_COLUMNS:
        raise ScalingError(f"--x={x!r}: choose params, tokens or flops for the {law} law")
      col = X_COLUMNS[x]
      d["logX"] = np.log(table.flops if col == "flops" else table.get(col))
  return d


# How messages name each law and each input that must vary (the `design` keys).
LAW_WORDS = {"chinchilla": "a Chinchilla law", "kaplan_nd": "the joint Kaplan law",
             "power": "a power law", "kaplan": "a Kaplan power law", "clark": "the Clark law",
             "krajewski": "the Krajewski law"}
_INPUT_WORDS = {"logN": ("N", "model sizes"), "logD": ("D", "token counts"),
                "logE": ("experts", "expert counts"), "logG": ("G", "granularities"),
                "logX": ("X", "values of the x variable")}


def fmt_num(v: float) -> str:
  """Short number for messages: 1e6, 2.5e-3, 0.25 (not 1e+06)."""
  return (f"{float(v):.3g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-"))


def check_identifiable(table: Table, law: str, x: str | None = None) -> None:
  """Refuses tables that cannot identify `law`, saying what is missing.

  A law needs every input it reads to take two or more values (a Chinchilla law cannot split
  A/N^alpha from E when every run has the same N), a loss that varies, and at least P + 1
  distinct design points for its P parameters (one more than P, so the residual scatter has a
  degree of freedom: the prediction intervals need it).

  Raises:
    ScalingError: naming the input, the count and the fix.
  """
  spec = laws_lib.LAWS[law]
  data = design(table, law, x)
  n, p, words = len(table), len(spec.theta_names), LAW_WORDS.get(law, f"the {law} law")
  runs = "the only run has" if n == 1 else f"all {n} runs have"
  symbols = []
  for key in spec.inputs:
    sym, plural = _INPUT_WORDS[key]
    if key == "logX":
      sym, plural = {"params": ("N", "model sizes"), "tokens": ("D", "token counts"),
                     "flops": ("C", "compute budgets")}[X_COLUMNS[x]]
    symbols.append(sym)
    if np.unique(data[key]).size < 2:
      raise ScalingError(f"{table.source}: {runs} {sym} = {fmt_num(np.exp(data[key][0]))}: "
                         f"{words} needs runs at two or more {plural}")
  loss = table.loss
  if np.ptp(loss) <= 1e-12 * float(np.max(loss)):
    raise ScalingError(f"{table.source}: {runs} loss = {fmt_num(loss[0])}: a loss that does "
                       f"not vary cannot fit {words}; check the loss column (--columns "
                       "loss=NAME) and that the runs trained")
  points = np.unique(np.stack([data[k] for k in spec.inputs], -1), axis=0).shape[0]
  if points <= p:
    what = (f"{n} runs at only {points} distinct points" if points < n else f"{n} runs")
    raise ScalingError(f"{table.source}: {what} cannot determine the {p} parameters of {words}; "
                       f"add runs at {p + 1 - points} or more new "
                       f"({', '.join(symbols)}) points "
                       f"(at least {p + 1} distinct in all)")


def fit_grid(table: Table, law: str = "chinchilla", *, x: str | None = None,
             starts: np.ndarray | None = None, delta: float = laws_lib.HUBER_DELTA
             ) -> tuple[Fit, dict]:
  """Hoffmann's procedure for `law`: L-BFGS from every start in the grid, keep the best.

  Returns:
    (fit, state) where `state` keeps what a bootstrap needs (theta of every start, data).
  """
  check_identifiable(table, law, x)
  spec = laws_lib.LAWS[law]
  data = design(table, law, x)
  grid = spec.grid if starts is None else np.asarray(starts, np.float64)
  fun = laws_lib.objective(law, delta)
  thetas, values, iters = optim.minimize_batched(fun, grid, data)
  best = int(np.argmin(values))
  if not np.isfinite(values[best]):
    raise ScalingError(f"{table.source}: the {law} fit did not converge from any start; check "
                       "the table's units (loss in nats, N in parameters, D in tokens)")
  theta = thetas[best]
  params = {k: float(v) for k, v in spec.natural(theta).items()}
  info = {"formula": spec.formula, "source": spec.source, "x": x, "starts": int(len(grid)),
          "huber_delta": delta, "table": table.source, "preparation": list(table.notes),
          "iterations_best": int(iters[best]), "theta": theta.tolist(),
          # For `checks`: whether the grid of starts brackets the optimum.
          "grid_range": [grid.min(0).tolist(), grid.max(0).tolist()],
          "best_start": grid[best].tolist(), "theta_names": list(spec.theta_names)}
  fit = Fit(law, 3 if law == "chinchilla" else None, "grid", params, {}, len(table),
            objective=float(values[best]), info=info)
  return fit, {"theta": theta, "thetas": thetas, "values": values, "data": data, "fun": fun}


def bootstrap_starts(state: dict, k: int = 4) -> np.ndarray:
  """The full-data optimum plus the next `k - 1` most different good local optima.

  Re-running all 4,500 Hoffmann starts per replicate would cost 1,000x the fit; replicates
  are small perturbations of the data, so starting from the optima the full grid found (and
  from distinct runners-up, to let a replicate switch basin) is the usual compromise.
  """
  thetas, values = state["thetas"], state["values"]
  order = np.argsort(values)
  chosen = [thetas[order[0]]]
  for i in order[1:]:
    if len(chosen) >= k or not np.isfinite(values[i]):
      break
    if all(np.max(np.abs(thetas[i] - c)) > 0.05 for c in chosen):
      chosen.append(thetas[i])
  while len(chosen) < k:  # a flat landscape: jitter the optimum instead
    chosen.append(chosen[0] + 0.1 * (len(chosen)) * np.sign(np.arange(len(chosen[0])) - 1.5))
  return np.stack(chosen)


def resample_counts(n: int, samples: int, seed: int = 0,
                    strata: np.ndarray | None = None) -> np.ndarray:
  """Bootstrap resamples as counts `[samples, n]` (each row sums to n).

  With `strata` (a label per row) rows are resampled within each stratum, e.g. within an
  IsoFLOP budget so that every budget keeps its size.
  """
  rng = np.random.default_rng(seed)
  if strata is None:
    return rng.multinomial(n, np.full(n, 1.0 / n), size=samples).astype(np.float64)
  counts = np.zeros((samples, n))
  for s in np.unique(strata):
    idx = np.flatnonzero(strata == s)
    counts[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)), size=samples)
  return counts


def bootstrap_grid(table: Table, fit: Fit, state: dict, samples: int = 1000, seed: int = 0,
                   n_starts: int = 4, ftol: float = 1e-15, max_iter: int = 1000) -> np.ndarray:
  """Bootstrap over runs for a grid fit; fills `fit.samples` with natural parameters.

  Returns:
    theta replicates `[samples, P]` (optimisation space) for derived quantities.
  """
  spec = laws_lib.LAWS[fit.law]
  counts = resample_counts(len(table), samples, seed)
  data = {k: np.broadcast_to(v, (samples, len(v))) for k, v in state["data"].items()
          if k != "w"}
  data["w"] = counts
  starts = np.broadcast_to(bootstrap_starts(state, n_starts),
                           (samples, n_starts, len(spec.theta_names)))
  # ftol is tightened far below scipy's default: the Huber sum is ~1e-3 here, and scipy's test
  # (reduction <= ftol * max(|f|, 1)) would stop a warm start near the full-data optimum after a
  # step or two, which shrinks the intervals (seen on the Epoch table: the replicate objective
  # stayed ~0.4% above the optimum that 500 cold starts find).
  thetas, values, _ = optim.minimize_batched(state["fun"], starts, data, batched_data=True,
                                             schedule=((n_starts, max_iter),), ftol=ftol)
  best = np.argmin(values, axis=1)
  theta = thetas[np.arange(samples), best]
  with np.errstate(over="ignore"):  # a replicate that ran off to a huge scale: inf, dropped
    fit.samples.update({k: np.asarray(v) for k, v in spec.natural(theta).items()})
  fit.info["bootstrap"] = {"samples": samples, "seed": seed, "starts_per_sample": n_starts,
                           "resampling": "runs, with replacement"}
  return theta


def refit_weighted(fit: Fit, table: Table, weights: np.ndarray) -> np.ndarray:
  """Refits `fit`'s law to `table` once per row of `weights` `[R, n]` (0 leaves a run out),
  warm-started from the fit, with the fit's method. Returns theta rows `[R, P]`.

  The refits run side by side as one program, like the bootstrap; leave-one-budget-out
  (`checks`) uses it.
  """
  weights = np.asarray(weights, np.float64)
  data = design(table, fit.law, fit.info.get("x"))
  if fit.method == "varpro":
    from scaling.fit import varpro
    ab, coef = varpro.refit_weights(data, weights, (fit.params["alpha"], fit.params["beta"]),
                                    delta=fit.info.get("huber_delta", laws_lib.HUBER_DELTA))
    natural = {"E": coef[:, 0], "A": coef[:, 1], "B": coef[:, 2], "alpha": ab[:, 0],
               "beta": ab[:, 1]}
    return np.clip(laws_lib.theta_from_natural("chinchilla", natural), -700.0, 700.0)
  theta = np.clip(laws_lib.theta_from_natural(fit.law, fit.params), -700.0, 700.0)
  # The fit and three nearby points, as `bootstrap_starts` jitters a flat landscape.
  starts = np.stack([theta + 0.1 * k * np.sign(np.arange(len(theta)) - 1.5) for k in range(4)])
  r = weights.shape[0]
  batch = {k: np.broadcast_to(v, (r, len(v))) for k, v in data.items() if k != "w"}
  batch["w"] = weights
  thetas, values, _ = optim.minimize_batched(
      laws_lib.objective(fit.law, fit.info.get("huber_delta", laws_lib.HUBER_DELTA)),
      np.broadcast_to(starts, (r,) + starts.shape), batch, batched_data=True,
      schedule=((len(starts), 1000),), ftol=1e-15)
  return thetas[np.arange(r), np.argmin(values, axis=1)]


def fit_law(table: Table, law: str, *, x: str | None = None, bootstrap: int = 0, seed: int = 0,
            method: str = "grid") -> Fit:
  """Fits `law` to `table` with Hoffmann's procedure (or variable projection for Chinchilla).

  Chinchilla fits get their derived quantities (Hoffmann et al. 2022, Eq. 4) from
  `scaling.fit.chinchilla.add_derived`.
  """
  if law not in laws_lib.LAWS:
    raise ScalingError(f"unknown law {law!r}: choose one of {', '.join(laws_lib.LAWS)}")
  if method == "varpro":
    if law != "chinchilla":
      raise ScalingError("--method=varpro is implemented for the chinchilla law only")
    from scaling.fit import predict, varpro
    return predict.summarise(varpro.fit_varpro(table, bootstrap=bootstrap, seed=seed), table)
  if method != "grid":
    raise ScalingError(f"unknown --method={method!r}: choose grid or varpro")
  fit, state = fit_grid(table, law, x=x)
  if bootstrap:
    bootstrap_grid(table, fit, state, bootstrap, seed)
  from scaling.fit import predict
  predict.summarise(fit, table)
  return fit


def extrapolation_check(table: Table, fitter, threshold: float | None = None,
                        quantile: float = 0.8) -> dict:
  """Fits on runs with compute below `threshold`, predicts the runs above it.

  Args:
    table: all runs.
    fitter: `table -> (predict: table -> loss)`; built by the caller for the law in use.
    threshold: FLOPs; default the `quantile` of the table's compute.

  Returns:
    dict with threshold (FLOPs), train/test counts, and the test errors: mean and max absolute
    relative error of the loss, and RMSE of log loss.
  """
  c = table.flops
  threshold = float(np.quantile(c, quantile)) if threshold is None else float(threshold)
  train, test = c <= threshold, c > threshold
  if test.sum() == 0 or train.sum() < 6:
    raise ScalingError(f"extrapolation check at C = {threshold:.3g} FLOPs leaves "
                       f"{int(train.sum())} runs to fit and {int(test.sum())} to predict; "
                       "choose another --holdout-above")
  predict = fitter(table.subset(train))
  held = table.subset(test)
  pred = predict(held)
  rel = pred / held.loss - 1
  return {"threshold_flops": threshold, "n_train": int(train.sum()), "n_test": int(test.sum()),
          "mean_abs_rel_error": float(np.mean(np.abs(rel))),
          "max_abs_rel_error": float(np.max(np.abs(rel))),
          "rmse_log": float(np.sqrt(np.mean(np.log(pred / held.loss) ** 2))),
          "mean_rel_error": float(np.mean(rel))}
