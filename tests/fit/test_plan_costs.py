"""`scaling plan` costs: device-hours, days, dollars, energy and CO2, recomputed for GPT-3 from
the inputs its published estimates state."""

import json

import pytest

from scaling import cli, hardware
from scaling.fit import costs

# Brown et al. 2020 (arXiv:2005.14165), Sec. 2.1-2.2: GPT-3 has 175B parameters and was trained
# on 300B tokens; C = 6 N D.
N_GPT3, D_GPT3 = 175e9, 300e9
C_GPT3 = 6 * N_GPT3 * D_GPT3


def _plan(capsys, *argv) -> dict:
  assert cli.main(["plan", *argv, "--json"]) == 0
  return json.loads(capsys.readouterr().out)


def test_gpt3_energy_and_co2_from_patterson_table4(capsys):
  # Patterson et al. 2021 (arXiv:2104.10350), Table 4, GPT-3: 10,000 V100s for 14.8 days at an
  # average 330 W per processor, PUE 1.1, 0.429 kg CO2e/kWh; they report 1,287 MWh and 552 t.
  obj = _plan(capsys, f"--params={N_GPT3}", f"--tokens={D_GPT3}", "--hardware=v100",
              "--devices=10000", "--days=14.8", "--watts=330", "--pue=1.1", "--carbon=0.429")
  assert obj["flops"] == pytest.approx(C_GPT3)
  assert obj["device_hours"] == pytest.approx(10_000 * 14.8 * 24)
  assert obj["days"] == pytest.approx(14.8)
  assert obj["energy_mwh"] == pytest.approx(1287, rel=0.05)
  assert obj["co2_t"] == pytest.approx(552, rel=0.05)
  # The MFU 14.8 days imply against the V100's 125 TFLOP/s: C / (K t peak).
  assert obj["mfu"] == pytest.approx(C_GPT3 / (10_000 * 14.8 * 86400 * 125e12))
  assert obj["mfu_source"] == "implied by --days=14.8 on 10000 devices"
  assert obj["assumptions"]["watts_per_device"]["source"] == "--watts"
  assert obj["run"]["params"] == N_GPT3 and obj["run"]["loss"] > obj["loss"]


def test_gpt3_cost_from_lambda_estimate():
  # Lambda (2020): 3.14e23 FLOPs at 28 TFLOP/s per V100 is 355 GPU-years, $4.6M at $1.50 per
  # V100-hour; 28 TFLOP/s is an MFU of 28 / 125 against the datasheet peak.
  mfu = 28e12 / hardware.peak_flops("v100")
  c = costs.run_costs(C_GPT3, "v100", mfu=mfu, price=1.50)
  assert c["cost_usd"] == pytest.approx(4.6e6, rel=0.05)
  assert c["device_hours"] / (24 * 365.25) == pytest.approx(355, rel=0.05)
  # The default V100 price is that same $1.50, with its source.
  d = costs.run_costs(C_GPT3, "v100", mfu=mfu)
  assert d["cost_usd"] == c["cost_usd"] and "Lambda" in d["assumptions"][
      "price_usd_per_device_hour"]["source"]


def test_slides_34_days_imply_narayanan_throughput():
  # Narayanan et al. 2021 (arXiv:2104.04473), Sec. 5.1: GPT-3 would take 34 days on 1,024
  # A100s at 140 TFLOP/s per GPU, counting 8 N D FLOPs (activation recomputation). In this
  # project's 6 N D the same run is an MFU of (6/8) x 140 / 312.
  mfu = costs.implied_mfu(C_GPT3, "a100", 1024 * 34 * 24)
  assert mfu == pytest.approx(6 / 8 * 140 / 312, rel=0.01)
  with pytest.raises(Exception, match="MFU .* > 1"):
    costs.implied_mfu(C_GPT3, "a100", 1.0)


def test_defaults_carry_their_sources_and_unknowns_say_so(capsys):
  c = costs.run_costs(1e21, "h100", mfu=0.5, devices=8)
  a = c["assumptions"]
  assert c["days"] == pytest.approx(1e21 / (989e12 * 0.5) / 3600 / 8 / 24)
  assert c["energy_mwh"] == pytest.approx(c["device_hours"] * 700 * 1.1 / 1e6)
  assert c["co2_t"] == pytest.approx(c["energy_mwh"] * costs.DEFAULT_CARBON)
  assert "datasheet" in a["watts_per_device"]["source"] and "IEA" in a[
      "carbon_kg_per_kwh"]["source"] and "Patterson" in a["pue"]["source"]
  tpu = costs.run_costs(1e21, "v5e", mfu=0.5)  # no published board power for TPUs
  assert tpu["energy_mwh"] is None and "--watts" in tpu["assumptions"]["watts_per_device"][
      "source"]
  assert hardware.canonical("A100-40GB") == "a100_40gb"
  assert hardware.peak_flops("v100") == 125e12 and hardware.device("a100_40gb").memory_bytes \
      == 40e9
  assert cli.main(["plan", "--help"]) == 0
  text = capsys.readouterr().out
  for needle in ("--price", "--watts", "--pue", "--carbon", "Lambda", "IEA", "Patterson",
                 "v100: 125 TFLOP/s"):
    assert needle in text
  out = _plan(capsys, "--gpu-hours=1000", "--hardware=a100", "--devices=4", "--price=2")
  assert out["cost_usd"] == pytest.approx(2000) and out["days"] == pytest.approx(1000 / 4 / 24)


@pytest.mark.parametrize("argv,flag", [
    (["--devices=0"], "--devices=0"),
    (["--devices=-2"], "--devices=-2"),
    (["--price=0"], "--price=0"),
    (["--price=-1.5"], "--price=-1.5"),
    (["--watts=0"], "--watts=0"),
    (["--pue=0"], "--pue=0"),
    (["--pue=0.95"], "--pue=0.95"),
    (["--carbon=-0.1"], "--carbon=-0.1"),
    (["--days=2"], "--days needs --hardware"),
    (["--hardware=h100", "--days=1e-6", "--devices=2"], "--days=1e-06 on 2 devices"),
    (["--hardware=h100", "--days=3", "--mfu=0.3"], "--mfu with both"),
    (["--params=1e9"], "--params and --tokens"),
    (["--hardware=h100", "--gpu-hours=5", "--days=1"], "--gpu-hours=H or --days"),
])
def test_bad_cost_inputs_are_one_error_line_naming_the_flag(argv, flag, capsys):
  assert cli.main(["plan", "--flops=1e21", *argv]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error:") and flag in err and len(err.strip().splitlines()) == 1
