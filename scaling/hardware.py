"""Peak dense bf16 FLOP/s per device, used for MFU and for time estimates.

Values are vendor datasheet dense (no sparsity) peaks. MFU in this project is quoted against
these numbers (e.g. H100 SXM: 989 TFLOP/s, NVIDIA H100 datasheet).
"""

from __future__ import annotations

from scaling.errors import ScalingError

# name -> (peak bf16 FLOP/s per device, memory bytes per device, source)
PEAKS: dict[str, tuple[float, float, str]] = {
    "h100": (989e12, 80e9, "NVIDIA H100 SXM datasheet, dense BF16"),
    "h200": (989e12, 141e9, "NVIDIA H200 SXM datasheet, dense BF16"),
    "a100": (312e12, 80e9, "NVIDIA A100 datasheet, dense BF16"),
    "v4": (275e12, 32e9, "Cloud TPU v4 documentation, per chip"),
    "v5e": (197e12, 16e9, "Cloud TPU v5e documentation, per chip"),
    "v5p": (459e12, 95e9, "Cloud TPU v5p documentation, per chip"),
    "v6e": (918e12, 32e9, "Cloud TPU v6e (Trillium) documentation, per chip"),
    # No meaningful peak exists for a CPU; this nominal value keeps MFU defined on laptops.
    "cpu": (1e11, 16e9, "nominal, for CPU smoke runs only"),
}


def peak_flops(name: str) -> float:
  """Peak dense bf16 FLOP/s of one device named `name` (see `PEAKS`)."""
  return _lookup(name)[0]


def memory_bytes(name: str) -> float:
  """Memory of one device named `name`, in bytes."""
  return _lookup(name)[1]


def _lookup(name: str) -> tuple[float, float, str]:
  key = name.lower().replace("-", "").replace("_", "")
  if key not in PEAKS:
    raise ScalingError(
        f"unknown hardware {name!r}: choose one of {', '.join(sorted(PEAKS))}")
  return PEAKS[key]


def detect(device=None) -> str:
  """Best-effort name in `PEAKS` for a jax device (defaults to the first device)."""
  import jax

  device = device or jax.devices()[0]
  kind = getattr(device, "device_kind", "").lower()
  for name in ("h200", "h100", "a100"):
    if name in kind:
      return name
  for name, tag in (("v6e", "v6"), ("v5p", "v5p"), ("v5e", "v5"), ("v4", "v4")):
    if tag in kind:
      return name
  return "cpu"
