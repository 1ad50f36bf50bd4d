"""Prediction intervals: coverage on tables drawn from a known law, and fit.json round trips."""

import json

import numpy as np
import pytest

from scaling.errors import ScalingError
from scaling.fit import chinchilla, core, laws, predict
from scaling.fit.core import Fit
from scaling.fit.table import Table

pytestmark = pytest.mark.xla_optimized  # batched L-BFGS fits: run-bound (tests/conftest.py)

# Hoffmann et al. 2022's Approach 3 law (Sec. 3.3), as in test_fit_synthetic.py.
TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
NOISE = 0.02  # multiplicative scatter of runs around the law (sd of log loss)


def _law(n, d):
  return TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]


def _table(rng, sizes=8, tokens=5):
  n = np.repeat(np.geomspace(5e7, 1e10, sizes), tokens)
  d = np.tile(np.geomspace(1e9, 5e11, tokens), sizes)
  loss = _law(n, d) * np.exp(rng.normal(0, NOISE, n.size))
  return Table(n, d, loss, {}, [str(i) for i in range(n.size)], source="synthetic")


def _fresh(rng, m):
  """New runs: inside the table's range, and at up to 10x its largest N and D."""
  n = np.exp(rng.uniform(np.log(5e7), np.log(1e11), m))
  d = np.exp(rng.uniform(np.log(1e9), np.log(5e12), m))
  return n, d, _law(n, d) * np.exp(rng.normal(0, NOISE, m))


@pytest.mark.slow
def test_coverage_of_95_percent_interval_with_and_without_bootstrap():
  # Averaged over tables (the interval is calibrated over repeated experiments, not per table):
  # 5 tables of 40 runs, 400 fresh runs each, for the bootstrap path and the linearised path.
  inside = {"bootstrap": [], "linearised": []}
  for seed in range(5):
    rng = np.random.default_rng(100 + seed)
    table = _table(rng)
    fit = chinchilla.approach3(table, method="varpro", bootstrap=30, seed=seed)
    n, d, y = _fresh(rng, 400)
    no_boot = Fit(**{**fit.__dict__, "samples": {}})
    for name, f in (("bootstrap", fit), ("linearised", no_boot)):
      pred, lo, hi = predict.prediction_interval(f, table, n, d, seed=seed)
      assert np.all(lo < pred) and np.all(pred < hi)
      inside[name].append(np.mean((lo <= y) & (y <= hi)))
  print({k: round(float(np.mean(v)), 4) for k, v in inside.items()})
  for name, v in inside.items():
    assert 0.90 <= np.mean(v) <= 0.99, (name, np.mean(v), v)
  # The interval is more than the law's uncertainty: scatter alone gives +-1.96 * 2% in log.
  assert np.median(np.log(hi / lo)) > 2 * 1.9 * NOISE


def test_interval_widens_with_scatter_and_level():
  rng = np.random.default_rng(0)
  table = _table(rng)
  fit = chinchilla.approach3(table, method="varpro")
  n, d = np.array([1e9, 1e11]), np.array([1e11, 2e12])
  _, lo95, hi95 = predict.prediction_interval(fit, table, n, d)
  _, lo50, hi50 = predict.prediction_interval(fit, table, n, d, level=0.5)
  assert np.all(hi50 - lo50 < hi95 - lo95)
  # Extrapolating 10x beyond the data is less certain than interpolating.
  width = np.log(hi95 / lo95)
  assert width[1] > width[0]
  noisy = Table(table.params, table.tokens, table.loss * np.exp(rng.normal(0, 0.05, len(table))))
  _, lo_n, hi_n = predict.prediction_interval(chinchilla.approach3(noisy, method="varpro"),
                                              noisy, n, d)
  assert np.all(np.log(hi_n / lo_n) > width)


def test_from_fit_json_without_table_matches():
  rng = np.random.default_rng(1)
  table = _table(rng)
  for boot in (0, 25):
    fit = chinchilla.approach3(table, method="varpro", bootstrap=boot)
    back = Fit.from_json(json.loads(json.dumps(fit.to_json(include_samples=True))))
    assert back.goodness == pytest.approx(fit.goodness)
    n, d = np.geomspace(1e8, 1e11, 5), np.geomspace(1e10, 1e12, 5)
    ref = predict.prediction_interval(fit, table, n, d)
    got = predict.prediction_interval(back, None, n, d)  # as `scaling plan --law=fit.json`
    for a, b in zip(ref, got, strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-9)


def test_grid_fit_and_single_variable_law():
  rng = np.random.default_rng(2)
  table = _table(rng)
  # Hoffmann's grid method (theta stored in info), on 64 of its starts to stay cheap.
  fit, _ = core.fit_grid(table, "chinchilla", starts=laws.HOFFMANN_GRID[::61][:64])
  predict.summarise(fit, table)
  pred, lo, hi = predict.prediction_interval(fit, table, 1e9, 1e11)
  assert pred.shape == (1,) and lo[0] < _law(1e9, 1e11) < hi[0]
  n = np.geomspace(1e6, 1e10, 30)
  t = Table(n, n * 20, (2.0 + 50.0 * n ** -0.3) * np.exp(rng.normal(0, 0.01, 30)))
  f, _ = core.fit_grid(t, "power", x="params", starts=laws.LAWS["power"].grid[::6])
  predict.summarise(f, t)
  pred, lo, hi = predict.prediction_interval(f, t, [1e7, 1e9], [1.0, 1.0])  # reads params
  np.testing.assert_allclose(pred, 2.0 + 50.0 * np.array([1e7, 1e9]) ** -0.3, rtol=0.03)
  assert np.all(lo < pred) and np.all(pred < hi)


def test_refusals():
  rng = np.random.default_rng(3)
  table = _table(rng)
  fit = chinchilla.approach3(table, method="varpro")
  with pytest.raises(ScalingError, match="level"):
    predict.prediction_interval(fit, table, 1e9, 1e11, level=1.5)
  with pytest.raises(ScalingError, match="positive"):
    predict.prediction_interval(fit, table, -1.0, 1e11)
  frontier = Fit("chinchilla", 2, "isoflop", {"a": 0.5, "k_N": 0.1, "b": 0.5, "k_D": 1.0})
  with pytest.raises(ScalingError, match="no loss surface"):
    predict.prediction_interval(frontier, table, 1e9, 1e11)
  bare = Fit("chinchilla", 3, "varpro", dict(fit.params))
  with pytest.raises(ScalingError, match="residual summary"):
    predict.prediction_interval(bare, None, 1e9, 1e11)
