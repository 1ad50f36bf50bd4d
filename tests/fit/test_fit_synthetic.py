"""Recovery of known laws from synthetic data, the optimiser against scipy, and Approach 1."""

import numpy as np
import pytest

from scaling.fit import chinchilla, core, laws, optim
from scaling.fit.table import Curve, Table

pytestmark = pytest.mark.xla_optimized  # batched L-BFGS fits: run-bound (tests/conftest.py)

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def synthetic_table(seed=0, noise=0.01, n_sizes=12, n_tokens=10):
  rng = np.random.default_rng(seed)
  n = np.repeat(np.geomspace(5e7, 1e10, n_sizes), n_tokens)
  d = np.tile(np.geomspace(1e9, 5e11, n_tokens), n_sizes)
  loss = (TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]) * np.exp(
      rng.normal(0, noise, n.size))
  return Table(n, d, loss, {}, [str(i) for i in range(n.size)], source="synthetic")


def test_batched_lbfgs_matches_scipy_on_small_grid():
  from scipy.optimize import minimize
  from scipy.special import logsumexp

  t = synthetic_table()
  data = core.design(t, "chinchilla")
  starts = laws.HOFFMANN_GRID[::150]  # 30 starts
  x, f, _ = optim.minimize_batched(laws.objective("chinchilla"), starts, data)

  def obj(th):
    r = logsumexp([th[0] - th[3] * data["logN"], th[1] - th[4] * data["logD"],
                   np.full_like(data["logN"], th[2])], axis=0) - data["logL"]
    a = np.abs(r)
    return np.sum(np.where(a <= 1e-3, 0.5 * r * r, 1e-3 * (a - 5e-4)))

  ref = [minimize(obj, s, method="L-BFGS-B").fun for s in starts]
  # Same best optimum. Individual starts may end in different local optima (different line
  # searches), so only the best is compared, plus how often each reaches it.
  assert f.min() == pytest.approx(min(ref), rel=1e-5)
  hit_jax = np.mean(f <= f.min() * (1 + 1e-4))
  hit_scipy = np.mean(np.array(ref) <= min(ref) * (1 + 1e-4))
  assert hit_jax >= hit_scipy - 0.2


def test_recover_chinchilla_parameters_grid():
  fit = chinchilla.approach3(synthetic_table(noise=0.005), method="grid")
  assert fit.params["alpha"] == pytest.approx(TRUE["alpha"], abs=0.03)
  assert fit.params["beta"] == pytest.approx(TRUE["beta"], abs=0.03)
  assert fit.params["E"] == pytest.approx(TRUE["E"], abs=0.05)
  assert fit.derived["a"] == pytest.approx(0.28 / 0.62, abs=0.03)


@pytest.mark.slow
def test_bootstrap_interval_contains_truth():
  t = synthetic_table(seed=3, noise=0.01)
  fit = chinchilla.approach3(t, method="varpro", bootstrap=200, predict_flops=1e23)
  iv = fit.intervals()
  for k in ("E", "alpha", "beta"):
    assert iv[k][0] <= TRUE[k] <= iv[k][1], (k, iv[k])
  true_opt = laws.chinchilla_optimal(*TRUE.values(), 1e23)
  assert iv["params_opt"][0] <= true_opt["params"] <= iv["params_opt"][1]


def test_power_and_kaplan_single_variable():
  rng = np.random.default_rng(1)
  n = np.geomspace(1e6, 1e10, 30)
  loss_p = (2.0 + 50.0 * n ** -0.3) * np.exp(rng.normal(0, 0.002, n.size))
  t = Table(n, n * 20, loss_p, {}, [str(i) for i in range(n.size)])
  f = core.fit_law(t, "power", x="params")
  assert f.params["alpha"] == pytest.approx(0.3, abs=0.03)
  assert f.params["E"] == pytest.approx(2.0, abs=0.05)
  # Kaplan et al. 2020, Eq. 1.1 form: L = (N_c / N)^0.076 with N_c = 8.8e13.
  loss_k = (8.8e13 / n) ** 0.076 * np.exp(rng.normal(0, 0.002, n.size))
  fk = core.fit_law(Table(n, n * 20, loss_k, {}, [str(i) for i in range(n.size)]), "kaplan",
                    x="params", bootstrap=50)
  assert fk.params["alpha"] == pytest.approx(0.076, abs=0.005)
  assert fk.intervals()["alpha"][0] < 0.076 < fk.intervals()["alpha"][1]


def test_kaplan_joint_recovery():
  rng = np.random.default_rng(2)
  n = np.repeat(np.geomspace(1e6, 1e9, 8), 6)
  d = np.tile(np.geomspace(1e8, 1e11, 6), 8)
  p = {"N_c": 6.4e13, "D_c": 1.8e13, "alpha_N": 0.076, "alpha_D": 0.103}  # Kaplan Table 2
  loss = ((p["N_c"] / n) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / d) ** p["alpha_D"]
  t = Table(n, d, loss * np.exp(rng.normal(0, 0.001, n.size)), {}, [str(i) for i in range(48)])
  f = core.fit_law(t, "kaplan_nd")
  assert f.params["alpha_N"] == pytest.approx(0.076, abs=0.01)
  assert f.params["alpha_D"] == pytest.approx(0.103, abs=0.015)


def test_moe_laws_recover():
  rng = np.random.default_rng(0)
  n = np.repeat([1e7, 3e7, 1e8, 3e8], 5)
  e = np.tile([1.0, 2, 4, 8, 16], 4)
  x = np.log(n / 1e8)
  ll = -0.08 * x - 0.09 * np.log(e) + 0.004 * x * np.log(e) + 1.5
  t = Table(n, np.full(20, 1e10), np.exp(ll + rng.normal(0, 0.002, 20)),
            {"experts": e, "params_active": n}, [str(i) for i in range(20)])
  f = core.fit_law(t, "clark")
  assert f.params["a"] == pytest.approx(-0.08, abs=0.01)
  assert f.params["c"] == pytest.approx(0.004, abs=0.003)
  # Krajewski et al. 2024 form, with known parameters.
  n = np.repeat(np.geomspace(1e7, 1e9, 4), 12)
  d = np.tile(np.repeat(np.geomspace(1e9, 1e11, 3), 4), 4)
  g = np.tile([1.0, 2, 4, 8], 12)
  loss = 0.5 + (2.0 / g ** 0.6 + 18.0) / n ** 0.12 + 30.0 / d ** 0.15
  t2 = Table(n, d, loss * np.exp(rng.normal(0, 0.001, 48)), {"granularity": g},
             [str(i) for i in range(48)])
  f2 = core.fit_law(t2, "krajewski")
  pred = laws.predict("krajewski", np.asarray(f2.info["theta"]), core.design(t2, "krajewski"))
  assert np.sqrt(np.mean(np.log(pred / t2.loss) ** 2)) < 0.003


def test_approach1_envelope_recovers_exponent():
  # Runs of many sizes, each a curve L(N, D(t)) from the Chinchilla law; the envelope's N_opt(C)
  # should follow a = beta / (alpha + beta) = 0.45.
  curves = []
  for i, n in enumerate(np.geomspace(1e7, 1e11, 41)):
    tok = np.geomspace(1e8, 1e13, 200)
    loss = TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / tok ** TRUE["beta"]
    curves.append(Curve(str(i), n, 6 * n * tok, tok, loss))
  fit = chinchilla.approach1(curves, bootstrap=20)
  assert fit.params["a"] == pytest.approx(0.28 / 0.62, abs=0.03)
  assert fit.params["b"] == pytest.approx(0.34 / 0.62, abs=0.03)
  assert "a" in fit.intervals()
