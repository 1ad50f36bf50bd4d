"""The residual (fixed-design) bootstrap: what it resamples, that it covers a known law, and
the flag's spelling, refusals and provenance."""

import json

import numpy as np
import pytest

from scaling.errors import ScalingError
from scaling.fit import core
from scaling.fit.table import Table
from tests.helpers import run_cli

pytestmark = pytest.mark.xla_optimized  # batched L-BFGS fits: run-bound (tests/conftest.py)

TRUE = dict(E=1.2, A=100.0, alpha=0.9, B=80.0, beta=0.5)


def _table(noise: float = 0.008, seed: int = 0) -> Table:
  """An IsoFLOP-like design of 20 runs (4 budgets x 5 sizes) from TRUE with log-normal noise."""
  rows = []
  for c in (1e10, 3e10, 1e11, 3e11):
    for n in np.geomspace(1e3, 6e4, 5):
      rows.append((n, c / (6 * n)))
  n, d = np.array(rows).T
  mu = TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]
  y = mu * np.exp(np.random.default_rng(seed).normal(0, noise, len(n)))
  return Table(n, d, y, optional={"flops": 6 * n * d}, run_id=[f"r{i}" for i in range(len(n))])


def test_replicates_are_the_fit_plus_its_resampled_residuals():
  table = _table()
  fit, state = core.fit_grid(table, "chinchilla")
  reps = core.residual_replicates(state, "chinchilla", 64, seed=1)
  assert reps.shape == (64, len(table))
  p = fit.params
  fitted = np.log(p["E"] + p["A"] / table.params ** p["alpha"] + p["B"] / table.tokens ** p["beta"])
  r = np.log(table.loss) - fitted
  pool = (r - r.mean()) * np.sqrt(len(r) / (len(r) - 5))
  drawn = reps - fitted  # every replicate residual is one of the pooled, inflated residuals
  assert np.allclose(np.min(np.abs(drawn[..., None] - pool), axis=-1), 0, atol=1e-9)
  assert not np.allclose(reps[0], reps[1])  # and the draws differ


def test_residual_intervals_cover_the_true_law():
  fit = core.fit_law(_table(), "chinchilla", bootstrap=100, seed=0, resample="residuals")
  assert fit.info["bootstrap"]["resampling"].startswith("residuals")
  iv = fit.intervals()
  for k in ("E", "alpha", "beta"):
    lo, hi = iv[k]
    assert lo <= TRUE[k] <= hi, (k, lo, hi)
    assert lo < fit.params[k] < hi


def test_too_few_runs_and_unknown_resampling_are_refused():
  state = {"data": {"logN": np.ones(5), "logD": np.ones(5), "logL": np.zeros(5),
                    "w": np.ones(5)},
           "theta": np.zeros(5)}
  with pytest.raises(ScalingError, match="more runs than the law's 5 parameters"):
    core.residual_replicates(state, "chinchilla", 4)
  table = _table()
  fit, state = core.fit_grid(table, "chinchilla")
  with pytest.raises(ScalingError, match="choose one of runs, residuals"):
    core.bootstrap_grid(table, fit, state, 4, resample="cases")


def test_cli_flag_lands_in_provenance_and_is_refused_where_unsupported(tmp_path, capfd):
  t = _table()
  path = tmp_path / "runs.csv"
  lines = ["run_id,params,tokens,loss"] + [f"{i},{n},{d},{y}" for i, n, d, y in
                                          zip(t.run_id, t.params, t.tokens, t.loss, strict=True)]
  path.write_text("\n".join(lines) + "\n")
  out = tmp_path / "fit"
  code, err = run_cli(capfd, ["fit", str(path), "--law=chinchilla", "--approach=3",
                              "--bootstrap=20", "--resample=residuals", f"--out={out}"])
  assert code == 0, err
  fit = json.loads((out / "fit.json").read_text())
  assert fit["provenance"]["fit"]["resample"] == "residuals"
  assert fit["info"]["bootstrap"]["resampling"].startswith("residuals")
  for extra in (["--approach=2"], ["--approach=3", "--method=varpro"]):
    code, err = run_cli(capfd, ["fit", str(path), "--law=chinchilla", "--bootstrap=20",
                                "--resample=residuals", *extra])
    assert code == 2 and err.startswith("error: --resample=residuals"), err
    assert "Traceback" not in err
