"""Two-stage task prediction (Bhagia et al. 2024) recovers a known chain on a synthetic ladder:
(N, D) -> task loss by a Chinchilla law, task loss -> exact match by a sigmoid, held-out larger
rungs predicted inside their bootstrap intervals; the noise floor of the last checkpoints."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from scaling.fit import laws, two_stage
from scaling.fit.emergence import Point
from tests.helpers import run_cli_captured

LAW = dict(E=0.5, A=200.0, alpha=0.4, B=400.0, beta=0.35)
SIG = (0.9, -5.0, 1.0, 0.02)  # a, k, L0, b: exact match falls from 0.92 to 0.02 as loss rises


@pytest.fixture(autouse=True)
def small_grid(monkeypatch):
  """Every 100th of Hoffmann's 4,500 starts: one L-BFGS stage instead of three, compiled once
  for both tests. (The landscape is flat here: the full grid ends at Huber objective 9.8e-5,
  this one at 1.04e-4, both within the tolerances below.)"""
  spec = laws.LAWS["chinchilla"]
  monkeypatch.setitem(laws.LAWS, "chinchilla", dataclasses.replace(spec, grid=spec.grid[::100]))


def _loss(n, d):
  return LAW["E"] + LAW["A"] / n ** LAW["alpha"] + LAW["B"] / d ** LAW["beta"]


def _ladder(seed: int = 0) -> list[Point]:
  """5 sizes x 3 token ratios fitted (final task loss 0.93 to 3.1), 2 larger rungs held out
  (0.85, 0.78: on the sigmoid's slope); 4 checkpoints per run (D/4 .. D, losses on the law),
  1% multiplicative loss noise, 0.01 score noise."""
  rng = np.random.default_rng(seed)
  runs = [(n, r, False) for n in np.geomspace(1e6, 3e7, 5) for r in (5, 20, 60)]
  runs += [(1e8, 20, True), (2e8, 20, True)]
  out = []
  for i, (n, r, held) in enumerate(runs):
    for j, frac in enumerate((0.25, 0.5, 0.75, 1.0)):
      d = r * n * frac
      loss = _loss(n, d) * np.exp(rng.normal(0, 0.01))
      score = float(np.clip(two_stage.sigmoid(loss, *SIG) + rng.normal(0, 0.01), 0, 1))
      out.append(Point(f"run{i:02d}", 10 * (j + 1), j == 3, n, d, 6 * n * d, held,
                       {"recall/nll": loss, "recall/exact_match": score}))
  return out


@pytest.mark.slow(seconds=8)
def test_two_stage_recovers_a_known_chain():
  points = _ladder()
  out = two_stage.chain(points, "recall", bootstrap=50, seed=0)
  p = out["fit1"].params
  assert p["alpha"] == pytest.approx(LAW["alpha"], abs=0.08)
  assert p["beta"] == pytest.approx(LAW["beta"], abs=0.05)
  assert p["E"] == pytest.approx(LAW["E"], rel=0.15)
  s = out["stage2"]
  for name, true in zip(two_stage.SIGMOID, SIG, strict=True):
    assert s[name] == pytest.approx(true, rel=0.05, abs=0.01), name
  assert out["stage2_points"] == 60  # every checkpoint of the 15 fitted runs
  held = out["validation"]
  assert [e["run_id"] for e in held] == ["run15", "run16"]
  for e in held:
    true_loss = _loss(e["params"], e["tokens"])
    assert e["predicted_loss"] == pytest.approx(true_loss, rel=0.02)
    assert abs(e["abs_error"]) < 0.03  # exact match of the held-out rungs, chained
    assert e["inside"] and e["interval"][0] < e["predicted"] < e["interval"][1]
    assert 0.3 < e["score"] < 0.8  # on the sigmoid's slope, not on a plateau


def test_noise_floor_is_the_spread_of_the_last_checkpoints():
  points = _ladder(seed=1)
  floor = two_stage.noise_floor(points, "recall/exact_match", 2)
  per = {rid: float(np.std([p.values["recall/exact_match"] for p in points
                            if p.run_id == rid][-2:], ddof=1))
         for rid in dict.fromkeys(p.run_id for p in points)}
  assert floor["per_run"] == pytest.approx(per) and len(per) == 17
  assert floor["mean_std"] == pytest.approx(np.mean(list(per.values())))


def test_two_stage_cli_on_a_results_table(tmp_path, capfd):
  points = _ladder(seed=1)
  # A results table (final checkpoints, task/metric columns, holdout) fits from the CLI.
  table = tmp_path / "results.jsonl"
  table.write_text("".join(json.dumps({
      "run_id": p.run_id, "params": p.params, "tokens": p.tokens, "loss": p.values[
          "recall/nll"], "flops": p.flops, "holdout": int(p.holdout), **p.values}) + "\n"
      for p in points if p.final))
  out = tmp_path / "fit"
  code, stdout, err = run_cli_captured(capfd, [
      "fit", str(table), "--law=two_stage", "--task=recall", "--bootstrap=0",
      f"--out={out}"])
  assert code == 0, err
  fit = json.loads((out / "fit.json").read_text())
  assert fit["law"] == "two_stage" and set(two_stage.SIGMOID) <= set(fit["params"])
  assert [e["run_id"] for e in fit["validation"]] == ["run15", "run16"]
  assert all(abs(e["abs_error"]) < 0.08 for e in fit["validation"])
  # The held-out rungs' task losses lie below every fitted one: stage 2 extrapolates, and the
  # fit says so.
  check = next(c for c in fit["checks"] if c["name"] == "stage2_range")
  assert not check["ok"] and "run15, run16" in check["detail"]
  assert "warning: stage2_range" in err
  assert fit["provenance"]["runs"][0]["role"] == "fit"
  assert "sigmoid_L0" in stdout
  text = (out / "report.md").read_text()
  assert "Held-out runs: predicted against observed" in text and "Noise floor" in text
  assert (out / "plots" / "two_stage.png").exists()
