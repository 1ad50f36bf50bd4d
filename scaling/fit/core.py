"""Fitting any law in `laws.LAWS` to a table: grid of starts, bootstrap, extrapolation check.

A fit is Hoffmann et al.'s procedure (2022, Sec. 3.3, App. D.2): Huber (delta = 1e-3) on the
log of the loss, L-BFGS from every point of a grid, keep the best. The grid runs as one batched
program (`optim.minimize_batched`). The bootstrap resamples runs with replacement (Efron 1979),
as a vector of counts used as weights in the same objective, or resamples the fit's residuals
(`residual_replicates`); either way all replicates share one compiled program and run side by
side.
"""

from __future__ import annotations

import numpy as np

from scaling.errors import ScalingError
from scaling.fit import laws as laws_lib
from scaling.fit import optim, predict, varpro

# Re-exported: `scaling.fit.core.Fit`, `.design`, ... are where callers have always found them.
from scaling.fit.base import (  # noqa: F401
  LAW_WORDS,
  X_COLUMNS,
  Fit,
  check_identifiable,
  design,
  fmt_num,
  resample_counts,
)
from scaling.fit.table import Table


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


RESAMPLING = {
    "runs": "runs, with replacement",
    "residuals": "residuals of the fit, with replacement (fixed design)",
}


def residual_replicates(state: dict, law: str, samples: int, seed: int = 0) -> np.ndarray:
  """Log-losses `[samples, n]` of a model-based (residual) bootstrap of a grid fit.

  Each replicate is the fitted log-loss plus residuals drawn with replacement, centred and
  inflated by sqrt(n / (n - P)) for the P fitted parameters (Davison & Hinkley 1997, Sec. 6.3,
  Alg. 6.3; Efron & Tibshirani 1993, Sec. 9.5). This is the bootstrap of a designed experiment:
  the (N, D) of a ladder's rungs were chosen, only their losses are random. Resampling runs
  instead also resamples the design, which for a ladder of a dozen runs often drops a whole
  budget or size and widens intervals beyond what the noise explains. It assumes the law's form
  is right and the scatter the same everywhere; the fit's `residual_trend` check tests both.
  """
  data, theta = state["data"], state["theta"]
  fitted = laws_lib.evaluate(law, theta, data)
  n, p = len(fitted), len(theta)
  if n <= p:
    raise ScalingError(f"--resample=residuals needs more runs than the law's {p} parameters; "
                       f"the table has {n}: use --resample=runs or add runs")
  r = data["logL"] - fitted
  r = (r - r.mean()) * np.sqrt(n / (n - p))
  rng = np.random.default_rng(seed)
  return fitted + r[rng.integers(0, n, size=(samples, n))]


def bootstrap_grid(table: Table, fit: Fit, state: dict, samples: int = 1000, seed: int = 0,
                   n_starts: int = 4, ftol: float = 1e-15, max_iter: int = 1000,
                   resample: str = "runs") -> np.ndarray:
  """Bootstrap of a grid fit; fills `fit.samples` with natural parameters.

  `resample`: `runs` (pairs: runs with replacement, Efron 1979) or `residuals`
  (`residual_replicates`).

  Returns:
    theta replicates `[samples, P]` (optimisation space) for derived quantities.
  """
  if resample not in RESAMPLING:
    raise ScalingError(f"--resample={resample!r}: choose one of {', '.join(RESAMPLING)}")
  spec = laws_lib.LAWS[fit.law]
  data = {k: np.broadcast_to(v, (samples, len(v))) for k, v in state["data"].items()
          if k != "w"}
  if resample == "runs":
    data["w"] = resample_counts(len(table), samples, seed)
  else:
    data["w"] = np.ones((samples, len(table)))
    data["logL"] = residual_replicates(state, fit.law, samples, seed)
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
                           "resampling": RESAMPLING[resample]}
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
            method: str = "grid", resample: str = "runs") -> Fit:
  """Fits `law` to `table` with Hoffmann's procedure (or variable projection for Chinchilla).

  Chinchilla fits get their derived quantities (Hoffmann et al. 2022, Eq. 4) from
  `scaling.fit.chinchilla.add_derived`.
  """
  if law not in laws_lib.LAWS:
    raise ScalingError(f"unknown law {law!r}: choose one of {', '.join(laws_lib.LAWS)}")
  if method == "varpro":
    if law != "chinchilla":
      raise ScalingError("--method=varpro is implemented for the chinchilla law only")
    if bootstrap and resample != "runs":
      raise ScalingError(f"--resample={resample} is implemented for --method=grid; use "
                         "--method=grid or --resample=runs")
    return predict.summarise(varpro.fit_varpro(table, bootstrap=bootstrap, seed=seed), table)
  if method != "grid":
    raise ScalingError(f"unknown --method={method!r}: choose grid or varpro")
  fit, state = fit_grid(table, law, x=x)
  if bootstrap:
    bootstrap_grid(table, fit, state, bootstrap, seed, resample=resample)
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
