"""Two processes on localhost (2 CPU devices each, gloo collectives) train one run together via
`scaling train --coordinator ... --num_processes 2 --process_id i`, agree with a single process
on 4 devices, checkpoint with orbax from both processes, and resume together."""

import json
import os
import subprocess
import sys

import portpicker
import pytest

from tests.helpers import ROOT, xla_flags

pytestmark = pytest.mark.slow


def _flags(data_dir):
  flat = {"model.d_model": 32, "model.d_ff": 64, "model.vocab_size": 256, "model.max_len": 64,
          "model.dtype": "float32", "train.steps": 12, "train.global_batch": 8,
          "train.seq_len": 64, "train.warmup_steps": 2, "train.log_every": 2,
          "train.eval_every": 6, "train.eval_batches": 2, "train.checkpoint_every": 4,
          "train.lr": 1e-2, "data.data_dir": data_dir,
          "data.synthetic.train_tokens": 65536, "data.synthetic.validation_tokens": 16384,
          "data.synthetic.num_contexts": 256}
  return ["--config=configs/dense.py:tiny"] + [f"--config.{k}={v}" for k, v in flat.items()]


def _env(devices):
  # This test's device count; the suite's other XLA flags (tests/conftest.py) stay.
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(devices))


def _train(args, devices):
  return subprocess.Popen([sys.executable, "-m", "scaling.cli", "train", *args], cwd=ROOT,
                          env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _together(workdir, data_dir):
  port = portpicker.pick_unused_port()
  procs = [_train([*_flags(data_dir), f"--workdir={workdir}",
                   f"--coordinator=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
                  devices=2) for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  return outs


def _curve(workdir):
  return [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_one_run_and_agree_with_one(tmp_path, data_dir):
  single = _train([*_flags(data_dir), f"--workdir={tmp_path / 'single'}"], devices=4)
  out = single.communicate(timeout=300)[0]
  assert single.returncode == 0, out
  multi = tmp_path / "multi"
  _together(multi, data_dir)
  a, b = _curve(tmp_path / "single"), _curve(multi)
  assert [x["step"] for x in a] == [x["step"] for x in b] == list(range(2, 13, 2))
  for x, y in zip(a, b, strict=True):
    assert y["loss"] == pytest.approx(x["loss"], rel=1e-5, abs=1e-5)
    assert ("eval_loss" in y) == ("eval_loss" in x)
    if "eval_loss" in x:
      assert y["eval_loss"] == pytest.approx(x["eval_loss"], rel=1e-5, abs=1e-5)
  record = json.loads((multi / "result.json").read_text())
  assert record["status"] == "complete"
  assert record["hardware"]["process_count"] == 2 and record["hardware"]["device_count"] == 4
  assert record["mesh"]["data"] == 4
  steps = sorted(int(p.name) for p in (multi / "checkpoints").iterdir() if p.name.isdigit())
  assert steps and steps[-1] == 12  # orbax saved from both processes

  # Both processes restore the last checkpoint together and end with the same record.
  (multi / "result.json").unlink()
  outs = _together(multi, data_dir)
  assert not any("step 2/12 " in o for o in outs), outs  # restored at step 12, not retrained
  again = json.loads((multi / "result.json").read_text())
  assert again["final_eval_loss"] == pytest.approx(record["final_eval_loss"], rel=1e-6)
