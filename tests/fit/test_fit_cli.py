"""CLI entry points in-process, table errors, plots and the emergence demo."""

import json
import os

import numpy as np
import pytest

from scaling import cli
from scaling.commands import fit as fit_cli
from scaling.errors import ScalingError
from scaling.fit import emergence, plots
from scaling.fit import table as table_lib
from scaling.fit.core import Fit
from tests.helpers import ROOT

pytestmark = pytest.mark.xla_optimized  # batched L-BFGS fits: run-bound (tests/conftest.py)

EPOCH = os.path.join(os.path.dirname(table_lib.__file__), "..", "reference_data",
                     "epoch_chinchilla_svg_extracted_data.csv")
ISO = os.path.join(os.path.dirname(EPOCH), "openathena_isoflops_extract.csv")


def _write(path, text):
  path.write_text(text)
  return str(path)


@pytest.mark.slow
def test_fit_main_json_approach3(tmp_path, capsys):
  rc = fit_cli.fit_main([EPOCH, "--columns", "params=Model Size,flops=Training FLOP",
                         "--drop-highest-loss=5", "--bootstrap=20", "--json",
                         f"--out={tmp_path}"])
  assert rc == 0
  obj = json.loads(capsys.readouterr().out)
  assert obj["law"] == "chinchilla" and obj["approach"] == 3 and obj["n_points"] == 240
  assert set(obj["params"]) == {"E", "A", "B", "alpha", "beta"}
  assert set(obj["params"]) <= set(obj["intervals"])
  assert obj["params"]["E"] == pytest.approx(1.817, abs=0.005)
  assert 0.45 < obj["a"] < 0.55 and 0.45 < obj["b"] < 0.55
  for name in ("fit.json", "report.md", "plots/frontier.png", "plots/frontier.pdf",
               "plots/residuals.png", "plots/optimal_allocation.png"):
    assert os.path.getsize(tmp_path / name) > 1000 or name == "report.md", name
  assert "| E |" in (tmp_path / "report.md").read_text()
  # plan from the written fit: interval on N_opt from the stored bootstrap samples.
  rc = fit_cli.plan_main(["--flops=5.76e23", f"--law={tmp_path / 'fit.json'}", "--json"])
  plan = json.loads(capsys.readouterr().out)
  assert rc == 0
  lo, hi = plan["intervals"]["params"]
  assert lo < plan["params"] < hi and 3e10 < plan["params"] < 1.5e11


def test_fit_main_approach2_with_filter(tmp_path, capsys):
  rc = fit_cli.fit_main([ISO, "--approach=2", "--filter",
                         "experiment=ml_scalefit__massivetext__chinchilla", "--bootstrap=50",
                         "--json", f"--out={tmp_path}"])
  assert rc == 0
  obj = json.loads(capsys.readouterr().out)
  assert obj["approach"] == 2 and abs(obj["params"]["a"] - 0.5) < 0.03
  assert os.path.getsize(tmp_path / "plots" / "isoflops.png") > 1000


def test_plan_ratio20_and_hardware(capsys):
  assert cli.main(["plan", "--flops=1e23", "--law=ratio20", "--json"]) == 0
  obj = json.loads(capsys.readouterr().out)
  assert obj["params"] == pytest.approx(2.887e10, rel=1e-3)
  assert obj["tokens"] == pytest.approx(5.774e11, rel=1e-3)
  assert obj["loss"] is None
  assert cli.main(["plan", "--gpu-hours=1000", "--hardware=h100", "--mfu=0.4", "--json",
                   "--inference-tokens=1e12", f"--config={ROOT}/configs/dense.py:llama2_7b",
                   "--mesh=data:8"]) == 0
  obj = json.loads(capsys.readouterr().out)
  assert obj["flops"] == pytest.approx(1000 * 3600 * 989e12 * 0.4)
  assert obj["time"]["device_hours"] == pytest.approx(1000)
  assert obj["overtrain"]["params"] < obj["params"]  # smaller model, trained longer
  assert 0 < obj["overtrain"]["saving"] < 1
  # From scaling.accounting: 16 bytes/param of weights, grads and Adam state (ZeRO), no FSDP
  # by default so nothing shrinks over data:8, plus activations.
  assert obj["memory"]["breakdown_bytes"]["params"] == 4 * 6_738_415_616
  assert obj["memory"]["memory_per_device_bytes"] > 16 * 6_738_415_616
  assert cli.main(["plan", "--flops=1e21", "--law=ratio20", "--config=missing.py:x"]) == 2


def test_workdir_reader(tmp_path):
  for i, (n, status) in enumerate([(1e6, "complete"), (2e6, "complete"), (4e6, "failed")]):
    run = tmp_path / "runs" / f"r{i}"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({
        "run_id": f"r{i}", "params_non_embedding": n, "params_total": n * 1.2,
        "params_active": n, "tokens": 20 * n, "flops": 120 * n * n, "flops_method": "6N",
        "final_eval_loss": 3.0 - i * 0.1, "best_eval_loss": 2.9, "status": status,
        # As `scaling ladder run` writes it: labels in the run's config, r0 outside IsoFLOP.
        "config": {"ladder": {"budget": 1e15} if i else {},
                   "model": {"moe": {"num_experts": 8}}}}))
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(
        {"step": s, "tokens": s * 1e5, "flops": 6 * n * s * 1e5, "loss": 5.0 / (1 + s)})
        for s in range(1, 6)))
  t = table_lib.load_table(str(tmp_path))
  assert len(t) == 2 and t.run_id == ["r0", "r1"]
  np.testing.assert_allclose(t.loss, [3.0, 2.9])
  np.testing.assert_array_equal(t.get("experts"), [8, 8])
  budget = t.get("budget")
  assert np.isnan(budget[0]) and budget[1] == 1e15  # a mixed grid + IsoFLOP ladder loads
  curves = table_lib.load_curves(str(tmp_path))
  assert len(curves) == 2 and curves[1].params == 2e6


@pytest.mark.parametrize("text,needle", [
    ("params,tokens\n1,2\n", "column 'loss' is missing"),
    ("params,tokens,loss\n1e6,2e7,3.0\n1e6,-5,3.0\n", "row 2 (line 3): column 'tokens'"),
    ("params,tokens,loss\n1e6,2e7,nan\n", "row 1 (line 2): column 'loss'"),
    ("params,tokens,loss\n1e6,2e7,\n", "column 'loss' is empty"),
    ("params,tokens,loss\n1e6,2e7,abc\n", "not a number"),
])
def test_bad_tables_name_column_and_row(tmp_path, text, needle):
  path = _write(tmp_path / "t.csv", text)
  with pytest.raises(ScalingError) as e:
    table_lib.load_table(path)
  assert needle in str(e.value)


def test_single_budget_approach2_and_unknown_law(tmp_path, capsys):
  rows = ["params,tokens,loss,budget"] + [
      f"{n},{1e19 / (6 * n)},{3 + (np.log(n) - 20) ** 2 / 50},1e19"
      for n in np.geomspace(1e8, 1e9, 5)]
  path = _write(tmp_path / "one.csv", "\n".join(rows))
  assert cli.main(["fit", path, "--approach=2", "--bootstrap=0"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error:") and "two or more budgets" in err and "1e+19" in err
  assert cli.main(["fit", path, "--law=nope"]) == 2
  assert "unknown --law='nope'" in capsys.readouterr().err
  assert cli.main(["plan", "--flops=1e21", "--law=nope"]) == 2
  assert cli.main(["fit", path, "--columns", "params=Size"]) == 2
  assert "'Size', which is not a column" in capsys.readouterr().err


def test_emergence_demo_metric_artifact(tmp_path):
  demo = emergence.synthetic_demo(ks=(1, 4, 8))
  p = demo["token_accuracy"]
  assert np.all(np.diff(p) > 0)  # per-token accuracy rises smoothly and monotonically
  for k in (1, 4, 8):
    assert np.all(np.diff(demo["exact_match"][k]) >= 0)
    assert np.all(np.diff(demo["log_likelihood"][k]) > 0)
  s = demo["sharpness"]
  assert s[1] < s[4] < s[8]  # exact match looks more sudden as K grows
  # Exact match stays near zero over the small half of the ladder for K = 8.
  assert demo["exact_match"][8][:4].max() < 0.01 < demo["token_accuracy"][:4].max()
  m = emergence.metrics(np.stack([np.full((3, 4), v) for v in (0.5, 0.9)]))
  np.testing.assert_allclose(m["exact_match"], [0.5 ** 4, 0.9 ** 4])
  paths = emergence.plot_demo(str(tmp_path / "emergence"))
  assert all(os.path.getsize(q) > 1000 for q in paths)


def test_moe_plot_and_fit_json_roundtrip(tmp_path):
  from scaling.fit import core
  n = np.repeat([1e7, 1e8], 4)
  e = np.tile([1.0, 2, 4, 8], 2)
  loss = np.exp(-0.08 * np.log(n / 1e8) - 0.1 * np.log(e) + 1.2)
  t = table_lib.Table(n, np.full(8, 1e10), loss, {"experts": e, "params_active": n},
                      [str(i) for i in range(8)])
  f = core.fit_law(t, "clark")
  paths = plots.moe_experts(t, f, str(tmp_path / "moe"))
  assert all(os.path.getsize(q) > 1000 for q in paths)
  back = Fit.from_json(json.loads(json.dumps(f.to_json(include_samples=True))))
  assert back.params == pytest.approx(f.params)
