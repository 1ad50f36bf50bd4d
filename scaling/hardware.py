"""Accelerators: peak FLOP/s (for MFU and time), memory, board power and an hourly price.

Every number carries its source in `DEVICES`; `scaling plan --help` prints them too.

- Peak: vendor datasheet dense (no sparsity) bf16 peak (fp16 for the V100, which has no bf16).
  MFU in this project is quoted against these numbers (e.g. H100 SXM: 989 TFLOP/s).
- Board power: the datasheet's maximum (TDP) per device, the default energy draw of
  `scaling plan` (`--watts`). Google publishes no per-chip board power for Cloud TPUs, so
  TPUs have none and energy needs `--watts`.
- Price: an on-demand list price per device-hour, the default of `--price`. Prices move and
  differ by provider, region and commitment; pass `--price` for a real quote.
"""

from __future__ import annotations

import dataclasses

from scaling.errors import ScalingError


@dataclasses.dataclass(frozen=True)
class Device:
  """One accelerator. Units: FLOP/s, bytes, watts, USD per device-hour; None when unknown."""
  peak_flops: float
  memory_bytes: float
  peak_source: str
  watts: float | None = None
  watts_source: str = "no published board power: give --watts"
  price_usd_per_hour: float | None = None
  price_source: str = "no list price on record: give --price"


_AWS = "AWS EC2 on-demand list price, us-east-1"
_GCP = "Google Cloud TPU pricing page, on-demand per chip-hour"
DEVICES: dict[str, Device] = {
    "v100": Device(
        125e12, 32e9, "NVIDIA V100 SXM2 datasheet, FP16 tensor-core peak (no bf16 on Volta)",
        300.0, "NVIDIA V100 SXM2 datasheet, max power 300 W",
        1.50, "Lambda, 'OpenAI's GPT-3 language model: a technical overview' (2020): $1.50 per "
        "V100-hour, the lowest cloud price then, behind its $4.6M GPT-3 estimate"),
    "a100_40gb": Device(
        312e12, 40e9, "NVIDIA A100 SXM4 40GB datasheet, dense BF16",
        400.0, "NVIDIA A100 SXM4 datasheet, max TDP 400 W",
        4.10, f"{_AWS}: p4d.24xlarge $32.77/h for 8 A100-40GB"),
    "a100": Device(
        312e12, 80e9, "NVIDIA A100 SXM4 80GB datasheet, dense BF16",
        400.0, "NVIDIA A100 SXM4 datasheet, max TDP 400 W",
        5.12, f"{_AWS}: p4de.24xlarge $40.97/h for 8 A100-80GB"),
    "h100": Device(
        989e12, 80e9, "NVIDIA H100 SXM datasheet, dense BF16",
        700.0, "NVIDIA H100 SXM datasheet, max TDP 700 W",
        12.29, f"{_AWS} (2023): p5.48xlarge $98.32/h for 8 H100"),
    "h200": Device(
        989e12, 141e9, "NVIDIA H200 SXM datasheet, dense BF16",
        700.0, "NVIDIA H200 SXM datasheet, max TDP up to 700 W"),
    "v4": Device(275e12, 32e9, "Cloud TPU v4 documentation, per chip",
                 price_usd_per_hour=3.22, price_source=f"{_GCP} (v4, us-central2)"),
    "v5e": Device(197e12, 16e9, "Cloud TPU v5e documentation, per chip",
                  price_usd_per_hour=1.20, price_source=f"{_GCP} (v5e)"),
    "v5p": Device(459e12, 95e9, "Cloud TPU v5p documentation, per chip",
                  price_usd_per_hour=4.20, price_source=f"{_GCP} (v5p)"),
    "v6e": Device(918e12, 32e9, "Cloud TPU v6e (Trillium) documentation, per chip",
                  price_usd_per_hour=2.70, price_source=f"{_GCP} (v6e)"),
    # No meaningful peak exists for a CPU; this nominal value keeps MFU defined on laptops.
    "cpu": Device(1e11, 16e9, "nominal, for CPU smoke runs only"),
}
ALIASES = {"a100_80gb": "a100", "a10040gb": "a100_40gb", "a100_40g": "a100_40gb"}

# name -> (peak bf16 FLOP/s per device, memory bytes per device, source); kept for callers
# that read peaks only.
PEAKS: dict[str, tuple[float, float, str]] = {
    name: (d.peak_flops, d.memory_bytes, d.peak_source) for name, d in DEVICES.items()}


def device(name: str) -> Device:
  """The `Device` named `name` (case, `-` and `_` ignored; see `DEVICES` and `ALIASES`)."""
  def norm(s: str) -> str:
    return s.lower().replace("-", "").replace("_", "")

  key = norm(name)
  table = {norm(k): k for k in DEVICES} | {norm(a): k for a, k in ALIASES.items()}
  if key not in table:
    raise ScalingError(
        f"unknown hardware {name!r}: choose one of {', '.join(sorted(DEVICES))}")
  return DEVICES[table[key]]


def canonical(name: str) -> str:
  """The `DEVICES` key of `name` (`A100-40GB` -> `a100_40gb`)."""
  d = device(name)
  return next(k for k, v in DEVICES.items() if v is d)


def peak_flops(name: str) -> float:
  """Peak dense bf16 FLOP/s of one device named `name` (see `DEVICES`)."""
  return device(name).peak_flops


def memory_bytes(name: str) -> float:
  """Memory of one device named `name`, in bytes."""
  return device(name).memory_bytes


def detect(device=None) -> str:
  """Best-effort name in `DEVICES` for a jax device (defaults to the first device)."""
  import jax

  device = device or jax.devices()[0]
  kind = getattr(device, "device_kind", "").lower()
  for name in ("h200", "h100", "v100"):
    if name in kind:
      return name
  if "a100" in kind:
    return "a100_40gb" if "40gb" in kind.replace(" ", "").replace("-", "") else "a100"
  for name, tag in (("v6e", "v6"), ("v5p", "v5p"), ("v5e", "v5"), ("v4", "v4")):
    if tag in kind:
      return name
  return "cpu"
