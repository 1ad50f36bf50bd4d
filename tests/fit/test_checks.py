"""Self-checks of a fit: each fires on a table built to fail it and stays quiet on the Epoch
table; tables that cannot identify the law are refused in one line."""

import json

import numpy as np
import pytest

from scaling import cli
from scaling.errors import ScalingError
from scaling.fit import checks, chinchilla, core, laws
from scaling.fit import table as table_lib
from scaling.fit.core import Fit
from scaling.fit.table import Table

pytestmark = pytest.mark.xla_optimized  # batched L-BFGS fits: run-bound (tests/conftest.py)

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann 2022


def _law(n, d):
  return TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]


def isoflop_table(budgets=(1e18, 1e19, 1e20), spread=(0.25, 0.5, 1, 2, 4), noise=0.005, seed=0,
                  extra=None):
  """IsoFLOP profiles of the Hoffmann law: per budget, sizes N_opt(C) x `spread`."""
  rng = np.random.default_rng(seed)
  n, c = [], []
  for b in budgets:
    opt = laws.chinchilla_optimal(*TRUE.values(), b)["params"]
    n += [opt * s for s in spread]
    c += [b] * len(spread)
  n, c = np.array(n), np.array(c)
  d = c / (6 * n)
  loss = _law(n, d) * np.exp(rng.normal(0, noise, n.size))
  return Table(n, d, loss, {"budget": c}, [f"r{i}" for i in range(n.size)], extra or {},
               source="isoflop")


def _by_name(result):
  return {c["name"]: c for c in result}


@pytest.fixture(scope="module")
def epoch_checks():
  table = table_lib.epoch_chinchilla()
  fit = chinchilla.approach3(table, method="varpro", bootstrap=20)
  fit.checks = checks.run_checks(fit, table)
  return fit, fit.checks


def test_all_quiet_on_epoch_table(epoch_checks):
  fit, result = epoch_checks
  assert [c["name"] for c in result] == [f.__name__.removeprefix("check_")
                                         for f in checks.CHECKS]
  assert all(c["ok"] for c in result), [c for c in result if not c["ok"]]
  by = _by_name(result)
  # The checks that apply to this table ran (only the IsoFLOP and tuning ones lack columns).
  for name in ("budgets", "floor", "interval_bounds", "grid_edge", "residual_trend",
               "leave_one_budget_out"):
    assert not by[name]["detail"].startswith("skipped"), by[name]
  assert by["isoflop_edge"]["detail"].startswith("skipped")
  # Goodness on log loss (Besiroglu et al. 2024's refit describes the points closely).
  assert fit.goodness["r2"] > 0.99 and 0.005 < fit.goodness["rmse_log"] < 0.01
  out = fit.to_json()
  assert out["checks"] == result and out["goodness"]["dof"] == 235


def test_budgets_and_isoflop_edge_fire():
  two = isoflop_table(budgets=(1e18, 3e18))
  c = checks.check_budgets(None, two)
  assert not c["ok"] and "2 budget(s)" in c["detail"] and "add runs at 3" in c["detail"]
  assert checks.check_budgets(None, isoflop_table())["ok"]
  edge = isoflop_table(spread=(1, 2, 4, 8, 16))
  c = checks.check_isoflop_edge(None, edge)
  assert not c["ok"] and "at its smallest model" in c["detail"] and "3 of 3" in c["detail"]
  assert checks.check_isoflop_edge(None, isoflop_table())["ok"]


def test_floor_fires_above_lowest_loss_and_at_zero():
  table = isoflop_table()
  for e, needle in ((float(table.loss.min()) + 0.1, "above a run"), (0.0, "bound 0")):
    c = checks.check_floor(Fit("chinchilla", 3, "varpro", {**TRUE, "E": e}), table)
    assert not c["ok"] and needle in c["detail"]
  assert checks.check_floor(Fit("chinchilla", 3, "varpro", dict(TRUE)), table)["ok"]


def test_interval_bounds_fire():
  rng = np.random.default_rng(0)
  samples = {k: np.full(200, v) * np.exp(rng.normal(0, 0.05, 200)) for k, v in TRUE.items()}
  ok = Fit("chinchilla", 3, "grid", dict(TRUE), samples=dict(samples))
  assert checks.check_interval_bounds(ok, None)["ok"]
  wild = Fit("chinchilla", 3, "grid", dict(TRUE),
             samples={**samples, "A": 10.0 ** rng.uniform(2, 37, 200)})
  c = checks.check_interval_bounds(wild, None)
  assert not c["ok"] and "A in [" in c["detail"] and "unbounded" in c["detail"]
  alpha = np.where(rng.random(200) < 0.2, TRUE["alpha"] + 0.3, TRUE["alpha"])
  window = Fit("chinchilla", 3, "varpro", dict(TRUE), samples={**samples, "alpha": alpha},
               info={"bootstrap_window": 0.3})
  c = checks.check_interval_bounds(window, None)
  assert not c["ok"] and "search window" in c["detail"]
  floor = Fit("chinchilla", 3, "varpro", dict(TRUE), samples={**samples, "E": samples["E"] * 0})
  assert "bound E >= 0" in checks.check_interval_bounds(floor, None)["detail"]
  assert checks.check_interval_bounds(Fit("chinchilla", 3, "grid", dict(TRUE)), None)[
      "detail"].startswith("skipped")


def test_grid_edge_fires_when_grid_does_not_bracket_optimum():
  table = isoflop_table()
  # Starts with exponents in {1.5, 2}: the optimum (alpha 0.34, beta 0.28) lies below them.
  g = laws.HOFFMANN_GRID
  # 64 starts each (one optimiser stage, one compiled program shared by both fits).
  narrow = g[(g[:, 3] >= 1.5) & (g[:, 4] >= 1.5)][::11][:64]
  fit, _ = core.fit_grid(table, "chinchilla", starts=narrow)
  c = checks.check_grid_edge(fit, table)
  assert not c["ok"] and "alpha" in c["detail"] and "grid min 1.5" in c["detail"]
  # Every 61st start (61 is prime, so every coordinate keeps its full range).
  wide, _ = core.fit_grid(table, "chinchilla", starts=g[::61][:64])
  assert checks.check_grid_edge(wide, table)["ok"]
  edge = Fit("chinchilla", 3, "varpro", {**TRUE, "alpha": 2.49},
             info={"exponent_range": [0.0, 2.5], "exponent_grid_step": 0.05})
  c = checks.check_grid_edge(edge, table)
  assert not c["ok"] and "alpha = 2.49" in c["detail"]


def test_residual_trend_and_leave_one_budget_out_fire():
  good = isoflop_table(budgets=(1e18, 3e18, 1e19, 3e19, 1e20))
  fit = chinchilla.approach3(good, method="varpro")
  by = _by_name(checks.run_checks(fit, good))
  assert by["residual_trend"]["ok"] and by["leave_one_budget_out"]["ok"], by
  # Losses the Chinchilla form cannot follow: on an N x D grid of large models, loss grows
  # with size (x N^0.03, as when the larger rungs are under-tuned); the fit can only drop the
  # N term (A -> 0), and the residuals fall with N.
  rng = np.random.default_rng(0)
  n = np.repeat(np.geomspace(1e9, 1e12, 6), 5)
  d = np.tile(np.geomspace(1e9, 1e12, 5), 6)
  bent = Table(n, d, _law(n, d) * (n / 1e9) ** 0.03 * np.exp(rng.normal(0, 0.005, n.size)))
  c = checks.check_residual_trend(chinchilla.approach3(bent, method="varpro"), bent)
  assert not c["ok"] and "trend with N" in c["detail"], c
  straight = Table(n, d, _law(n, d) * np.exp(rng.normal(0, 0.005, n.size)))
  assert checks.check_residual_trend(chinchilla.approach3(straight, method="varpro"),
                                     straight)["ok"]
  # Runs from another law (Kaplan et al. 2020, Eq. 1.5 with their Table 2 constants) on 4
  # budgets: the Chinchilla form describes them in-sample, but mispredicts each left-out budget
  # (measured 3.0x the in-sample scatter).
  t4 = isoflop_table(budgets=(1e18, 1e19, 1e20, 1e21))
  k = {"N_c": 6.4e13, "D_c": 1.8e13, "alpha_N": 0.076, "alpha_D": 0.103}
  kl = ((k["N_c"] / t4.params) ** (k["alpha_N"] / k["alpha_D"]) + k["D_c"] / t4.tokens) ** k[
      "alpha_D"]
  kaplan = Table(t4.params, t4.tokens, kl * np.exp(rng.normal(0, 0.002, len(t4))),
                 dict(t4.optional), list(t4.run_id))
  c = checks.check_leave_one_budget_out(chinchilla.approach3(kaplan, method="varpro"), kaplan)
  assert not c["ok"] and "4 budgets" in c["detail"], c


def test_under_tuned_fires_on_marked_runs():
  marks = ["False"] * 15
  marks[3] = "True"
  c = checks.check_under_tuned(None, isoflop_table(extra={"under_tuned": marks}))
  assert not c["ok"] and "1 of 15 runs" in c["detail"] and "r3" in c["detail"]
  quiet = checks.check_under_tuned(None, isoflop_table(extra={"under_tuned": ["False"] * 15}))
  assert quiet["ok"] and not quiet["detail"].startswith("skipped")


@pytest.mark.parametrize("rows,needle", [
    (["1e6,1e8,2.5"] * 6, "all 6 runs have N = 1e6: a Chinchilla law needs runs at two or "
     "more model sizes"),
    ([f"{n},1e8,{2.5 + i / 10}" for i, n in enumerate([1e6, 2e6, 4e6, 8e6, 1.6e7, 3.2e7])],
     "all 6 runs have D = 1e8: a Chinchilla law needs runs at two or more token counts"),
    ([f"{n},{d},2.5" for n in (1e6, 2e6, 4e6) for d in (1e8, 2e8)], "all 6 runs have loss = 2.5"),
    ([f"{n},{d},{2.5 + n / 1e7 + d / 1e9}" for n in (1e6, 2e6) for d in (1e8, 2e8)] * 2,
     "8 runs at only 4 distinct points cannot determine the 5 parameters"),
])
def test_unidentifiable_tables_refused_in_one_line(tmp_path, capsys, rows, needle):
  path = tmp_path / "t.csv"
  path.write_text("params,tokens,loss\n" + "\n".join(rows) + "\n")
  assert cli.main(["fit", str(path), "--bootstrap=0"]) == 2
  captured = capsys.readouterr()
  err = captured.err.strip()
  assert needle in err and err.startswith("error:") and "\n" not in err, err
  assert "tokens_per_param" not in captured.out
  with pytest.raises(ScalingError, match="two or more model sizes"):
    core.check_identifiable(Table(np.full(3, 1e6), np.geomspace(1e8, 1e9, 3),
                                  np.array([3.0, 2.9, 2.8])), "chinchilla")


def test_fit_command_prints_one_warning_per_failed_check(tmp_path, capsys):
  t = isoflop_table(budgets=(1e18, 3e18), spread=(1, 2, 4, 8))  # 2 budgets, minima at edges
  rows = ["run_id,params,tokens,loss,budget"] + [
      f"{t.run_id[i]},{t.params[i]},{t.tokens[i]},{t.loss[i]},{t.get('budget')[i]}"
      for i in range(len(t))]
  path = tmp_path / "t.csv"
  path.write_text("\n".join(rows) + "\n")
  assert cli.main(["fit", str(path), "--method=varpro", "--bootstrap=20", "--json"]) == 0
  captured = capsys.readouterr()
  obj = json.loads(captured.out)
  failed = [c["name"] for c in obj["checks"] if not c["ok"]]
  assert {"budgets", "isoflop_edge"} <= set(failed)
  lines = captured.err.strip().splitlines()
  assert [ln.split(":")[1].strip() for ln in lines] == failed, captured.err
  assert all(ln.startswith("warning: ") for ln in lines)
  assert "RuntimeWarning" not in captured.err
  assert set(obj["goodness"]) == {"r2", "rmse_log", "s_log", "dof", "n"}
