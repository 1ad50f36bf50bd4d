"""Training into a `gs://` workdir (a Cloud Storage emulator): preempted, resumed, identical."""

import json
import signal
import subprocess
import time
import uuid

import pytest

from scaling import storage
from scaling.train.loop import train
from tests.helpers import ROOT
from tests.train.test_resume import _flags

pytestmark = pytest.mark.slow


def _curve(workdir):
  return [(x["step"], x["loss"], x.get("eval_loss"))
          for x in storage.read_jsonl(storage.Path(workdir) / "metrics.jsonl")]


def test_preempted_run_on_gcs_resumes_to_the_local_result(tiny_cfg, tmp_path, gcs_bucket):
  tiny_cfg.train.update(steps=24, checkpoint_every=4)
  train(tiny_cfg, tmp_path / "local")
  run = storage.Path(gcs_bucket) / "train" / uuid.uuid4().hex
  cmd = _flags(tiny_cfg, run)
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  deadline = time.time() + 240
  while not (run / "checkpoints" / "4").exists() and proc.poll() is None:
    assert time.time() < deadline, "no checkpoint appeared on GCS"
    time.sleep(0.05)
  assert proc.poll() is None, "the run finished before it could be preempted"
  proc.send_signal(signal.SIGTERM)  # what a Cloud TPU preemption sends
  out = proc.communicate(timeout=240)[0].decode()
  assert proc.returncode == 1, out
  record = json.loads((run / "result.json").read_text())
  assert record["status"] == "interrupted" and 4 <= record["steps_done"] < 24

  result = train(tiny_cfg, run)  # resumes in this process, from GCS
  assert result["status"] == "complete"
  assert _curve(run) == _curve(tmp_path / "local")  # bitwise, on CPU
  local = json.loads((tmp_path / "local" / "result.json").read_text())
  assert json.loads((run / "result.json").read_text())["final_eval_loss"] == (
      local["final_eval_loss"])
  assert [p.name for p in (run / "tb").iterdir()]  # TensorBoard events, through tensorboardX
  assert json.loads((run / "config.json").read_text())["train"]["steps"] == 24
