"""`scaling info`: the JSON contract and one-line errors."""

import json
import subprocess
import sys

from tests.helpers import ROOT


def _scaling(*args):
  return subprocess.run([sys.executable, "-m", "scaling.cli", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


def test_info_json_for_175b_shape():
  out = _scaling("info", "--config=configs/dense.py:gpt3_175b", "--mesh=data:64,model:8",
                 "--json")
  assert out.returncode == 0, out.stderr
  report = json.loads(out.stdout)
  for key in ("params_non_embedding", "params_total", "params_active", "flops_per_token",
              "memory_per_device_bytes"):
    assert key in report
  assert set(report["flops_per_token"]) == {"6N", "kaplan", "chinchilla"}
  assert abs(report["params_total"] - 175e9) < 0.02 * 175e9
  assert report["mesh"] == {"data": 64, "model": 8, "expert": 1}


def test_info_human_readable_with_override():
  out = _scaling("info", "--config=configs/dense.py:tiny", "--config.model.num_layers=4")
  assert out.returncode == 0, out.stderr
  assert "4 layers" in out.stdout


def test_info_errors_are_one_line():
  for args, needle in [
      (["--config=configs/dense.py:nope"], "unknown model preset 'nope'"),
      (["--config=configs/dense.py:tiny", "--config.model.num_heads=5"], "model.num_heads=5"),
      (["--config=configs/dense.py:tiny", "--config.model.bogus=1"], "'model.bogus'"),
      (["--config=missing.py"], "cannot load --config"),
      (["--config=configs/dense.py:tiny", "--mesh=gpu:8"], "--mesh='gpu:8'"),
  ]:
    out = _scaling("info", *args)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], out.stderr
