"""Ladder expansion: grids, IsoFLOP sweeps, per-run rules, run ids and errors naming the rung."""

import math

import numpy as np
import pytest

from scaling import cli
from scaling.errors import ScalingError
from scaling.hparam_rules import deepseek as deepseek_hparams
from scaling.ladder.spec import expand, isoflop_sweep, moe_sweep, run_id
from tests.helpers import load_config


def test_grid_tokens_are_ratios_of_n_and_rules_follow_size(tiny_grid):
  rungs = expand(tiny_grid)
  assert [r.label for r in rungs] == ["d1 r2", "d1 r4", "d2 r2", "d2 r4"]
  for r in rungs:
    t, ratio = r.config.train, r.config.ladder.tokens_per_param
    n = r.counts["params_non_embedding"]
    # D = r N to within one step's tokens; steps and cosine length are the run's own.
    assert abs(r.counts["tokens"] - ratio * n) <= t.global_batch * t.seq_len / 2
    assert t.steps == r.counts["tokens"] // (t.global_batch * t.seq_len)
    assert 1 <= t.warmup_steps < t.steps and t.hparam_rule == ""
    assert t.global_batch % 8 == 0
    # DeepSeek LLM Eq. 1 from the planned C, capped at rules.lr_max, 4 significant digits.
    lr = min(0.02, deepseek_hparams(ratio * n * r.counts["flops_per_token"])[0])
    assert t.lr == pytest.approx(lr, rel=1e-3)
    assert r.config.run_id == r.run_id and r.budget is None


def test_isoflop_runs_spend_their_budget_and_space_sizes_in_log_n(tiny_ladder):
  tiny_ladder.ladder.sweeps.iso = isoflop_sweep([2e10, 6e10], count=4, n_spread=3.0,
                                                tolerance=0.05)
  tiny_ladder.ladder.rules.max_batch = 16
  rungs = expand(tiny_ladder)
  budgets = sorted({r.budget for r in rungs})
  assert budgets == [2e10, 6e10]
  for b in budgets:
    sizes = [r.counts["params_non_embedding"] for r in rungs if r.budget == b]
    assert len(sizes) >= 2 and sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    for r in (r for r in rungs if r.budget == b):
      assert abs(r.counts["flops"] / b - 1) <= 0.05
      assert r.config.ladder.budget == b
    # Around N* = sqrt(C / 120), within the spread (depths round N to the ladder's rungs).
    n_star = math.sqrt(b / 120)
    assert min(sizes) < n_star < max(sizes)


def test_run_ids_are_stable_and_ignore_fields_that_do_not_change_results(tiny_ladder):
  a = expand(tiny_ladder)
  b = expand(load_config("tests/ladder/tiny_ladder.py"))  # another data_dir
  assert [r.run_id for r in a] == [r.run_id for r in b]
  cfg = a[0].config
  same = cfg.copy_and_resolve_references()
  same.train.log_every, same.mesh.data, same.data.data_dir = 7, 2, "/elsewhere"
  same.ladder.budget = 123.0
  assert run_id(same) == a[0].run_id
  other = cfg.copy_and_resolve_references()
  other.train.lr *= 2
  assert run_id(other) != a[0].run_id
  assert a[0].run_id.startswith("ladder_d1-")


def test_the_same_run_in_two_sweeps_is_one_run(tiny_ladder):
  tiny_ladder.ladder.sweeps.again = tiny_ladder.ladder.sweeps.iso.copy_and_resolve_references()
  assert len(expand(tiny_ladder)) == 3


@pytest.mark.parametrize("change, message", [
    (lambda c: c.ladder.sweeps.iso.update(budgets=(1e8,)),
     r"ladder rung iso/C=1e\+08 d1: .* below ladder.rules.min_steps"),
    (lambda c: c.run.train.update(seq_len=128),
     "ladder rung iso/C=4e\\+09 d1: train.seq_len=128 is longer than model.max_len=64"),
    (lambda c: c.ladder.sweeps.iso.update(depths=(), count=1),
     "ladder rung iso/C=4e\\+09: only 1 distinct depth"),
    (lambda c: c.ladder.sweeps.iso.update(tolerance=0.001),
     "ladder rung iso/C=4e\\+09 d.*off the budget"),
    (lambda c: c.ladder.sweeps.iso.update(kind="zigzag"), "ladder.sweeps.iso.kind='zigzag'"),
    (lambda c: c.ladder.update(hardware="abacus"), "unknown hardware 'abacus'"),
])
def test_impossible_rungs_fail_before_launch_naming_the_rung(tiny_ladder, change, message):
  change(tiny_ladder)
  with pytest.raises(ScalingError, match=message):
    expand(tiny_ladder)


def test_moe_sweep_keeps_active_params_or_says_moe_is_missing(tiny_ladder):
  tiny_ladder.ladder.sweeps.moe = moe_sweep(2, experts=(1, 4), granularity=(1, 2),
                                            tokens_per_param=2)
  if "moe" not in tiny_ladder.run.model:
    with pytest.raises(ScalingError, match="ladder rung moe/E4 G1: MoE sweeps need"):
      expand(tiny_ladder)
    return
  rungs = [r for r in expand(tiny_ladder) if r.sweep == "moe"]
  assert [r.label for r in rungs] == ["E1 G1", "E4 G1", "E4 G2"]
  assert [r.experts for r in rungs] == [1, 4, 8]
  g2 = rungs[2].config.model.moe
  assert g2.expert_d_ff * 2 == rungs[0].config.model.d_ff and g2.top_k == 2


def test_demo_ladder_expands_to_isoflop_curves_without_training():
  rungs = expand(load_config("configs/ladders/cpu_demo.py"))
  fitted = [r for r in rungs if not r.holdout]
  budgets = sorted({r.budget for r in fitted})
  # Three fitted IsoFLOP profiles over one decade of compute, each with 4+ sizes.
  assert budgets == [1e10, 3e10, 1e11] and len(fitted) == 15
  assert all(sum(r.budget == b for r in fitted) >= 4 for b in budgets)
  # A held-out rung at >= 3x the largest fitted compute, trained but not fitted.
  (held,) = [r for r in rungs if r.holdout]
  assert held.counts["flops"] >= 3 * max(r.counts["flops"] for r in fitted)
  assert all(r.config.train.steps >= 140 for r in rungs)  # no rung is starved of steps
  assert sum(r.counts["flops"] for r in rungs) < 1.3e12  # ~1.2e12: minutes on 2 cores
  # Twice DeepSeek's rate, capped at lr_max 0.02, which binds on every rung (the docstring).
  assert {r.config.train.lr for r in rungs} == {0.02}
  smoke = expand(load_config("configs/ladders/cpu_demo.py:smoke"))
  assert len(smoke) == 7 and sum(r.holdout for r in smoke) == 1
  # The LR sweep behind a fitted rule: every rung of the two smaller budgets at 4 rates.
  sweep = expand(load_config("configs/ladders/cpu_demo.py:lr_sweep"))
  assert len(sweep) == 36
  by_shape = {}
  for r in sweep:
    by_shape.setdefault((r.budget, r.config.model.num_layers), []).append(r.config.train.lr)
  assert len(by_shape) == 9 and all(
      np.allclose(np.sort(v) / min(v), [1, 2, 4, 8]) for v in by_shape.values())


def test_gpu_ladders_hold_their_budgets_and_active_params():
  dense = expand(load_config("configs/ladders/gpu.py"))
  assert len(dense) == 15 and {r.budget for r in dense} == {1e17, 3e17, 1e18}
  assert all(abs(r.counts["flops"] / r.budget - 1) <= 0.05 for r in dense)
  moe = expand(load_config("configs/ladders/gpu.py:moe"))
  assert len(moe) == 16 and {r.label.split()[0] for r in moe} == {
      "E1", "E4", "E8", "E16", "E32", "E64"}
  assert max(r.experts for r in moe) == 64 * 4  # granularity 4 splits each expert in four
  base = next(r for r in moe if r.experts == 1).counts["params_active"]
  # Only the router grows with E x G (d_model x 256 per layer at E64 G4): active parameters stay
  # within 5% of the dense rung's.
  assert all(abs(r.counts["params_active"] / base - 1) < 0.05 for r in moe)
  assert all(r.config.model.moe.dispatch == "pallas" for r in moe if r.experts > 1)


def test_ladder_show_prints_the_table_and_errors_in_one_line(capsys, data_dir):
  assert cli.main(["ladder", "show", "tests/ladder/tiny_ladder.py",
                   f"--config.run.data.data_dir={data_dir}"]) == 0
  out = capsys.readouterr().out
  assert "run_id" in out and "est_time" in out and "iso/C=4e+09 d3" in out
  assert out.count("ladder_d") == 3 and "3 runs" in out
  assert cli.main(["ladder", "show", "--config=tests/ladder/tiny_ladder.py", "--json"]) == 0
  assert capsys.readouterr().out.count("\n") == 3
  code = cli.main(["ladder", "show", "tests/ladder/tiny_ladder.py",
                   "--config.ladder.sweeps.iso.budgets=(1e8,)"])
  err = capsys.readouterr().err
  assert code == 2 and err.startswith("error: ladder rung iso/C=1e+08") and err.count("\n") == 1
  assert cli.main(["ladder", "frobnicate"]) == 2
  assert "unknown ladder command" in capsys.readouterr().err
