"""WSD trunks with cooldown branches (ladder sweeps of kind `wsd`): the expansion and its errors,
`ladder show`, trunks before branches, a branch restored from its trunk bitwise equal to the same
run trained alone from step 0, the kept fork checkpoints, the run records and `results collect`.
"""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from scaling import cli
from scaling.fit.table import load_table
from scaling.ladder import results, runner, store
from scaling.ladder.spec import expand
from scaling.train import record
from scaling.train.checkpoint import saved_steps
from scaling.train.loop import train
from scaling.train.optimizer import decay_start, schedule
from tests.helpers import load_config, run_cli

WSD = "tests/ladder/tiny_ladder.py:wsd"


@pytest.fixture
def tiny_wsd(data_dir):
  cfg = load_config(WSD)
  cfg.run.data.data_dir = data_dir
  return cfg


def test_wsd_equals_constant_before_its_decay_then_cools_down_in_its_shape():
  from scaling.config import default_config

  t = default_config().train
  t.update(steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1, schedule="wsd",
           decay_fraction=0.2, decay_shape="1-sqrt")
  constant = ml_collections.ConfigDict(t.to_dict())
  constant.update(schedule="constant", steps=80)
  assert decay_start(t) == 80
  steps = jnp.arange(80)
  # Compiled as `scaling` compiles them: XLA's CPU fusion emitters, which the suite turns off
  # for speed (tests/conftest.py), and under whose older emitters the two programs round 4 of
  # the 10 warm-up rates differently (1 ulp).
  default = {"xla_cpu_use_fusion_emitters": True}
  np.testing.assert_array_equal(jax.jit(schedule(t), compiler_options=default)(steps),
                                jax.jit(schedule(constant), compiler_options=default)(steps))
  # 1-sqrt (Hagele et al. 2024): floor + (peak - floor) (1 - sqrt(k / 20)) at decay step k.
  assert float(schedule(t)(85)) == pytest.approx(1e-4 + 9e-4 * (1 - 0.5))
  assert float(schedule(t)(100)) == pytest.approx(1e-4)
  t.decay_shape = "linear"
  assert float(schedule(t)(85)) == pytest.approx(1e-3 - 9e-4 * 0.25)


def test_trunk_and_branches_share_everything_before_the_fork(tiny_wsd):
  trunk, *branches = expand(tiny_wsd)
  assert trunk.role == "trunk" and [b.role for b in branches] == ["branch", "branch"]
  t = trunk.config.train
  assert t.schedule == "constant"
  for b in branches:
    bt = b.config.train
    assert b.parent == trunk.run_id and b.config.branch.parent == trunk.run_id
    assert bt.schedule == "wsd" and bt.decay_fraction == 0.25 and bt.decay_shape == "1-sqrt"
    assert b.branch_step == b.config.branch.step == decay_start(bt)
    assert (bt.lr, bt.global_batch, bt.warmup_steps, bt.seed) == (
        t.lr, t.global_batch, t.warmup_steps, t.seed)
    # The cooldown is the final quarter of the branch's own steps.
    assert bt.steps - b.branch_step == round(0.25 * bt.steps)
  assert list(trunk.config.trunk.branch_steps) == [b.branch_step for b in branches]
  assert t.steps == branches[-1].branch_step  # the trunk stops at its last branch point
  # The fork step is part of a branch's identity: another fork is another run.
  moved = ml_collections.ConfigDict(branches[0].config.to_dict())
  moved.branch.step += 1
  from scaling.ladder.spec import run_id
  assert run_id(moved) != branches[0].run_id


@pytest.mark.parametrize("override, names", [
    ("sweeps.wsd.cooldown_fraction=1.5", "ladder.sweeps.wsd.cooldown_fraction=1.5"),
    ("sweeps.wsd.cooldown_fraction=0.0", "must be in (0, 1)"),
    ("sweeps.wsd.cooldown_shape=cosine", "ladder.sweeps.wsd.cooldown_shape='cosine'"),
    ("sweeps.wsd.trunk_tokens_per_param=2.0", "is beyond the trunk's"),
])
def test_bad_branch_config_is_one_error_line(override, names, capfd):
  code, err = run_cli(capfd, ["ladder", "show", WSD, f"--config.ladder.{override}"])
  assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
  assert names in err


def test_unknown_decay_shape_of_a_run_is_one_error_line(capfd, tmp_path):
  code, err = run_cli(capfd, ["train", "--config=configs/dense.py:tiny", f"--workdir={tmp_path}",
                              "--config.train.schedule=wsd", "--config.train.decay_shape=cos"])
  assert code == 2 and err.startswith("error: train.decay_shape='cos'") and err.count("\n") == 1


def test_show_lists_each_trunk_with_its_branches_and_the_compute_saved(tiny_wsd, capsys):
  assert cli.main(["ladder", "show", WSD]) == 0
  out = capsys.readouterr().out.splitlines()
  trunk, *branches = expand(tiny_wsd)
  assert [line.split()[0] for line in out[1:4]] == [trunk.run_id] + [b.run_id for b in branches]
  assert out[1].split()[3] == "trunk"  # the rung label is two words: "wsd/d1 trunk"
  assert [line.split()[3] for line in out[2:4]] == [f"@{b.branch_step}" for b in branches]
  spent = trunk.counts["flops"] + sum(
      b.counts["flops"] * (1 - b.branch_step / b.config.train.steps) for b in branches)
  alone = sum(b.counts["flops"] for b in branches)
  assert out[-1] == (f"wsd: 1 trunks and 2 cooldown branches spend {spent:.3g} FLOPs for 2 "
                     f"(N, D) points; the same grid as independent runs: {alone:.3g} FLOPs "
                     f"({spent / alone:.0%})")


def _arrays(run_dir, step):
  """The saved train state at `step` as numpy arrays by tree path (orbax, no target)."""
  tree = ocp.StandardCheckpointer().restore(run_dir / "checkpoints" / str(step) / "state")
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _lines(run_dir):
  return [json.loads(x) for x in (run_dir / record.METRICS).read_text().splitlines()]


def _curve(run_dir, after: int = 0):
  """(step, loss, eval loss, lr) of every metrics line after step `after`."""
  return [(x["step"], x["loss"], x.get("eval_loss"), x["lr"]) for x in _lines(run_dir)
          if x["step"] > after]


def _train(rung_or_cfg, workdir):
  """Trains on one CPU device (mesh 1x1x1; the mesh is outside the run identity): the bitwise
  comparison needs one mesh for all runs, and one device compiles fastest."""
  cfg = ml_collections.ConfigDict(getattr(rung_or_cfg, "config", rung_or_cfg).to_dict())
  cfg.mesh.update(data=1, model=1, expert=1)
  return train(cfg, workdir, devices=jax.devices()[:1])


def test_a_branch_restored_from_its_trunk_is_bitwise_the_run_trained_alone(tiny_wsd, tmp_path,
                                                                          capsys):
  w = tmp_path / "ladder"
  trunk, short, longest = expand(tiny_wsd)
  runner.prepare(w, "tiny", [trunk, short, longest])
  tdir, bdir = store.run_dir(w, trunk.run_id), store.run_dir(w, longest.run_id)
  _train(trunk, tdir)
  # The trunk kept every branch point's checkpoint beside its newest ones, and evaluated there.
  assert {short.branch_step, longest.branch_step} <= set(saved_steps(tdir))
  evals = {x["step"]: x["eval_loss"] for x in _lines(tdir) if "eval_loss" in x}
  assert {short.branch_step, longest.branch_step} <= set(evals)
  assert runner.ready_rungs(w, [longest, short]) == [longest, short]
  _train(longest, bdir)  # restores the trunk's checkpoint at its fork step

  # The same run trained alone from step 0 (no parent) is bitwise the forked branch: at the fork
  # step (the trunk's constant schedule and the branch's wsd one agree before it), after it and
  # at the end.
  fork, steps = longest.branch_step, longest.config.train.steps
  alone_cfg = ml_collections.ConfigDict(longest.config.to_dict())
  del alone_cfg["branch"]
  alone_cfg.train.checkpoint_every = fork  # saves at the fork step too
  alone = tmp_path / "alone"
  _train(alone_cfg, alone)
  at_fork, trunk_at_fork = _arrays(alone, fork), _arrays(tdir, fork)
  assert at_fork.keys() == trunk_at_fork.keys() and len(at_fork) > 3
  for k, v in at_fork.items():
    np.testing.assert_array_equal(v, trunk_at_fork[k], err_msg=k)
  assert _curve(bdir, after=fork) == _curve(alone, after=fork)
  at_end = _arrays(bdir, steps)
  for k, v in _arrays(alone, steps).items():
    np.testing.assert_array_equal(v, at_end[k], err_msg=k)
  a, b = record.read_result(alone), record.read_result(bdir)
  assert a.final_eval_loss == b.final_eval_loss and b.status == "complete"
  assert (b.parent_run_id, b.branch_step) == (trunk.run_id, fork)
  assert a.parent_run_id is None and a.branch_step is None

  # results collect: the cooldown point; the trunk's evals only with --all, never fitted.
  got = results.gather(w)
  assert [(r["run_id"], r["point"], r["parent_run_id"], r["branch_step"], r["lr"],
           r["cooldown_fraction"]) for r in got.rows] == [
      (longest.run_id, "cooldown", trunk.run_id, fork, trunk.config.train.lr, 0.25)]
  assert got.trunks == 1
  mid = [r for r in results.gather(w, include_incomplete=True).rows if r["point"] == "mid-run"]
  assert {(r["run_id"], r["loss"], r["parent_run_id"]) for r in mid} == {
      (f"{trunk.run_id}@{s}", loss, trunk.run_id) for s, loss in evals.items()}
  assert len(load_table(str(w))) == 1 and len(load_table(str(w), mid_run=True)) == 2

  # A branch whose trunk stopped without its fork checkpoint is never started.
  orphan = expand(tiny_wsd)[1]
  orphan.run_id, orphan.branch_step = "orphan", fork + 1
  assert not runner.ready_rungs(w, [orphan])
  assert runner.run_local(w, [orphan], [orphan]) == 1
  assert (f"its trunk {trunk.run_id} is complete without a checkpoint at step {fork + 1}"
          in capsys.readouterr().out)
  assert not store.run_dir(w, "orphan").exists()


def test_dry_runs_launch_trunks_first_and_hold_branches_on_slurm(tiny_wsd, tmp_path, capsys):
  trunk, *branches = expand(tiny_wsd)
  data = f"--config.run.data.data_dir={tiny_wsd.run.data.data_dir}"
  assert cli.main(["ladder", "run", WSD, f"--workdir={tmp_path / 's'}", "--backend=slurm",
                   "--dry_run", data]) == 0
  out = capsys.readouterr().out
  first, held = out.split("#!/bin/bash")[1:]
  assert f'RUN_IDS={"(" + trunk.run_id + ")"}' in first and "--dependency" not in first
  assert "#SBATCH --dependency=afterok:<array 0>_0" in held
  assert "#SBATCH --kill-on-invalid-dep=yes" in held
  assert f"RUN_IDS=({' '.join(b.run_id for b in branches)})" in held
  tpu = ["--backend=tpu-vm", "--config.ladder.tpu_vm.name=v5e", "--config.ladder.tpu_vm.zone=z"]
  assert cli.main(["ladder", "run", WSD, f"--workdir={tmp_path / 't'}", "--dry_run", data,
                   *tpu]) == 0
  chain = capsys.readouterr().out.split("--command=")[1]
  assert [chain.index(r.run_id) for r in (trunk, *branches)] == sorted(
      chain.index(r.run_id) for r in (trunk, *branches))
