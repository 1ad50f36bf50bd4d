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
    """The contract of `scaling fit --json` (DESIGN.md): law, approach, params, intervals,
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
               dict(obj.get("info", {})))


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


def _check_enough(table: Table, law: str) -> None:
  p = len(laws_lib.LAWS[law].theta_names)
  if len(table) <= p:
    raise ScalingError(f"{table.source}: {len(table)} rows cannot determine the {p} parameters "
                       f"of the {law} law; add runs (at least {p + 1})")


def fit_grid(table: Table, law: str = "chinchilla", *, x: str | None = None,
             starts: np.ndarray | None = None, delta: float = laws_lib.HUBER_DELTA
             ) -> tuple[Fit, dict]:
  """Hoffmann's procedure for `law`: L-BFGS from every start in the grid, keep the best.

  Returns:
    (fit, state) where `state` keeps what a bootstrap needs (theta of every start, data).
  """
  _check_enough(table, law)
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
          "iterations_best": int(iters[best]), "theta": theta.tolist()}
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
  fit.samples.update({k: np.asarray(v) for k, v in spec.natural(theta).items()})
  fit.info["bootstrap"] = {"samples": samples, "seed": seed, "starts_per_sample": n_starts,
                           "resampling": "runs, with replacement"}
  return theta


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
    from scaling.fit import varpro
    return varpro.fit_varpro(table, bootstrap=bootstrap, seed=seed)
  if method != "grid":
    raise ScalingError(f"unknown --method={method!r}: choose grid or varpro")
  fit, state = fit_grid(table, law, x=x)
  if bootstrap:
    bootstrap_grid(table, fit, state, bootstrap, seed)
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
