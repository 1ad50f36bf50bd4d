"""experiments/gpu_check.py at toy size: it parses, runs every case on the CPU, and reports the
figures issue 20 asks for under the keys the GPU run will print."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
  sys.path.insert(0, str(ROOT / "experiments"))  # gpu_check imports its sibling benchmarks
  try:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "experiments/gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  finally:
    sys.path.remove(str(ROOT / "experiments"))
  return module


@pytest.mark.slow(seconds=18)
def test_tiny_run_reports_every_figure(monkeypatch):
  monkeypatch.chdir(ROOT)  # the dense cases name configs/dense.py relative to the checkout
  out = _load().main(["--tiny"])
  json.dumps(out)  # printable as JSON
  assert out["errors"] == [] and out["tiny"] is True
  assert [(r["preset"], r["remat"]) for r in out["dense"]] == [("tiny", "none"),
                                                               ("tiny", "dots_saveable")]
  for r in out["dense"]:
    assert r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 and r["loss"] > 0
  (m,) = out["moe"]
  for key in ("pallas_over_ragged_dot", "routing_share", "pallas_frac_of_dense",
              "sort_frac_of_dense", "pallas_max_abs_err_y"):
    assert m[key] >= 0, key
  assert 0 < m["routing_share"] and m["pallas_max_abs_err_y"] < 1e-2
