"""What a training run costs: device-hours, wall-clock days, dollars, energy and CO2.

Energy follows Patterson et al. 2021 ('Carbon emissions and large neural network training',
arXiv:2104.10350, Sec. 2 and Table 4): energy = device-hours x average power per device x PUE,
and CO2e = energy x the carbon intensity of the grid that supplies it. Their GPT-3 row
(10,000 V100s for 14.8 days at 330 W average per processor, PUE 1.1, 0.429 kg CO2e/kWh) gives
1,287 MWh and 552 t; tests/fit/test_plan_costs.py recomputes it from those inputs.

Units: FLOPs, FLOP/s, hours, days, USD, watts, MWh, tonnes (t) of CO2e, kg CO2e per kWh.
"""

from __future__ import annotations

import numbers

from scaling import hardware
from scaling.errors import ScalingError

# Power usage effectiveness (facility power / IT power): Patterson et al. 2021 use 1.1 for the
# Google and Microsoft cloud datacenters behind their Table 4 (the GPT-3 row included).
DEFAULT_PUE = 1.1
PUE_SOURCE = "Patterson et al. 2021 (arXiv:2104.10350), Table 4: PUE 1.1 of cloud datacenters"
# World-average carbon intensity of electricity generation: IEA, Global Energy & CO2 Status
# Report 2019, 475 g CO2 per kWh (2018).
DEFAULT_CARBON = 0.475
CARBON_SOURCE = "IEA Global Energy & CO2 Status Report 2019: world average 475 g CO2/kWh (2018)"
HOURS_PER_DAY = 24.0


def check_inputs(*, devices: int = 1, price: float | None = None, watts: float | None = None,
                 pue: float | None = None, carbon: float | None = None,
                 days: float | None = None) -> None:
  """One `ScalingError` naming the flag for an impossible value (the CLI's checks, for callers
  of the Python API)."""
  if not isinstance(devices, numbers.Integral) or devices < 1:
    raise ScalingError(f"--devices={devices} must be a whole number >= 1")
  for name, v in (("price", price), ("watts", watts), ("days", days)):
    if v is not None and not v > 0:
      raise ScalingError(f"--{name}={v} must be positive")
  if pue is not None and not pue >= 1:
    raise ScalingError(f"--pue={pue} must be >= 1 (facility power over IT power; 1.1 is a "
                       "modern cloud datacenter)")
  if carbon is not None and not carbon >= 0:
    raise ScalingError(f"--carbon={carbon} must be >= 0 kg CO2 per kWh")


def device_hours(flops: float, hardware_name: str, mfu: float) -> float:
  """Device-hours to run `flops` at `mfu` of the datasheet peak: C / (peak x MFU) / 3600."""
  return flops / (hardware.peak_flops(hardware_name) * mfu) / 3600.0


def implied_mfu(flops: float, hardware_name: str, device_hours_spent: float,
                what: str = "the time given") -> float:
  """The MFU at which `flops` take `device_hours_spent` device-hours (K devices x wall hours):
  C / (device-hours x 3600 x peak). Raises when it would exceed 1 (faster than the peak);
  `what` names the flags for that message (e.g. `--days=14.8 on 10000 devices`)."""
  mfu = flops / (device_hours_spent * 3600.0 * hardware.peak_flops(hardware_name))
  if mfu > 1:
    raise ScalingError(
        f"{what} would need MFU {mfu:.3g} > 1 on {hardware.canonical(hardware_name)} for "
        f"{flops:.3g} FLOPs: give more time or devices")
  return mfu


def run_costs(flops: float, hardware_name: str, *, mfu: float, devices: int = 1,
              price: float | None = None, watts: float | None = None,
              pue: float | None = None, carbon: float | None = None) -> dict:
  """Device-hours, days, cost, energy and CO2 of `flops` on `devices` x `hardware_name`.

  Args:
    flops: training FLOPs C.
    hardware_name: a `scaling.hardware.DEVICES` name.
    mfu: model FLOPs utilisation in (0, 1].
    devices: devices training in parallel (K); days = device-hours / K / 24.
    price: USD per device-hour; None takes the hardware's list price (if it has one).
    watts: average power per device; None takes the hardware's board power (if known).
    pue: power usage effectiveness (>= 1); None takes `DEFAULT_PUE`.
    carbon: kg CO2e per kWh; None takes the world average `DEFAULT_CARBON`.

  Returns:
    `device_hours`, `days`, `cost_usd`, `energy_mwh` (device-hours x W x PUE), `co2_t`
    (energy x carbon), with None where no price or power is known, and `assumptions`: each
    input's value and source.
  """
  check_inputs(devices=devices, price=price, watts=watts, pue=pue, carbon=carbon)
  if not 0 < mfu <= 1:
    raise ScalingError(f"--mfu={mfu} must be in (0, 1], e.g. 0.4")
  dev = hardware.device(hardware_name)
  hours = device_hours(flops, hardware_name, mfu)
  price_src = "--price" if price is not None else dev.price_source
  price = dev.price_usd_per_hour if price is None else price
  watts_src = "--watts" if watts is not None else dev.watts_source
  watts = dev.watts if watts is None else watts
  pue_src, pue = ("--pue", pue) if pue is not None else (PUE_SOURCE, DEFAULT_PUE)
  carbon_src, carbon = ("--carbon", carbon) if carbon is not None else (CARBON_SOURCE,
                                                                         DEFAULT_CARBON)
  energy = None if watts is None else hours * watts * pue / 1e6  # Wh -> MWh
  return {
      "hardware": hardware.canonical(hardware_name), "devices": devices, "mfu": mfu,
      "device_hours": hours, "days": hours / devices / HOURS_PER_DAY,
      "cost_usd": None if price is None else hours * price,
      "energy_mwh": energy,
      # MWh x (kg/kWh) = (1000 kWh) x kg/kWh = t.
      "co2_t": None if energy is None else energy * carbon,
      "assumptions": {
          "peak_flops_per_device": {"value": dev.peak_flops, "source": dev.peak_source},
          "price_usd_per_device_hour": {"value": price, "source": price_src},
          "watts_per_device": {"value": watts, "source": watts_src},
          "pue": {"value": pue, "source": pue_src},
          "carbon_kg_per_kwh": {"value": carbon, "source": carbon_src}},
      "formula": "energy = device-hours x W x PUE; CO2 = energy x kg/kWh (Patterson et al. "
                 "2021, Sec. 2, Table 4)",
  }


def table_help() -> str:
  """The defaults and their sources, for `scaling plan --help`."""
  rows = []
  for name, d in hardware.DEVICES.items():
    price = f"${d.price_usd_per_hour:.2f}/h" if d.price_usd_per_hour else "no price"
    watts = f"{d.watts:.0f} W" if d.watts else "no board power"
    rows.append(f"{name}: {d.peak_flops / 1e12:.4g} TFLOP/s, {price} ({d.price_source}), "
                f"{watts}")
  return "; ".join(rows)
