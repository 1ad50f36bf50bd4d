"""Interrupted runs resume exactly: a real SIGKILL or SIGTERM of `scaling train`, then a rerun.

The interrupted run is a subprocess (a signal ends a process); the rerun is the same `scaling
train` command run in-process, which spares a JAX start-up.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from scaling.train.loop import train
from tests.helpers import ROOT, run_cli_captured

pytestmark = pytest.mark.slow


def _flags(cfg, workdir):
  flat = {
      "model.num_layers": cfg.model.num_layers, "model.d_model": cfg.model.d_model,
      "model.num_heads": cfg.model.num_heads, "model.num_kv_heads": cfg.model.num_kv_heads,
      "model.d_ff": cfg.model.d_ff, "model.vocab_size": cfg.model.vocab_size,
      "model.max_len": cfg.model.max_len, "model.dtype": cfg.model.dtype,
      "train.seq_len": cfg.train.seq_len, "train.global_batch": cfg.train.global_batch,
      "train.lr": cfg.train.lr, "train.steps": cfg.train.steps,
      "train.warmup_steps": cfg.train.warmup_steps, "train.log_every": cfg.train.log_every,
      "train.eval_every": cfg.train.eval_every, "train.eval_batches": cfg.train.eval_batches,
      "train.checkpoint_every": cfg.train.checkpoint_every,
      "data.data_dir": cfg.data.data_dir,
      "data.synthetic.train_tokens": cfg.data.synthetic.train_tokens,
      "data.synthetic.validation_tokens": cfg.data.synthetic.validation_tokens,
      "data.synthetic.num_contexts": cfg.data.synthetic.num_contexts,
  }
  return [sys.executable, "-m", "scaling.cli", "train", "--config=configs/dense.py:tiny",
          f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in flat.items()]


def _curve(workdir):
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [(x["step"], x["loss"], x.get("eval_loss")) for x in map(json.loads, lines)]


def _rerun(capfd, cmd) -> tuple[int, str]:
  """`cmd` (a `_flags` command line) again, in-process: (exit status, stdout and stderr)."""
  argv = cmd[3:]
  argv[1] = f"--config={ROOT / 'configs/dense.py'}:tiny"  # any working directory
  code, out, err = run_cli_captured(capfd, argv)
  return code, out + err


def _start_and_interrupt(cmd, workdir, sig, after_checkpoint):
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=dict(os.environ))
  target = workdir / "checkpoints" / str(after_checkpoint)
  deadline = time.time() + 240
  while not target.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  assert proc.poll() is None, "the run finished before it could be interrupted"
  proc.send_signal(sig)
  out, _ = proc.communicate(timeout=240)
  return proc.returncode, out.decode()


@pytest.fixture
def long_cfg(tiny_cfg):
  tiny_cfg.train.update(steps=60, log_every=2, eval_every=10, checkpoint_every=4)
  return tiny_cfg


def test_sigkill_then_rerun_matches_uninterrupted(long_cfg, tmp_path, capfd):
  reference = tmp_path / "reference"
  train(long_cfg, reference)
  run = tmp_path / "killed"
  cmd = _flags(long_cfg, run)
  code, _ = _start_and_interrupt(cmd, run, signal.SIGKILL, after_checkpoint=8)
  assert code == -signal.SIGKILL
  assert not (run / "result.json").exists()
  code, out = _rerun(capfd, cmd)
  assert code == 0, out
  assert "step 2/60 " not in out and "step 60/60 " in out  # it resumed
  assert _curve(run) == _curve(reference)  # bitwise, on CPU
  a = json.loads((run / "result.json").read_text())
  b = json.loads((reference / "result.json").read_text())
  assert a["final_eval_loss"] == b["final_eval_loss"]


def test_sigterm_checkpoints_and_resumes(long_cfg, tmp_path, capfd):
  run = tmp_path / "preempted"
  cmd = _flags(long_cfg, run)
  code, out = _start_and_interrupt(cmd, run, signal.SIGTERM, after_checkpoint=4)
  assert code == 1, out
  record = json.loads((run / "result.json").read_text())
  assert record["status"] == "interrupted"
  saved = max(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
  assert saved == record["steps_done"] and saved < 60
  code, out = _rerun(capfd, cmd)
  assert code == 0, out
  assert json.loads((run / "result.json").read_text())["status"] == "complete"
  steps = [s for s, _, _ in _curve(run)]
  assert steps == sorted(set(steps)) and steps[-1] == 60
