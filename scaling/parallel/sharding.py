"""All sharding rules in one place: logical axis names -> mesh axes.

Parameters and activations carry logical names (`embed`, `heads`, `kv`, `mlp`, `vocab`,
`layers`, `batch`, `length`, `expert`); the table `cfg.mesh.rules` maps each to zero or more mesh
axes. Changing a run's parallelism is a rules change, never a code change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
from jax.sharding import NamedSharding, PartitionSpec

from scaling.config import parse_axes
from scaling.errors import ScalingError

Rules = Mapping[str, str]


def logical_to_spec(names: Sequence[str | None], rules: Rules) -> PartitionSpec:
  """Maps logical names to a PartitionSpec; a mesh axis is used at most once (first wins)."""
  used: set[str] = set()
  out: list = []
  for name in names:
    targets = () if name is None else tuple(a for a in parse_axes(rules.get(name, ""))
                                            if a not in used)
    used.update(targets)
    out.append(None if not targets else targets[0] if len(targets) == 1 else targets)
  return PartitionSpec(*out)


def constrain(x: jax.Array, names: Sequence[str | None], rules: Rules) -> jax.Array:
  """Sharding constraint by logical names; a no-op outside a mesh context (e.g. eager use)."""
  if jax.sharding.get_abstract_mesh().empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(names, rules))


def _names(var) -> tuple | None:
  """Logical names of an NNX Variable (flax >= 0.12 stores them as `out_sharding`)."""
  meta = var.get_metadata() if hasattr(var, "get_metadata") else {}
  for key in ("out_sharding", "sharding_names", "sharding"):
    names = meta.get(key)
    if isinstance(names, tuple) and all(n is None or isinstance(n, str) for n in names):
      return names
  return None


def state_specs(state, rules: Rules):
  """PartitionSpec for every leaf of an NNX state whose variables carry logical names."""
  from flax import nnx

  def spec(var):
    names = _names(var)
    return logical_to_spec(names, rules) if names else PartitionSpec()

  return jax.tree.map(spec, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def state_shardings(state, mesh: jax.sharding.Mesh, rules: Rules):
  """NamedSharding for every leaf of an NNX state on `mesh`."""
  return jax.tree.map(lambda s: NamedSharding(mesh, s), state_specs(state, rules),
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


def check_divisible(state, mesh_shape: Mapping[str, int], rules: Rules) -> None:
  """Raises ScalingError when a parameter dimension does not split evenly over its mesh axes."""
  from flax import nnx

  flat = nnx.to_flat_state(state) if hasattr(nnx, "to_flat_state") else state.flat_state()
  for path, var in flat:
    names = _names(var)
    if not names:
      continue
    spec = logical_to_spec(names, rules)
    shape = var.get_value().shape
    for dim, (size, axes, name) in enumerate(zip(shape, spec, names, strict=False)):
      axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
      ways = 1
      for a in axes:
        ways *= mesh_shape[a]
      if size % ways:
        where = "/".join(str(p) for p in path)
        raise ScalingError(
            f"parameter {where} dim {dim} ({name}={size}) does not split over mesh axes "
            f"{'x'.join(axes)} ({ways} ways): change mesh.rules.{name} or the mesh sizes")


def sharded_bytes(shape: Sequence[int], names: Sequence[str | None], itemsize: int,
                  mesh_shape: Mapping[str, int], rules: Rules) -> float:
  """Bytes one device holds of an array of `shape` sharded by logical `names`."""
  spec = logical_to_spec(names, rules)
  n = itemsize
  for size, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=False):
    axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
    ways = 1
    for a in axes:
      ways *= mesh_shape.get(a, 1)
    n *= -(-size // ways)
  return float(n)
