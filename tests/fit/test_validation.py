"""Held-out validation: marked runs are left out of the fit and predicted; --holdout-above fills
the same `validation` key; the figures a ladder workdir gets."""

import json
import os

import numpy as np
import pytest

from scaling.commands import fit as fit_cli
from scaling.errors import ScalingError
from scaling.fit import validation
from scaling.fit.table import Table
from tests.fit.fake_ladder import ladder_rows, law, write_ladder

pytestmark = pytest.mark.xla_optimized  # batched L-BFGS fits: run-bound (tests/conftest.py)


def test_marked_rows_are_left_out_and_predicted():
  rows = ladder_rows()
  n, d, c, _, h, loss = (np.array(x, dtype=float) for x in zip(*[
      (r[0], r[1], r[2], 0.0, r[4], r[5]) for r in rows], strict=True))
  t = Table(n, d, loss, {"flops": c}, [f"r{i}" for i in range(len(n))],
            {"holdout": ["true" if x else "0" for x in h]})
  sp = validation.split(t)
  assert len(sp.fit_table) == 20 and sp.held_table.run_id == ["r20"]
  assert "r20" not in sp.fit_table.run_id
  bad = Table(n[:2], d[:2], loss[:2], {}, ["a", "b"], {"holdout": ["1", "maybe"]})
  with pytest.raises(ScalingError, match=r"row 2 \(run b\): column 'holdout' is 'maybe'"):
    validation.holdout_mask(bad)


@pytest.fixture(scope="module")
def ladder_fit(tmp_path_factory):
  """One `scaling fit` (in-process) of a fake ladder workdir with a held-out rung at 1e12
  FLOPs, a failed run, and --holdout-above=2e11 holding out the 3e11 budget as well."""
  root = tmp_path_factory.mktemp("ladder")
  work = write_ladder(root / "work", ladder_rows())
  out = root / "fit"
  # Variable projection and no bootstrap, for time (half the CPU of the 4,500-start grid):
  # the intervals are then the delta-method ones (tests/fit/test_predict.py covers both).
  argv = [work, "--method=varpro", "--bootstrap=0", "--holdout-above=2e11", "--json",
          f"--out={out}"]
  assert fit_cli.fit_main(argv) == 0
  return work, out, json.loads((out / "fit.json").read_text()), argv


def test_holdout_rung_and_holdout_above_fill_validation(ladder_fit):
  _, _, obj, argv = ladder_fit
  assert obj["n_points"] == 15  # 3 budgets x 5 sizes; neither held-out kind is fitted
  by_id = {v["run_id"]: v for v in obj["validation"]}
  assert set(by_id) == {"rung20"} | {f"rung{i:02d}" for i in range(15, 20)}
  assert by_id["rung20"]["reason"] == validation.REASON_MARKED
  assert all(by_id[f"rung{i}"]["reason"] == "C > 2e+11 FLOPs" for i in range(15, 20))
  for v in obj["validation"]:
    assert set(v) >= {"run_id", "params", "tokens", "flops", "loss", "predicted", "interval",
                      "rel_error"}
    # Noise is 0.4%: a law recovered from 15 runs predicts 3x-30x beyond them within 3%.
    assert v["predicted"] == pytest.approx(law(v["params"], v["tokens"]), rel=0.03)
    assert v["rel_error"] == pytest.approx(v["predicted"] / v["loss"] - 1)
    lo, hi = v["interval"]
    assert lo < v["predicted"] < hi and v["inside"] == (lo <= v["loss"] <= hi)
  # --holdout-above keeps its summary, over the runs the threshold held out (not rung20).
  ex = obj["info"]["extrapolation"]
  assert ex["threshold_flops"] == 2e11 and ex["n_train"] == 15 and ex["n_test"] == 5
  rel = [abs(by_id[f"rung{i}"]["rel_error"]) for i in range(15, 20)]
  assert ex["mean_abs_rel_error"] == pytest.approx(np.mean(rel))
  prov = obj["provenance"]  # wired into `scaling fit` (fields: tests/fit/test_provenance.py)
  assert prov["command"]["argv"][2:] == argv and prov["input"]["kind"] == "workdir"
  assert {r["run_id"] for r in prov["runs"] if r["role"] == "held_out"} == set(by_id)


def test_holdout_above_refuses_an_empty_side():
  rows = ladder_rows()[:-1]
  n, d, c, loss = (np.array([r[k] for r in rows], float) for k in (0, 1, 2, 5))
  t = Table(n, d, loss, {"flops": c}, [str(i) for i in range(len(n))])
  with pytest.raises(ScalingError, match="leaves 20 runs to fit and 0 to predict"):
    validation.split(t, 1e13)
  with pytest.raises(ScalingError, match="leaves 5 runs to fit"):
    validation.split(t, 2e10)


def test_figures_and_report_for_a_workdir(ladder_fit):
  _, out, obj, _ = ladder_fit
  for name in ("isoflops", "frontier", "predicted_vs_actual", "eval_curves", "residuals",
               "optimal_allocation"):
    for ext in ("png", "pdf"):
      assert os.path.getsize(out / "plots" / f"{name}.{ext}") > 1000, (name, ext)
  md = (out / "report.md").read_text()
  assert "## Held-out runs: predicted against observed" in md
  assert all(f"`rung{i}`" in md for i in range(15, 21))
  assert "![eval_curves.png](plots/eval_curves.png)" in md
  assert "## Checks" in md and all(f"`{c['name']}`" in md for c in obj["checks"])
  assert "## Provenance" in md and "status 'failed'" in md


def test_approach1_curves_leave_held_runs_out(tmp_path):
  from scaling.fit import table as table_lib

  work = write_ladder(tmp_path / "work", ladder_rows())
  curves = table_lib.load_curves(work)
  kept, held = validation.split_curves(curves, work)
  assert held == ["rung20"] and len(kept) == 20
  kept, held = validation.split_curves(curves, work, holdout_above=2e11)
  assert len(held) == 6 and all(c.flops.max() <= 2e11 for c in kept)
