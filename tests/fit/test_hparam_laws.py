"""Hyperparameter laws (scaling/fit/hparam_laws.py): each rung's optimum from its sweep, and
lr*(N, D) = c N^a D^b and B*(C) = k C^e recovered from sweep tables made from known laws."""

import json

import numpy as np
import pytest

from scaling import hparam_rules
from scaling.fit import checks, hparam_laws
from scaling.fit.table import Table
from scaling.ladder import results, tuning
from tests.helpers import run_cli

pytestmark = pytest.mark.xla_optimized  # batched L-BFGS fits: run-bound (tests/conftest.py)

TRUE_LR = {"c": 8.0, "a": -0.3, "b": -0.08}
TRUE_BATCH = {"k": 0.3, "e": 0.33}
MULTS = (0.25, 0.5, 1, 2, 4)


def lr_star(n, d):
  return TRUE_LR["c"] * n ** TRUE_LR["a"] * d ** TRUE_LR["b"]


def sweep_rows(seed=1, noise=0.002, kappa=0.08, mults=MULTS):
  """An LR sweep per rung: 5 sizes x 3 token counts; each rung's rule misses lr* by a factor
  in [0.6, 1.6]; loss = L(N, D) + kappa log(lr / lr*)^2 + N(0, noise) (a parabola in log LR).
  Rows as `scaling results collect` writes them (`tuning.mark` applied)."""
  rng = np.random.default_rng(seed)
  rows = []
  for n in np.geomspace(1e4, 1e6, 5):
    for d in 20 * n * np.array([0.25, 1.0, 4.0]):
      rule = lr_star(n, d) * rng.uniform(0.6, 1.6)
      base = 1.8 + 50 / n ** 0.4 + 80 / d ** 0.3
      for m in mults:
        lr = float(rule * m)
        loss = base + kappa * np.log(lr / lr_star(n, d)) ** 2 + rng.normal(0, noise)
        rows.append(dict(run_id=f"n{n:.0f}-d{d:.0f}-x{m:g}", params=float(n), tokens=float(d),
                         flops=float(6 * n * d), loss=float(loss), lr=lr, lr_mult=float(m),
                         batch_tokens=4096,
                         batch_mult=1.0, b2=0.95, tune_group=f"g-{n:.0f}-{d:.0f}",
                         status="complete"))
  return tuning.mark(rows)


def test_refine_finds_the_vertex_in_log_x():
  xs = 0.01 * np.array(MULTS)
  x, how = hparam_laws.refine(xs, 2.0 + (np.log(xs) - np.log(0.013)) ** 2)
  assert how == "parabola" and x == pytest.approx(0.013, rel=1e-9)
  assert hparam_laws.refine(xs, -np.log(xs)) == (pytest.approx(0.04), "edge")
  assert hparam_laws.refine(xs, [3.0, 2.0, 1.0, np.nan, 3.0])[1] == "discrete"  # diverged


def test_lr_law_is_recovered_from_a_synthetic_sweep_table(tmp_path, capfd):
  rows = sweep_rows()
  path = tmp_path / "sweep.csv"
  path.write_text(results.to_text(rows, "csv"))
  code, err = run_cli(capfd, ["fit", str(path), "--law=lr", "--bootstrap=200",
                              f"--out={tmp_path / 'fit'}"])
  assert code == 0, err
  fit = json.loads((tmp_path / "fit" / "fit.json").read_text())
  assert fit["law"] == "lr" and fit["n_points"] == 15
  for k in ("a", "b"):
    lo, hi = fit["intervals"][k]
    assert lo <= TRUE_LR[k] <= hi and abs(fit["params"][k] - TRUE_LR[k]) < 0.02, (k, fit)
  assert abs(np.log(fit["params"]["c"] / TRUE_LR["c"])) < 0.3
  assert {o["found_by"] for o in fit["info"]["optima"]} == {"parabola"}
  assert all(c["ok"] for c in fit["checks"]), [c for c in fit["checks"] if not c["ok"]]
  roles = [r["role"] for r in fit["provenance"]["runs"]]
  assert roles.count("fit") == 15 and roles.count("sweep") == 60  # every variant is named
  # The best of an x2 grid alone is quantised: its exponents are further off than the vertex's.
  table = Table(np.array([r["params"] for r in rows]), np.array([r["tokens"] for r in rows]),
                np.array([r["loss"] for r in rows]), {}, [r["run_id"] for r in rows],
                {k: [str(r[k]) for r in rows] for k in ("lr", "lr_mult", "tune_group")})
  discrete = hparam_laws.optima(table, "lr")
  discrete.loss = np.array([float(v) for v in np.array(table.extra["lr"])[
      [table.run_id.index(r) for r in discrete.run_id]]])
  worse = hparam_laws.fit_law(discrete, "lr")
  assert abs(worse.params["a"] - TRUE_LR["a"]) > abs(fit["params"]["a"] - TRUE_LR["a"])
  # The fit is a size rule: train.hparam_rule=fit:DIR gives new runs c N^a D^b.
  rule = hparam_rules.parse(f"fit:{tmp_path / 'fit'}")
  p = fit["params"]
  assert rule.lr(3e5, 6e6, 0.0) == pytest.approx(p["c"] * 3e5 ** p["a"] * 6e6 ** p["b"])


def test_batch_law_is_recovered_from_a_synthetic_batch_sweep():
  rng = np.random.default_rng(0)
  n, d, loss, batch, group = [], [], [], [], []
  for c in np.geomspace(1e12, 1e16, 6):
    b_star = TRUE_BATCH["k"] * c ** TRUE_BATCH["e"]
    rule = b_star * rng.uniform(0.6, 1.6)
    for m in (0.25, 0.5, 1, 2, 4):
      n.append(np.sqrt(c / 120))
      d.append(c / (6 * n[-1]))
      batch.append(rule * m)
      loss.append(2.0 + 0.05 * np.log(rule * m / b_star) ** 2 + rng.normal(0, 0.001))
      group.append(f"g{c:.0e}")
  table = Table(np.array(n), np.array(d), np.array(loss), {}, [str(i) for i in range(len(n))],
                {"batch_tokens": [str(b) for b in batch], "tune_group": group})
  fit = hparam_laws.fit_law(hparam_laws.optima(table, "batch"), "batch")
  assert fit.params["e"] == pytest.approx(TRUE_BATCH["e"], abs=0.02)
  assert fit.params["k"] == pytest.approx(TRUE_BATCH["k"], rel=0.3)


def test_an_edge_rung_is_flagged_with_the_way_to_extend():
  rows = sweep_rows(mults=(0.25, 0.5, 1))  # the upper half cut off: optima near x1 hit the top
  assert {r["under_tuned"] for r in rows} == {"", "up"}
  table = Table(np.array([r["params"] for r in rows]), np.array([r["tokens"] for r in rows]),
                np.array([r["loss"] for r in rows]), {}, [r["run_id"] for r in rows],
                {k: [str(r[k]) for r in rows] for k in ("lr", "lr_mult", "tune_group")})
  opt = hparam_laws.optima(table, "lr")
  assert "edge" in opt.extra["optimum"] and "parabola" in opt.extra["optimum"]
  c = checks.check_under_tuned(None, opt)
  assert not c["ok"] and "its best LR (x1) is the top of its sweep: extend the LR sweep above " \
      "x1" in c["detail"], c


@pytest.mark.parametrize("columns, message", [
    ("run_id,params,tokens,loss\nr1,1e4,2e5,3.0\n", "column 'lr' is required by --law=lr"),
    ("run_id,params,tokens,loss,lr,tune_group\nr1,1e4,2e5,3.0,0.01,g1\nr2,2e4,4e5,2.9,0.01,g2\n",
     "no rung has a lr sweep (two or more values of 'lr' at one (N, D))"),
])
def test_tables_without_sweeps_are_refused_in_one_line(tmp_path, capfd, columns, message):
  path = tmp_path / "t.csv"
  path.write_text(columns)
  code, err = run_cli(capfd, ["fit", str(path), "--law=lr"])
  assert code == 2 and err.count("\n") == 1 and message in err, err


def test_a_rungs_seeds_enter_its_optimum_as_their_mean():
  # x0.5's seeds 2.60 / 3.00 (mean 2.80) against x1's 2.70 / 2.70 and x2's 2.90 / 2.90: the
  # optimum lies between x0.5 and x1 by the means, at or below x0.5 by the luckiest seed.
  losses = {0.5: (2.60, 3.00), 1.0: (2.70, 2.70), 2.0: (2.90, 2.90)}
  rows = [dict(params=1e4, tokens=2e5, loss=loss, lr=0.01 * m, lr_mult=m, batch_tokens=4096,
               b2=0.95, seed=s, tune_group="g")
          for m, pair in losses.items() for s, loss in enumerate(pair)]
  tuning.mark(rows)
  assert {r["lr_mult"] for r in rows if r["sweep_best"]} == {1.0}
  table = Table(np.array([r["params"] for r in rows]), np.array([r["tokens"] for r in rows]),
                np.array([r["loss"] for r in rows]), {}, [str(i) for i in range(len(rows))],
                {k: [str(r[k]) for r in rows] for k in ("lr", "lr_mult", "tune_group")})
  opt = hparam_laws.optima(table, "lr")
  x, _ = hparam_laws.refine([0.005, 0.01, 0.02], [2.8, 2.7, 2.9])
  assert opt.loss[0] == pytest.approx(x) and 0.005 < x < 0.01
