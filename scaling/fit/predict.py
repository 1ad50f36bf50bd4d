"""Prediction intervals for the loss of a new run at (N, D), and goodness of fit.

A parameter interval says where the law is; a user deciding whether a new run "met the law"
needs where the run's loss will be. That adds the scatter of runs around the law (seed noise,
data order, tuning) to the uncertainty of the fitted law itself. Both are treated on log loss,
where the fits are made (Hoffmann et al. 2022, Eq. 3) and where run-to-run scatter is roughly
multiplicative.

Method (`prediction_interval`), with r_i = log L_hat(x_i) - log L_i on the n fitted runs and
P law parameters:

- Scatter: s^2 = sum r_i^2 / (n - P), the lack-of-fit residual variance on n - P degrees of
  freedom, and a Student-t_{n-P} scatter term s t, which widens the interval for small tables
  exactly as the textbook regression prediction interval does (Seber & Wild 1989, *Nonlinear
  Regression*, Ch. 5; Draper & Smith 1998, *Applied Regression Analysis*, 3rd ed.).
- Uncertainty of the law, with bootstrap replicates (`fit.samples`, runs resampled with
  replacement): the predictive distribution of a new log loss is simulated as
  log L_hat_b(x) + s t, b a uniformly drawn replicate and t ~ Student-t_{n-P}, and its
  (1 - level)/2 and (1 + level)/2 quantiles are the interval: the bootstrap predictive
  distribution of Davison & Hinkley 1997 (*Bootstrap Methods and their Application*, Ch. 6,
  prediction in regression), with the new run's error drawn from the fitted t scatter instead
  of the few residuals (a table of 11 runs has too few residuals to give a 2.5% tail).
  Asymmetric law uncertainty (far extrapolation) stays asymmetric.
- Without replicates: the linearised (delta-method) interval
  log L_hat(x) +- t_{n-P, (1+level)/2} s sqrt(1 + g(x)^T (J^T J)^+ g(x)), J the Jacobian of log
  L_hat over the fitted runs and g(x) at the new point (Seber & Wild 1989, Ch. 5).

Measured coverage of the 95% interval on synthetic Chinchilla tables (tests/fit/test_predict.py:
8 tables of 40 runs with 2% multiplicative noise, 250 fresh runs each, inside the table's range
and up to 10x beyond it): 96.6% with 30 bootstrap replicates, 95.3% linearised. The fits
minimise a Huber objective, not least squares; s^2 from their residuals is slightly larger than the
least-squares one, which errs on the wide side.
"""

from __future__ import annotations

import functools

import numpy as np

from scaling.errors import ScalingError
from scaling.fit import base
from scaling.fit import laws as laws_lib
from scaling.fit.base import Fit
from scaling.fit.table import Table

# Monte Carlo draws of the bootstrap predictive distribution: the 2.5% quantile of 20,000 draws
# has a standard error of ~0.1 percentage points of coverage.
_DRAWS = 20000
_MIN_REPLICATES = 20  # fewer bootstrap replicates than this give noisy quantiles; use delta


def _names(law: str) -> list[str]:
  spec = laws_lib.LAWS[law]
  return list(spec.natural(np.zeros(len(spec.theta_names))))


def _surface_law(fit: Fit) -> laws_lib.LawSpec:
  spec = laws_lib.LAWS.get(fit.law)
  if spec is None or not set(_names(fit.law)) <= set(fit.params):
    raise ScalingError(f"a {fit.law} fit (approach {fit.approach}) has no loss surface L(N, D) "
                       "to predict from; use an approach-3 (or single-law) fit")
  return spec


def _theta(fit: Fit) -> np.ndarray:
  """The fitted point in optimisation space; log(0) scales become -700 (exp = 0 in `_lse`)."""
  theta = fit.info.get("theta")
  if theta is None or len(theta) != len(laws_lib.LAWS[fit.law].theta_names):
    theta = laws_lib.theta_from_natural(fit.law, fit.params)
  return np.nan_to_num(np.asarray(theta, np.float64), neginf=-700.0, posinf=700.0)


def log_predict(law: str, theta: np.ndarray, data: dict) -> np.ndarray:
  """log L_hat for parameter rows `theta` `[..., P]` at points `data` (`[M]` arrays): `[..., M]`."""
  # Move the parameter axis first and add a point axis: `theta[i]` is then `[..., 1]`.
  return laws_lib.evaluate(law, np.moveaxis(np.asarray(theta, np.float64), -1, 0)[..., None],
                           data)


def _jacobian(law: str, theta: np.ndarray, data: dict) -> np.ndarray:
  """d log L_hat / d theta at `theta` `[P]`, points `data`: `[M, P]`."""
  import jax
  import jax.numpy as jnp

  with jax.enable_x64(True):
    d = {k: jnp.asarray(v, jnp.float64) for k, v in data.items() if k not in ("w", "logL")}
    return np.asarray(_jacobian_program(law)(jnp.asarray(theta, jnp.float64), d))


@functools.cache
def _jacobian_program(law: str):
  """One jitted Jacobian per law (compiled once per table size), not one program per op."""
  import jax

  return jax.jit(jax.jacfwd(laws_lib.LAWS[law].log_predict))


def _points(fit: Fit, params, tokens) -> dict:
  """Design arrays for new points; x=flops single-variable laws read C = 6 N D."""
  n, d = np.broadcast_arrays(np.asarray(params, np.float64), np.asarray(tokens, np.float64))
  if n.ndim != 1:
    n, d = n.reshape(-1), d.reshape(-1)
  if not (np.all(np.isfinite(n)) and np.all(n > 0) and np.all(np.isfinite(d))
          and np.all(d > 0)):
    raise ScalingError("prediction points need finite, positive params (N) and tokens (D)")
  spec = laws_lib.LAWS[fit.law]
  if {"logE", "logG"} & set(spec.inputs):
    raise ScalingError(f"prediction intervals for the {fit.law} law need experts/granularity "
                       "per point; they are implemented for L(N, D) and single-variable laws")
  table = Table(n, d, np.ones_like(n), {}, [str(i) for i in range(n.size)], source="<points>")
  return base.design(table, fit.law, fit.info.get("x"))


def goodness(fit: Fit, table: Table) -> dict:
  """Fit quality on log loss over `table` (the fitted runs).

  Returns:
    dict: `r2` (1 - SS_res / SS_tot of log L), `rmse_log` (root mean square of r_i =
    log L_hat_i - log L_i), `s_log` (sqrt(SS_res / (n - P)), the scatter a prediction interval
    uses), `dof` (n - P), `n`.
  """
  _surface_law(fit)
  data = base.design(table, fit.law, fit.info.get("x"))
  r = log_predict(fit.law, _theta(fit), data) - data["logL"]
  n, p = len(table), len(laws_lib.LAWS[fit.law].theta_names)
  ss_res = float(np.sum(r * r))
  ss_tot = float(np.sum((data["logL"] - data["logL"].mean()) ** 2))
  dof = max(n - p, 1)
  return {"r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
          "rmse_log": float(np.sqrt(ss_res / n)), "s_log": float(np.sqrt(ss_res / dof)),
          "dof": int(dof), "n": int(n)}


def _linearised_cov(fit: Fit, table: Table, s_log: float) -> np.ndarray:
  """s^2 (J^T J)^+ in optimisation space: the delta-method covariance of theta."""
  jac = _jacobian(fit.law, _theta(fit), base.design(table, fit.law, fit.info.get("x")))
  return s_log ** 2 * np.linalg.pinv(jac.T @ jac, rcond=1e-12, hermitian=True)


def summarise(fit: Fit, table: Table) -> Fit:
  """Stores `fit.goodness` and the linearised covariance (`info["linearised_cov"]`), so that
  `prediction_interval` works from a fit read back from fit.json without its table."""
  fit.goodness = goodness(fit, table)
  fit.info["linearised_cov"] = _linearised_cov(fit, table, fit.goodness["s_log"]).tolist()
  return fit


def _replicates(fit: Fit) -> np.ndarray | None:
  """Bootstrap replicates as theta rows `[S, P]`, or None when there are too few."""
  names = _names(fit.law)
  if not fit.samples or not set(names) <= set(fit.samples):
    return None
  theta = laws_lib.theta_from_natural(fit.law, {k: fit.samples[k] for k in names})
  theta = theta[~np.isnan(theta).any(-1)]
  theta = np.clip(theta, -700.0, 700.0)  # a scale at 0 (-inf) predicts as exp(-700) = 0
  return theta if len(theta) >= _MIN_REPLICATES else None


def prediction_interval(fit: Fit, table: Table | None, params, tokens, *, level: float = 0.95,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Predicted loss and a `level` prediction interval for new runs (see the module docstring).

  Args:
    fit: an L(N, D) fit (Chinchilla approach 3, kaplan_nd) or a single-variable fit (power,
      kaplan), e.g. `Fit.from_json` of fit.json.
    table: the runs the fit was fitted on (for the residual scatter and, without bootstrap
      replicates, the Jacobian); None uses the summary stored at fit time (`fit.goodness`,
      `fit.info["linearised_cov"]`).
    params: N per point (parameters), any shape broadcastable with `tokens`.
    tokens: D per point (tokens). Single-variable laws read the variable they were fitted on
      (`fit.info["x"]`): x=params reads `params`, x=tokens reads `tokens`, x=flops reads
      C = 6 N D (pass params=C/6, tokens=1 to predict at C FLOPs).
    level: two-sided coverage, in (0, 1).
    seed: seeds the Monte Carlo draws of the bootstrap predictive distribution.

  Returns:
    (loss, lo, hi), float64 arrays `[M]` (points flattened), nats/token: the law's prediction
    and the interval's ends.
  """
  from scipy import stats

  if not 0 < level < 1:
    raise ScalingError(f"level={level}: a prediction interval's level must be in (0, 1)")
  _surface_law(fit)
  if table is not None:
    g = goodness(fit, table)
    cov = None
  else:
    g = fit.goodness
    cov = fit.info.get("linearised_cov")
    if not g or "s_log" not in g:
      raise ScalingError("this fit has no residual summary ('goodness' in fit.json); refit it "
                         "with `scaling fit`, or pass the table it was fitted on")
  s, dof = float(g["s_log"]), int(g["dof"])
  data = _points(fit, params, tokens)
  theta = _theta(fit)
  mu = log_predict(fit.law, theta, data)
  reps = _replicates(fit)
  q_lo, q_hi = (1 - level) / 2, (1 + level) / 2
  if reps is not None:
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(reps), _DRAWS)
    eps = s * rng.standard_t(dof, _DRAWS)
    with np.errstate(all="ignore"):  # wild replicates may overflow far outside the data
      mu_b = log_predict(fit.law, reps, data)  # [S, M]
    lo, hi = np.empty_like(mu), np.empty_like(mu)
    for start in range(0, mu.size, 256):  # chunks bound memory at _DRAWS x 256
      sl = slice(start, start + 256)
      y = mu_b[pick, sl] + eps[:, None]
      lo[sl], hi[sl] = np.nanquantile(y, [q_lo, q_hi], axis=0)
  else:
    if cov is None:
      cov = _linearised_cov(fit, table, s)
    jac = _jacobian(fit.law, theta, data)
    var_mean = np.einsum("mi,ij,mj->m", jac, np.asarray(cov, np.float64), jac)
    half = stats.t.ppf(q_hi, dof) * np.sqrt(s * s + np.maximum(var_mean, 0.0))
    lo, hi = mu - half, mu + half
  with np.errstate(over="ignore"):
    return np.exp(mu), np.exp(lo), np.exp(hi)
