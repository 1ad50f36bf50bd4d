"""The critical-batch law (scaling/fit/critical_batch.py): B_crit(L) = B* / L^(1/alpha_B) and
B_crit(D) = k_D D^e_D recovered from fake ladders whose metrics.jsonl carry noise scales drawn
from a known law, `scaling fit --law=critical_batch` end to end, and the batch `scaling plan`
proposes from the fit."""

import json

import numpy as np
import pytest

from scaling.errors import ScalingError
from scaling.fit import critical_batch, published
from tests.helpers import run_cli, run_cli_captured

TRUE = {"B_star": 3e5, "alpha_B": 0.3}  # B_crit(L) = B* / L^(1/alpha_B), tokens
TRUE_D = {"k_D": 2e3, "e_D": 0.4}  # B_crit(D) = k_D D^e_D


def write_ladder(root, *, noise=0.1, seed=0, by="loss", runs=6, evals=8):
  """A ladder workdir: `runs` complete runs (N from 1e4 to 1e6), each with `evals` eval lines
  whose `grad_noise_scale` follows the law in `by` (loss L or tokens D) times log-normal noise
  of `noise`, as a run trained with train.microbatches >= 2 logs them."""
  rng = np.random.default_rng(seed)
  for i, n in enumerate(np.geomspace(1e4, 1e6, runs)):
    run = root / "runs" / f"r{i}"
    run.mkdir(parents=True)
    d_final = 20 * n
    lines = []
    for j, frac in enumerate(np.linspace(1 / evals, 1.0, evals)):
      d = frac * d_final
      loss = 1.5 + 40 / n ** 0.3 + 60 / d ** 0.3
      b = (TRUE["B_star"] / loss ** (1 / TRUE["alpha_B"]) if by == "loss"
           else TRUE_D["k_D"] * d ** TRUE_D["e_D"])
      lines.append({"step": 10 * (j + 1), "loss": loss, "tokens": d, "flops": 6 * n * d,
                    "eval_loss": loss, "grad_noise_scale": b * np.exp(rng.normal(0, noise)),
                    "grad_noise_scale_stderr": 0.1 * b, "grad_noise_scale_steps": 10})
      lines.append({"step": 10 * (j + 1) + 5, "loss": loss, "tokens": d})  # a log-only line
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run / "result.json").write_text(json.dumps({
        "run_id": f"r{i}", "status": "complete", "config": {"model": {"name": "fake"}},
        "params_non_embedding": n, "params_total": n, "params_active": n, "tokens": d_final,
        "flops": 6 * n * d_final, "final_eval_loss": lines[-2]["eval_loss"]}))
  return str(root)


@pytest.mark.slow(seconds=8)
def test_loss_law_is_recovered_with_intervals_through_the_cli(tmp_path, capfd):
  ladder = write_ladder(tmp_path / "ladder")
  out = tmp_path / "fit"
  code, stdout, err = run_cli_captured(capfd, ["fit", ladder, "--law=critical_batch",
                                               "--bootstrap=100", f"--out={out}", "--json"])
  assert code == 0, err
  fit = json.loads(stdout)
  assert fit["law"] == "critical_batch" and fit["n_points"] == 48
  for k, v in TRUE.items():
    lo, hi = fit["intervals"][k]
    assert lo <= v <= hi, (k, fit["params"][k], lo, hi)
    assert fit["params"][k] == pytest.approx(v, rel=0.15), k
  assert "runs (each with all its points)" in fit["info"]["bootstrap"]["resampling"]
  names = {c["name"]: c["ok"] for c in fit["checks"]}
  assert names["runs"] and names["residual_trend"] and "floor" not in names
  assert {r["run_id"] for r in fit["provenance"]["runs"]} == {f"r{i}" for i in range(6)}
  assert (out / "fit.json").exists() and (out / "report.md").exists()

  # scaling plan: the batch at the planned run's predicted loss, and the steps it implies.
  code, stdout, err = run_cli_captured(capfd, ["plan", "--flops=1e20", "--law=hoffmann2022",
                                               f"--critical-batch={out / 'fit.json'}",
                                               "--seq-len=1024", "--json"])
  assert code == 0, err
  plan = json.loads(stdout)
  b = plan["batch"]
  loss = published.get("hoffmann2022").optimal(1e20)["loss"]
  p = fit["params"]
  assert b["batch_tokens"] == pytest.approx(p["B_star"] / loss ** (1 / p["alpha_B"]))
  assert b["batch_sequences"] == max(1, round(b["batch_tokens"] / 1024))
  assert b["steps"] * b["batch_sequences"] * 1024 >= plan["tokens"]
  lo, hi = b["batch_tokens_interval"]
  assert lo < b["batch_tokens"] < hi
  code, stdout, _ = run_cli_captured(capfd, ["plan", "--flops=1e20",
                                             f"--critical-batch={out / 'fit.json'}"])
  assert code == 0 and "batch " in stdout and "steps" in stdout


def test_tokens_law_is_recovered(tmp_path):
  table = critical_batch.points(write_ladder(tmp_path, by="tokens", noise=0.05))
  fit = critical_batch.fit_law(table, "tokens")
  assert fit.law == "critical_batch_d"
  assert fit.params["e_D"] == pytest.approx(TRUE_D["e_D"], abs=0.02)
  assert fit.params["k_D"] == pytest.approx(TRUE_D["k_D"], rel=0.3)
  batch, _ = critical_batch.predict_batch(fit, tokens=1e6)  # inside the points' range of D
  assert batch == pytest.approx(TRUE_D["k_D"] * 1e6 ** TRUE_D["e_D"], rel=0.05)


def test_a_ladder_without_noise_scales_is_one_error_line(tmp_path, capfd):
  ladder = write_ladder(tmp_path / "ladder")
  for m in (tmp_path / "ladder" / "runs").glob("*/metrics.jsonl"):
    m.write_text("".join(json.dumps({k: v for k, v in json.loads(x).items()
                                     if not k.startswith("grad_noise")}) + "\n"
                         for x in m.read_text().splitlines()))
  code, err = run_cli(capfd, ["fit", ladder, "--law=critical_batch", "--bootstrap=0"])
  assert code == 2 and err.count("\n") == 1
  assert err.startswith("error:") and "train.microbatches >= 2" in err
  code, err = run_cli(capfd, ["fit", ladder, "--law=critical_batch", "--x=params"])
  assert code == 2 and "--x='params'" in err
  with pytest.raises(ScalingError, match="needs the planned run's loss"):
    critical_batch.predict_batch(critical_batch.Fit("critical_batch", None, "grid",
                                                    dict(TRUE)), loss=None)
