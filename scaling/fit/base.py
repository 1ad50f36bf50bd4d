"""What every estimator of a law shares: the fitted-law record `Fit`, the design arrays a law
reads from a table, the identifiability check, and bootstrap resampling counts.

The estimators (`scaling.fit.core` grid fits, `scaling.fit.varpro`) and the prediction
intervals (`scaling.fit.predict`) build on this module and never on each other's internals, so
the fit layer has no import cycle; `scaling.fit.core` re-exports these names.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from scaling.errors import ScalingError
from scaling.fit import laws as laws_lib
from scaling.fit.table import Table

# Which table column each law's `logX` reads; `x` picks it for single-variable laws.
X_COLUMNS = {"params": "params", "N": "params", "tokens": "tokens", "D": "tokens",
             "flops": "flops", "C": "flops", "loss": "eval_loss"}  # loss: critical_batch's L


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
      d["logX"] = np.log(table.flops if col == "flops" else table.require(col, f"by --x={x}"))
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
                     "flops": ("C", "compute budgets"),
                     "eval_loss": ("L", "eval losses")}[X_COLUMNS[x]]
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
