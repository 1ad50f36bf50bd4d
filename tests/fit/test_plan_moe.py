"""MoE plans from Clark and Krajewski fits, and the memory to serve an MoE (every expert
resident)."""

import json
import math

import numpy as np
import pytest

from scaling import accounting, cli
from scaling.fit import moe_plan
from scaling.fit.core import Fit
from scaling.models.shapes import ladder_shape
from tests.helpers import load_config

KRAJEWSKI = {"c": 0.5, "g": 2.0, "gamma": 0.6, "a": 18.0, "alpha": 0.12, "b": 30.0,
             "beta": 0.15}
N0 = math.log(1e8)  # scaling.fit.laws centres Clark's log N here
CLARK = {"a": -0.08, "b": -0.09 - 0.004 * N0, "c": 0.004, "d": 1.5 + 0.08 * N0}


@pytest.fixture
def fits(tmp_path):
  paths = {}
  for law, params in (("krajewski", KRAJEWSKI), ("clark", CLARK)):
    paths[law] = str(tmp_path / f"{law}.json")
    with open(paths[law], "w") as fh:
      json.dump(Fit(law, None, "grid", params).to_json(), fh)
  return paths


def test_mixtral_serving_memory_keeps_every_expert_resident():
  m = load_config("configs/moe.py:mixtral_8x7b").model
  s = moe_plan.serving_memory(m, batch=1, context=32768)
  # Jiang et al. 2024: 46.7B parameters, 12.9B active (exact counts: published_model_shapes).
  assert s["params_total"] == 46_702_792_704 and s["params_active"] == 12_879_925_248
  assert s["weights_bytes"] == 2 * 46_702_792_704
  # K and V, 32 layers x 8 KV heads x 128 wide, bf16, per token of context.
  assert s["kv_cache_bytes"] == 2 * 32 * 8 * 128 * 2 * 32768
  assert moe_plan.serving_memory(m, batch=4, context=32768)["kv_cache_bytes"] == 4 * s[
      "kv_cache_bytes"]


def _shape_counts(plan):
  """Counts of the planned model, rebuilt from its reported shape through accounting."""
  m = load_config("configs/dense.py:tiny").model
  m.update(ladder_shape(plan["shape"]["num_layers"], vocab_size=moe_plan.VOCAB, max_len=4096))
  m.moe.update(dict(num_experts=plan["experts"], top_k=plan["top_k"],
                    expert_d_ff=plan["expert_d_ff"]))
  return accounting.param_counts(m), accounting.flops_per_token(m, moe_plan.SEQ_LEN)


def test_krajewski_plan_reports_counts_from_accounting(fits, capsys):
  assert cli.main(["plan", "--flops=1e21", f"--law={fits['krajewski']}", "--experts=8",
                   "--hardware=h100", "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  m = out["moe"]
  counts, fpt = _shape_counts(m)
  assert m["params_total"] == counts["params_total"] > m["params_active"] == counts[
      "params_active"]
  assert m["flops_per_token"] == fpt["chinchilla"]
  assert m["tokens"] * m["flops_per_token"] == pytest.approx(1e21)
  assert m["experts"] == 8 * m["granularity"] and m["top_k"] == m["granularity"]
  g = m["granularity"]
  n = counts["params_non_embedding"]
  loss = (KRAJEWSKI["c"] + (KRAJEWSKI["g"] / g ** KRAJEWSKI["gamma"] + KRAJEWSKI["a"])
          / n ** KRAJEWSKI["alpha"] + KRAJEWSKI["b"] / m["tokens"] ** KRAJEWSKI["beta"])
  assert m["loss"] == pytest.approx(loss) and out["loss"] == m["loss"]
  assert m["serving"]["weights_bytes"] == 2 * m["params_total"]
  assert out["cost_usd"] > 0 and out["params"] == m["params_active_non_embedding"]
  # The search's choice is no worse than G = 1 at the same budget.
  g1 = moe_plan.plan("krajewski", KRAJEWSKI, 1e21, experts=8, granularity=1)
  assert g1["granularity"] == 1 and m["loss"] <= g1["loss"]


def test_clark_plan_follows_the_token_ratio(fits, capsys):
  assert cli.main(["plan", "--flops=1e20", f"--law={fits['clark']}", "--experts=8",
                   "--tokens-per-param=20"]) == 0
  text = capsys.readouterr().out
  assert "8 experts" in text and "all " in text and "resident" in text
  m = moe_plan.plan("clark", CLARK, 1e20, experts=8)
  ratio = m["tokens"] / m["params_active"]
  assert 14 < ratio < 28  # one depth step either side of 20
  ln_n, ln_e = np.log(m["params_active"]), np.log(8)
  assert m["loss"] == pytest.approx(np.exp(CLARK["a"] * ln_n + CLARK["b"] * ln_e
                                           + CLARK["c"] * ln_n * ln_e + CLARK["d"]))


@pytest.mark.parametrize("law,argv,needle", [
    ("hoffmann2022", ["--experts=8"], "--experts plans an MoE"),
    ("ratio20", ["--granularity=4"], "--granularity plans an MoE"),
    ("clark", ["--granularity=4"], "--granularity=4: the Clark law has no granularity"),
    ("krajewski", ["--unique-tokens=1e9"], "--unique-tokens is planned on a dense law"),
    ("krajewski", ["--inference-tokens=1e9"], "--inference-tokens is planned on a dense law"),
])
def test_moe_bad_inputs(fits, law, argv, needle, capsys):
  spec = fits.get(law, law)
  assert cli.main(["plan", "--flops=1e21", f"--law={spec}", *argv]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error:") and needle in err and len(err.strip().splitlines()) == 1
