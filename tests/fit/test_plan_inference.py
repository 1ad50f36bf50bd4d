"""Inference-aware planning in dollars (Sardana et al. 2024, arXiv:2401.00448): the model that
minimises training plus lifetime inference cost at the Chinchilla-optimal loss."""

import json

import pytest

from scaling import cli
from scaling.fit import laws, plan, published

P = published.get("hoffmann2022").params


def _chinchilla(flops):
  return laws.chinchilla_optimal(P["E"], P["A"], P["B"], P["alpha"], P["beta"], flops)


def test_cost_optimal_trades_size_for_tokens_at_the_same_loss():
  per_flop, per_param_token = 1e-18, 2e-18
  none = plan.cost_optimal(P, 1e23, 0.0, usd_per_train_flop=per_flop,
                           usd_per_param_token=per_param_token)
  # No inference: the cost-optimal model is the Chinchilla-optimal one.
  assert none["cost_optimal"]["params"] == pytest.approx(none["chinchilla"]["params"], rel=2e-3)
  assert none["saving"] == pytest.approx(0, abs=1e-6)
  prev = none["cost_optimal"]["params"]
  for tokens in (1e11, 1e12, 1e13):
    r = plan.cost_optimal(P, 1e23, tokens, usd_per_train_flop=per_flop,
                          usd_per_param_token=per_param_token)
    best, chin = r["cost_optimal"], r["chinchilla"]
    assert best["loss"] == pytest.approx(r["target_loss"], rel=1e-6)  # iso-loss (Sardana Sec. 3)
    assert best["params"] < prev and best["tokens_per_param"] > chin["tokens_per_param"]
    assert best["total_usd"] < chin["total_usd"] and 0 < r["saving"] < 1
    # Training costs more, inference less: the smaller model is trained longer.
    assert best["train_usd"] > chin["train_usd"] and best["inference_usd"] < chin[
        "inference_usd"]
    assert chin["inference_usd"] == pytest.approx(chin["params"] * tokens * per_param_token)
    prev = best["params"]


def test_prices_derived_from_hardware_and_given(capsys):
  opt = _chinchilla(1e23)
  n_opt = float(opt["params"])
  derived = plan.inference_prices(1e23, P, hardware_name="h100", mfu=0.4, price=3.0,
                                  inference_price=None, inference_mfu=0.2)
  # 2 N FLOPs a token at 20% of 989 TFLOP/s, $3 an hour.
  assert derived["usd_per_1m_tokens_at_n_opt"] == pytest.approx(
      1e6 * 2 * n_opt / (989e12 * 0.2) / 3600 * 3.0)
  assert derived["usd_per_train_flop"] == pytest.approx(3.0 / 3600 / (989e12 * 0.4))
  # The slides' $20 and $8 per 1M tokens, read as the price of serving N_opt.
  assert cli.main(["plan", "--flops=1e23", "--hardware=h100", "--inference-tokens=1e12",
                   "--inference-price=20", "--json"]) == 0
  hi = json.loads(capsys.readouterr().out)["inference"]
  assert hi["chinchilla"]["inference_usd"] == pytest.approx(20 * 1e12 / 1e6)
  assert cli.main(["plan", "--flops=1e23", "--hardware=h100", "--inference-tokens=1e12",
                   "--inference-price=8", "--json"]) == 0
  lo = json.loads(capsys.readouterr().out)["inference"]
  # Dearer serving pushes the optimum to a smaller model.
  assert hi["cost_optimal"]["params"] < lo["cost_optimal"]["params"] < n_opt
  assert cli.main(["plan", "--flops=1e23", "--hardware=h100", "--inference-tokens=1e12"]) == 0
  text = capsys.readouterr().out
  assert "Chinchilla-optimal" in text and "cost-optimal" in text and "inference $" in text


def test_inference_price_needs_a_training_price(capsys):
  assert cli.main(["plan", "--flops=1e23", "--inference-tokens=1e12",
                   "--inference-price=20"]) == 2
  assert "--inference-price needs --hardware" in capsys.readouterr().err
  assert cli.main(["plan", "--flops=1e23", "--hardware=h200", "--inference-tokens=1e12",
                   "--inference-price=20"]) == 2
  assert "--inference-price: h200 has no list price" in capsys.readouterr().err
