"""`scaling train --branch_from=TRUNK_DIR [--branch_step=K]`: a cooldown branch started by hand
is bitwise the same wsd run trained alone, is recorded as a branch, resumes, and every bad fork
is one error line before anything compiles."""

import json

import pytest

from scaling.train import record
from scaling.train.loop import train
from tests.helpers import ROOT, run_cli_captured
from tests.train.conftest import make_tiny_cfg
from tests.train.test_resume import _flags

pytestmark = pytest.mark.slow(seconds=20)  # trains a trunk, a branch and the run alone

WSD = ["--config.train.schedule=wsd", "--config.train.decay_fraction=0.3333",
       "--config.train.decay_shape=1-sqrt"]  # 12 steps: the decay starts at step 8


def _argv(cfg, workdir, *extra):
  argv = _flags(cfg, workdir)[3:]
  argv[1] = f"--config={ROOT / 'configs/dense.py'}:tiny"
  return [*argv, *extra]


def _run(capfd, argv):
  code, out, err = run_cli_captured(capfd, argv)
  return code, out + err


def _curve(workdir, after):
  lines = map(json.loads, (workdir / record.METRICS).read_text().splitlines())
  return [(x["step"], x["loss"], x.get("eval_loss"), x["lr"]) for x in lines if x["step"] > after]


@pytest.fixture(scope="module")
def trunk(data_dir, tmp_path_factory):
  """A constant-LR trunk of 8 steps, checkpoints at 4 and 8 (trained once for the module)."""
  cfg = make_tiny_cfg(data_dir)
  cfg.train.update(steps=8, schedule="constant")
  t = tmp_path_factory.mktemp("fork") / "trunk"
  assert train(cfg, t)["status"] == "complete"
  return t


def test_a_hand_branch_is_bitwise_the_wsd_run_trained_alone(tiny_cfg, trunk, tmp_path, capfd):
  branch, alone = tmp_path / "branch", tmp_path / "alone"
  code, out = _run(capfd, _argv(tiny_cfg, branch, *WSD, f"--branch_from={trunk}"))
  assert code == 0, out
  assert "starts from step 8 of" in out
  code, out = _run(capfd, _argv(tiny_cfg, alone, *WSD))
  assert code == 0, out
  a, b = record.read_result(alone), record.read_result(branch)
  assert b.status == "complete" and b.final_eval_loss == a.final_eval_loss
  assert _curve(branch, after=8) == _curve(alone, after=8) and len(_curve(alone, 8)) >= 2
  assert (b.parent_run_id, b.branch_step) == ("trunk", 8)
  # The trunk's location is not part of the branch's identity; its name and the fork step are.
  ident = json.loads((branch / "identity.json").read_text())["identity"]
  assert ident["branch"] == {"parent": "trunk", "step": 8}
  # A rerun of the same command finds the branch complete, with no new training.
  code, out = _run(capfd, _argv(tiny_cfg, branch, *WSD, f"--branch_from={trunk}"))
  assert code == 0 and "complete" in out, out
  assert record.read_result(branch).final_eval_loss == b.final_eval_loss


@pytest.mark.parametrize("extra, says", [
    (["--branch_step=6"], "--branch_step=6: the trunk"),
    (["--branch_step=9"], "--branch_step=9 is after this branch's own decay starts (step 8)"),
    (["--config.model.d_model=64"], "model.d_model 32 -> 64"),
    (["--config.train.lr=0.02"], "train.lr 0.01 -> 0.02"),
    (["--config.train.schedule=cosine"], "train.schedule='cosine': a branch continues"),
    (["--branch_from=MISSING"], "is not a run folder"),
])
def test_a_bad_fork_is_one_error_line_naming_the_fix(tiny_cfg, trunk, tmp_path, capfd, extra,
                                                      says):
  argv = _argv(tiny_cfg, tmp_path / "b", *WSD, f"--branch_from={trunk}", *extra)
  argv = [a.replace("MISSING", str(tmp_path / "nothing")) for a in argv]
  code, _, err = run_cli_captured(capfd, argv)
  assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
  assert says in err, err
  assert not (tmp_path / "b").exists()


def test_branch_step_alone_and_a_cosine_trunk_are_refused(tiny_cfg, tmp_path, capfd):
  code, _, err = run_cli_captured(capfd, _argv(tiny_cfg, tmp_path / "b", *WSD, "--branch_step=4"))
  assert code == 2 and "--branch_step needs --branch_from" in err, err
  cosine = tmp_path / "cosine"
  (cosine).mkdir()
  cfg = tiny_cfg.to_dict()
  cfg["train"]["schedule"] = "cosine"
  (cosine / "config.json").write_text(json.dumps(cfg))
  code, _, err = run_cli_captured(capfd, _argv(tiny_cfg, tmp_path / "b", *WSD,
                                               f"--branch_from={cosine}"))
  assert code == 2 and "train.schedule='cosine', which decays from its first step" in err, err
