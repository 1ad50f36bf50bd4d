"""A workdir holds one run: a changed config is refused before anything in it changes.

Issue 12, defects 1, 2 and 9: resuming an interrupted (or complete) workdir with another config,
a workdir naming a file, and a `gs://` workdir whose bucket cannot be reached each end in one
`error:` line (exit 2) and leave every file of the workdir byte for byte as it was. Fields
outside the identity (mesh, cadence) may change, so an elastic resume on another mesh continues.
"""

import json
import os
import shutil
import signal
import socket
import threading
import time

import jax
import pytest

from scaling import storage
from scaling.errors import ScalingError
from scaling.ladder.spec import run_id
from scaling.train import identity
from scaling.train.loop import train
from tests.helpers import ROOT, run_cli
from tests.train.conftest import make_tiny_cfg
from tests.train.test_resume import _flags


def _snapshot(workdir) -> dict[str, bytes]:
  """Every file under `workdir` (checkpoints, metrics.jsonl, result.json, tb events) by path."""
  return {os.path.relpath(os.path.join(d, f), workdir): open(os.path.join(d, f), "rb").read()
          for d, _, files in os.walk(workdir) for f in files}


def _metrics(workdir):
  return [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]


def _argv(cfg, workdir, *extra) -> list[str]:
  """`scaling train` arguments for `cfg` (as tests/train/test_resume.py spells them)."""
  argv = _flags(cfg, workdir)[3:]
  argv[1] = f"--config={ROOT / 'configs/dense.py'}:tiny"  # any working directory
  return argv + list(extra)


def _one_error_line(err: str) -> str:
  lines = [x for x in err.splitlines() if x.strip() and not x.startswith(("INFO", "WARNING"))]
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  assert "Traceback" not in err and "Event loop is closed" not in err, err
  return lines[0]


@pytest.fixture(scope="module")
def _interrupted_once(data_dir, tmp_path_factory):
  """A run stopped by SIGTERM after its step-4 checkpoint (status `interrupted`), trained once."""
  cfg = make_tiny_cfg(data_dir)
  cfg.train.update(steps=16, checkpoint_every=4, eval_every=8)
  run = tmp_path_factory.mktemp("identity") / "interrupted"

  def preempt():
    deadline = time.time() + 120
    while not (run / "checkpoints" / "4").exists() and time.time() < deadline:
      time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)  # train() turns it into checkpoint-and-stop

  watcher = threading.Thread(target=preempt, daemon=True)
  watcher.start()
  record = train(cfg, run)
  watcher.join()
  assert record["status"] == "interrupted" and 4 <= record["steps_done"] < 16
  return cfg, run, record


@pytest.fixture
def interrupted(_interrupted_once, tmp_path):
  """A fresh copy of the interrupted workdir (config, path, its record) for one test."""
  cfg, run, record = _interrupted_once
  shutil.copytree(run, tmp_path / "interrupted")
  return cfg.copy_and_resolve_references(), tmp_path / "interrupted", record


@pytest.mark.slow
def test_changed_config_on_interrupted_workdir_is_refused_and_nothing_changes(
    interrupted, capfd):
  cfg, run, record = interrupted
  before = _snapshot(run)
  assert any(p.startswith("checkpoints/") for p in before) and "result.json" in before
  assert any(p.startswith("tb/") for p in before) and "metrics.jsonl" in before
  code, err = run_cli(capfd, _argv(cfg, run, "--config.model.num_layers=3",
                                 "--config.train.steps=12"))
  assert code == 2
  line = _one_error_line(err)
  assert line == (f"error: {run} holds another run (model.num_layers 2 -> 3, train.steps 16 -> "
                  "12); use a new --workdir"), line
  assert _snapshot(run) == before  # every file, byte for byte


def test_refusal_names_five_fields_and_counts_the_rest(interrupted):
  cfg, run, _ = interrupted
  other = cfg.copy_and_resolve_references()
  other.model.update(num_layers=3, d_ff=128)
  other.train.update(lr=2e-2, seed=1, steps=20, warmup_steps=3)
  with pytest.raises(ScalingError, match=r"holds another run \(model\.d_ff 64 -> 128, "
                     r"model\.num_layers 2 -> 3, train\.lr 0\.01 -> 0\.02, train\.seed 0 -> 1, "
                     r"train\.steps 16 -> 20, \+1 more\); use a new --workdir"):
    train(other, run)


def test_changed_config_on_complete_workdir_is_refused(tiny_cfg, tmp_path, capfd):
  # The interrupted run's steps and schedule: its compiled programs are cached already.
  tiny_cfg.train.update(steps=16, eval_every=8, checkpoint_every=4)
  run = tmp_path / "done"
  first = train(tiny_cfg, run)
  assert first["config_identity"] == identity.identity_hash(tiny_cfg)
  assert json.loads((run / "identity.json").read_text())["config_identity"] == (
      first["config_identity"])
  before = _snapshot(run)
  code, err = run_cli(capfd, _argv(tiny_cfg, run, "--config.model.d_model=64"))
  assert code == 2 and "model.d_model 32 -> 64" in _one_error_line(err)
  assert _snapshot(run) == before
  # Fields outside the identity may differ: the complete run is reported, not retrained.
  same = tiny_cfg.copy_and_resolve_references()
  same.train.update(log_every=1, eval_every=2, checkpoint_every=1)
  same.mesh.data = 2
  same.model.remat = "full"
  assert train(same, run)["wall_time_s"] == first["wall_time_s"]
  # A workdir from before identity.json existed is judged by its config.json.
  (run / "identity.json").unlink()
  with pytest.raises(ScalingError, match=r"model\.num_layers 2 -> 1"):
    train(_with(tiny_cfg, num_layers=1), run)


def _with(cfg, **model):
  out = cfg.copy_and_resolve_references()
  out.model.update(model)
  return out


def test_checkpoint_of_another_shape_is_refused_not_treated_as_damage(interrupted, capfd):
  cfg, run, _ = interrupted
  # No record of the run's config survives (an older or a hand-made workdir): only the
  # checkpoints can tell that they belong to another model.
  for name in ("identity.json", "config.json", "result.json"):
    (run / name).unlink()
  before = _snapshot(run)
  with pytest.raises(ScalingError, match=r"holds another run: its checkpoint at step \d+ does "
                     r"not fit this model \(params\..* \[2, .*\] float32 -> \[3, .*\] float32"):
    train(_with(cfg, num_layers=3), run)
  assert _snapshot(run) == before
  err = capfd.readouterr().err
  assert "Event loop is closed" not in err and "Traceback" not in err


@pytest.mark.slow
def test_resume_on_another_mesh_continues_the_run(interrupted, caplog):
  cfg, run, record = interrupted
  kept = _metrics(run)
  other = cfg.copy_and_resolve_references()
  other.mesh.update(data=2, model=4)  # data 8 -> data 2, model 4
  other.train.update(log_every=4, eval_every=4, checkpoint_every=8)  # cadence may change too
  with caplog.at_level("INFO"):
    result = train(other, run, devices=jax.devices()[:8])
  assert f"from step {record['steps_done']}" in caplog.text  # resumed, not from scratch
  assert result["status"] == "complete" and result["mesh"]["model"] == 4
  lines = _metrics(run)
  assert lines[:len(kept)] == kept  # the steps before the checkpoint are the first run's
  assert [x["step"] for x in lines[len(kept):]] == list(range(
      (record["steps_done"] // 4 + 1) * 4, 17, 4))
  assert lines[-1]["loss"] < kept[-1]["loss"]  # it went on learning
  assert result["config_identity"] == identity.identity_hash(cfg)
  # Bitwise-equal resumes on one mesh, and equal losses across meshes, are tested in
  # test_resume.py and test_loop.py.


def test_ladder_run_ids_use_the_identity_rule(tiny_cfg):
  rid = run_id(tiny_cfg)
  assert rid == f"{tiny_cfg.model.name}-{identity.identity_hash(tiny_cfg)[:12]}"
  cadence = tiny_cfg.copy_and_resolve_references()
  cadence.train.update(log_every=3, eval_every=5, checkpoint_every=7)
  cadence.mesh.update(data=2, model=4)
  cadence.model.update(remat="full", scan_layers=False)
  assert run_id(cadence) == rid and not identity.differences(identity.identity(tiny_cfg),
                                                              identity.identity(cadence))
  assert run_id(_with(tiny_cfg, num_layers=3)) != rid


def test_workdir_naming_a_file_is_one_line(tiny_cfg, tmp_path, capfd):
  f = tmp_path / "notes.txt"
  f.write_text("mine")
  for workdir in (f, f / "run"):
    code, err = run_cli(capfd, _argv(tiny_cfg, workdir))
    assert code == 2
    assert str(f) in _one_error_line(err) and "not a folder" in err
  assert f.read_text() == "mine"


def test_unreachable_bucket_is_one_line_before_anything_compiles(tiny_cfg, monkeypatch,
                                                                  capfd):
  with socket.socket() as s:  # a port nobody listens on
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
  monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "fake")
  compiled = []
  monkeypatch.setattr("scaling.train.loop.build_trainer", lambda *a, **k: compiled.append(1))
  began = time.time()
  code, err = run_cli(capfd, _argv(tiny_cfg, "gs://some-bucket/runs/x"))
  assert code == 2 and not compiled
  line = _one_error_line(err)
  assert "gs://some-bucket/runs/x" in line and "refused" in line, line
  assert time.time() - began < 10


def test_bucket_probe_on_the_emulator(gcs_bucket):
  storage.check_workdir(f"{gcs_bucket}/runs/x")  # reachable: no error
  with pytest.raises(ScalingError, match=r"cannot use gs://no-such-bucket-12/x: bucket "
                     r"'no-such-bucket-12' does not exist"):
    storage.check_workdir("gs://no-such-bucket-12/x")


def test_unreadable_checkpoint_is_skipped_and_kept(interrupted, caplog):
  cfg, run, record = interrupted
  latest = record["steps_done"]
  steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
  assert steps[-1] == latest and len(steps) == 2
  # Array data truncated: it cannot be read (tests/train/test_loop.py damages the metadata).
  for f in (run / "checkpoints" / str(latest) / "state").rglob("*"):
    if f.is_file() and f.parent.name == "d":
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  prefix = f"checkpoints/{latest}/"
  damaged = {p: b for p, b in _snapshot(run).items() if p.startswith(prefix)}
  resume = cfg.copy_and_resolve_references()
  resume.train.keep_checkpoints = 1  # retention alone would delete the damaged one by the end
  with caplog.at_level("INFO"):
    result = train(resume, run)
  assert result["status"] == "complete"
  assert f"checkpoint at step {latest}" in caplog.text and "could not be restored" in caplog.text
  assert f"resuming {run} from step {steps[0]}" in caplog.text
  after = _snapshot(run)
  assert {p: b for p, b in after.items() if p.startswith(prefix)} == damaged  # never deleted
  assert any(p.startswith("checkpoints/16/") for p in after)
