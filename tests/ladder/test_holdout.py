"""Held-out rungs: a sweep or a single rung marked `holdout` is trained like any other run, and
its manifest row, run config and results row say so (so `scaling fit` can leave it out)."""

import pytest

from scaling.errors import ScalingError
from scaling.ladder import results
from scaling.ladder.spec import expand, grid_sweep, isoflop_sweep
from scaling.train.record import RunRecord


def test_a_holdout_sweep_marks_every_rung_without_changing_run_ids(tiny_ladder):
  fitted = {r.label: r.run_id for r in expand(tiny_ladder)}
  tiny_ladder.ladder.sweeps.iso.holdout = True
  rungs = expand(tiny_ladder)
  assert all(r.holdout and r.row()["holdout"] == 1 and r.config.ladder.holdout for r in rungs)
  # The mark is a ladder label: the same run, fitted in one ladder and held out in another,
  # is one folder, trained once.
  assert {r.label: r.run_id for r in rungs} == fitted


def test_holdout_rungs_marks_one_rung_and_names_a_typo(tiny_ladder):
  tiny_ladder.ladder.sweeps.iso.holdout_rungs = ("C=4e+09 d3",)
  marks = {r.label: r.row()["holdout"] for r in expand(tiny_ladder)}
  assert marks == {"C=4e+09 d1": 0, "C=4e+09 d2": 0, "C=4e+09 d3": 1}
  tiny_ladder.ladder.sweeps.iso.holdout_rungs = ("C=4e9 d3",)
  with pytest.raises(ScalingError, match=r"ladder.sweeps.iso.holdout_rungs names 'C=4e9 d3'"):
    expand(tiny_ladder)


def test_a_held_out_budget_may_have_one_size_a_fitted_one_may_not(tiny_ladder):
  tiny_ladder.ladder.sweeps.big = isoflop_sweep([8e9], depths=(2,), tolerance=0.1,
                                                holdout=True)
  rungs = expand(tiny_ladder)
  held = [r for r in rungs if r.holdout]
  assert [(r.sweep, r.label, r.budget) for r in held] == [("big", "C=8e+09 d2", 8e9)]
  tiny_ladder.ladder.sweeps.big.holdout = False
  with pytest.raises(ScalingError, match="only 1 distinct depth"):
    expand(tiny_ladder)


def test_one_run_cannot_be_both_fitted_and_held_out(tiny_grid):
  tiny_grid.ladder.sweeps.again = grid_sweep((1,), (2,), holdout=True)
  with pytest.raises(ScalingError, match=r"again/d1 r2 is held out but is the same run as "
                                         r"grid/d1 r2, which is fitted"):
    expand(tiny_grid)


def test_results_rows_carry_sweep_and_holdout(tiny_ladder):
  tiny_ladder.ladder.sweeps.iso.holdout_rungs = ("C=4e+09 d2",)
  for r in expand(tiny_ladder):
    row = results.row(RunRecord(run_id=r.run_id, config=r.config.to_dict(),
                                status="complete"), r.run_id)
    assert row["sweep"] == "iso" and row["holdout"] == int(r.label == "C=4e+09 d2")
  assert results.row(RunRecord(status="complete"), "plain-run")["holdout"] == 0  # no ladder
  assert {"sweep", "holdout"} <= set(results.COLUMNS)
