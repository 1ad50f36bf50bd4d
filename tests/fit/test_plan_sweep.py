"""`scaling plan --sweep=LO:HI [--plot=FILE.png]`: the plan across budgets, with the
extrapolation beyond the fitted runs marked."""

import json

import numpy as np
import pytest

from scaling import cli
from scaling.fit import chinchilla, costs, plan_sweep, provenance
from scaling.fit.core import Fit
from scaling.fit.table import Table

TRUE = {"E": 1.82, "A": 482.0, "B": 2085.0, "alpha": 0.348, "beta": 0.366}


@pytest.fixture
def fit_json(tmp_path):
  """A fit.json with bootstrap samples and the support provenance records for its runs."""
  rng = np.random.default_rng(0)
  n = np.geomspace(1e7, 1e9, 6)
  runs = Table(n, 20 * n, np.full(6, 3.0), {}, [f"r{i}" for i in range(6)])
  samples = {k: v * np.exp(rng.normal(0, 0.02, 100)) for k, v in TRUE.items()}
  fit = chinchilla.add_derived(Fit("chinchilla", 3, "grid", dict(TRUE), n_points=6,
                                   samples=samples,
                                   provenance={"support": provenance.support(runs)}), 1e21)
  path = tmp_path / "fit.json"
  path.write_text(json.dumps(fit.to_json(include_samples=True)))
  return str(path), 6 * runs.params * runs.tokens


def test_sweep_marks_extrapolation_beyond_the_fitted_runs(fit_json, capsys):
  path, c_runs = fit_json
  assert cli.main(["plan", "--sweep=1e14:1e24:11", f"--law={path}", "--hardware=h100",
                   "--devices=64", "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  rows = out["sweep"]
  assert len(rows) == 11 and out["support"]["lo"] == pytest.approx(c_runs.min())
  assert out["support"]["hi"] == pytest.approx(c_runs.max())
  for r in rows:
    inside = c_runs.min() <= r["flops"] <= c_runs.max()
    assert r["extrapolated"] is (not inside)
    lo, hi = r["intervals"]["loss"]
    assert lo < r["loss"] < hi
    c = costs.run_costs(r["flops"], "h100", mfu=0.4, devices=64)
    assert r["cost_usd"] == pytest.approx(c["cost_usd"]) and r["days"] == pytest.approx(
        c["days"])
  assert [r["params"] for r in rows] == sorted(r["params"] for r in rows)
  assert cli.main(["plan", "--sweep=1e14:1e24:11", f"--law={path}"]) == 0
  text = capsys.readouterr().out
  assert "* = extrapolated" in text and text.count("\n  * ") == sum(
      r["extrapolated"] for r in rows)


def test_sweep_plot_is_a_png(fit_json, tmp_path, capsys):
  path, _ = fit_json
  png = tmp_path / "sweep.png"
  assert cli.main(["plan", "--sweep=1e16:1e24", f"--law={path}", "--hardware=a100",
                   f"--plot={png}"]) == 0
  assert f"wrote {png}" in capsys.readouterr().out
  data = png.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
  assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.json", "sweep.png"]


def test_published_support_and_unknown(capsys):
  from scaling.fit import plan

  sup = plan_sweep.law_support(plan.LawSource("besiroglu2024"))
  # Hoffmann et al. 2022's Fig. 4 runs as Besiroglu et al. 2024 digitised them.
  assert 1e18 < sup["lo"] < 2e18 and 1e22 < sup["hi"] < 2e22
  assert plan_sweep.law_support(plan.LawSource("ratio20")) is None
  assert cli.main(["plan", "--sweep=1e18:1e22", "--law=ratio20"]) == 0
  assert "fitted compute range unknown" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["--sweep=1e18"], "--sweep='1e18' must look like LO:HI"),
    (["--sweep=1e20:1e18"], "need 0 < LO < HI"),
    (["--sweep=1e18:1e20:1"], "POINTS=1"),
    (["--sweep=1e18:1e20", "--plot=out.pdf"], "--plot=out.pdf must name a .png"),
    (["--flops=1e21", "--plot=out.png"], "--plot needs --sweep"),
    (["--sweep=1e18:1e20", "--flops=1e21"], "--flops does not combine with --sweep"),
    (["--sweep=1e18:1e20", "--unique-tokens=1e9"], "--unique-tokens does not combine"),
])
def test_sweep_bad_inputs(argv, needle, capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert cli.main(["plan", *argv]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error:") and needle in err and len(err.strip().splitlines()) == 1
  assert list(tmp_path.iterdir()) == []  # nothing written
