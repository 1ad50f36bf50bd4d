"""Device mesh construction with axes (data, model, expert); the one place axis types are chosen.

We use Auto axis types (GSPMD propagation from parameter and activation annotations): jax 0.10's
`make_mesh` defaults to Explicit, which would make every op's sharding part of its type.
"""

from __future__ import annotations

import math

import jax
import ml_collections

from scaling.config import MESH_AXES
from scaling.errors import ScalingError


def mesh_shape(mesh_cfg: ml_collections.ConfigDict | dict, num_devices: int) -> dict[str, int]:
  """Resolves `mesh.{data,model,expert}` (one may be -1) against the device count."""
  sizes = {a: int(mesh_cfg[a]) for a in MESH_AXES}
  free = [a for a, s in sizes.items() if s == -1]
  if len(free) > 1:
    raise ScalingError("at most one of mesh.data, mesh.model, mesh.expert may be -1")
  fixed = math.prod(s for s in sizes.values() if s != -1)
  if free:
    if num_devices % fixed:
      raise ScalingError(
          f"mesh.{free[0]}=-1 cannot take the rest: {num_devices} devices are not divisible "
          f"by the other axes' product {fixed}; change the mesh sizes")
    sizes[free[0]] = num_devices // fixed
  total = math.prod(sizes.values())
  if total != num_devices:
    shape = ",".join(f"{a}:{s}" for a, s in sizes.items())
    raise ScalingError(
        f"mesh {shape} has {total} devices but {num_devices} are available; make "
        "mesh.data x mesh.model x mesh.expert equal the device count (or set one to -1)")
  return sizes


def parse_mesh_flag(text: str) -> dict[str, int]:
  """'data:8,model:1,expert:1' -> {'data': 8, 'model': 1, 'expert': 1} (missing axes are 1)."""
  sizes = {a: 1 for a in MESH_AXES}
  for part in filter(None, (p.strip() for p in text.split(","))):
    name, _, value = part.partition(":")
    if name not in MESH_AXES or not value.lstrip("-").isdigit():
      raise ScalingError(f"--mesh={text!r}: expected axis:size pairs with axes {MESH_AXES}, "
                         "e.g. data:8,model:1,expert:1")
    sizes[name] = int(value)
  return sizes


def make_mesh(mesh_cfg, devices=None) -> jax.sharding.Mesh:
  """A (data, model, expert) mesh over `devices` (default: all) with Auto axis types."""
  devices = list(devices if devices is not None else jax.devices())
  sizes = mesh_shape(mesh_cfg, len(devices))
  return jax.make_mesh(tuple(sizes[a] for a in MESH_AXES), MESH_AXES,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)
