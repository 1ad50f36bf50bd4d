"""Data-constrained allocation (Muennighoff et al. 2023, arXiv:2305.16264, Eq. 5-6)."""

import json

import numpy as np
import pytest

from scaling import cli
from scaling.errors import ScalingError
from scaling.fit import data_constrained as dc
from scaling.fit import published


def test_four_epochs_are_worth_nearly_fresh_data_and_forty_far_less():
  unique = 1e10
  value = {e: float(dc.effective_tokens(e * unique, unique) / (e * unique))
           for e in (1, 4, 16, 40)}
  # Sec. 6: up to 4 epochs are as good as unique data (Eq. 5 with R*_D = 15.4 gives 93%).
  assert value[1] == 1.0 and value[4] >= 0.9
  assert value[40] < 0.4 < value[16] < value[4]
  # Sec. 3.1: no amount of repetition is worth more than U (1 + R*_D) fresh tokens.
  assert float(dc.effective_tokens(1e6 * unique, unique)) <= unique * (1 + dc.R_D_STAR)
  # Excess parameters decay faster (R*_N = 5.3 < R*_D): N' < N beyond U_N.
  p = dc.MUENNIGHOFF_BASE
  u_n = float(dc.unique_params(p, unique))
  assert float(dc.effective_params(p, u_n, 1e12, unique)) == pytest.approx(u_n)
  assert float(dc.effective_params(p, 10 * u_n, 1e12, unique)) < 10 * u_n


def test_best_allocation_at_9e21_flops_and_25b_unique_tokens():
  # Sec. 5: at 9.3e21 FLOPs with 25B unique tokens, the data-constrained frontier's model has
  # 27% fewer parameters than the Chinchilla-suggested 8.7B (trained on 178B tokens).
  out = dc.plan(dc.MUENNIGHOFF_BASE, 9.3e21, 25e9)
  chin, best = out["chinchilla"], out["best"]
  assert chin["params"] == pytest.approx(8.7e9, rel=0.05)
  assert chin["tokens"] == pytest.approx(178e9, rel=0.05)
  assert -0.35 < best["params"] / chin["params"] - 1 < -0.15
  assert best["epochs"] > chin["epochs"] > 1 and best["loss"] <= chin["loss"]
  rows = {r["epochs"]: r for r in out["epochs"]}
  assert rows[1]["penalty"] == pytest.approx(0, abs=1e-12)  # one epoch: nothing repeats
  losses = np.array([r["loss"] for r in out["epochs"]])
  assert best["loss"] <= losses.min() + 1e-9  # the optimum beats every row of the table
  with pytest.raises(ScalingError, match="--unique-tokens=2e\\+11 is not fewer"):
    dc.plan(dc.MUENNIGHOFF_BASE, 9.3e21, 2e11)


def test_cli_unique_tokens(capsys):
  assert cli.main(["plan", "--flops=1e23", "--unique-tokens=3e11", "--json"]) == 0
  d = json.loads(capsys.readouterr().out)["data_constrained"]
  assert d["unique_tokens"] == 3e11 and d["R_D_star"] == pytest.approx(15.4, abs=0.05)
  assert d["R_N_star"] == pytest.approx(5.3, abs=0.05)
  p = published.get("hoffmann2022").params
  assert d["best"]["loss"] == pytest.approx(float(dc.loss(p, d["best"]["params"],
                                                          d["best"]["tokens"], 3e11)))
  assert cli.main(["plan", "--params=1e10", "--tokens=1e12", "--unique-tokens=1e11"]) == 0
  text = capsys.readouterr().out
  assert "this run: 10 epochs" in text and "penalty" in text
  for argv, needle in ((["--flops=1e23", "--unique-tokens=1e13"], "--unique-tokens=1e+13"),
                       (["--params=1e10", "--tokens=1e11", "--unique-tokens=2e11"],
                        "--tokens=1e+11"),
                       (["--flops=1e23", "--unique-tokens=1e11", "--law=ratio20"],
                        "--unique-tokens needs a law with a loss surface")):
    assert cli.main(["plan", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err and len(err.strip().splitlines()) == 1
