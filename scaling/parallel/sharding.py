"""All sharding rules in one place: logical axis names -> mesh axes.

Parameters and activations carry logical names (`embed`, `heads`, `kv_heads`, `kv`, `mlp`,
`vocab`, `layers`, `batch`, `length`, `expert`); the table `cfg.mesh.rules` maps each to zero or
more mesh axes. Changing a run's parallelism is a rules change, never a code change. Models speak
logical names only; this module answers every question about mesh axes: PartitionSpecs (for
parameters, constraints and `shard_map`), the data-parallel width, and which mesh axes carry
experts.
"""

from __future__ import annotations

import math
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


def mesh_axes(name: str, rules: Rules) -> tuple[str, ...]:
  """Mesh axes the logical axis `name` is split over, in rule order; () when replicated."""
  return parse_axes(rules.get(name, ""))


def spec_axes(entry: str | tuple[str, ...] | None) -> tuple[str, ...]:
  """One PartitionSpec entry as a tuple of mesh axes: None -> (), 'data' -> ('data',)."""
  return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def ways(axes: Sequence[str], mesh_shape: Mapping[str, int]) -> int:
  """Number of shards over `axes` (axes missing from the mesh count as size 1)."""
  return math.prod(mesh_shape.get(a, 1) for a in axes)


def data_parallel_width(rules: Rules, mesh_shape: Mapping[str, int]) -> int:
  """Devices the batch is split over: the product of the mesh axes of the `batch` rule."""
  return ways(mesh_axes("batch", rules), mesh_shape)


def expert_axes(rules: Rules) -> tuple[str, ...]:
  """Mesh axes that carry experts (the `expert` rule): expert parallelism is over these."""
  return mesh_axes("expert", rules)


def expert_parallel_width(rules: Rules, mesh_shape: Mapping[str, int]) -> int:
  """Expert shards: the product of the sizes of `expert_axes` in the mesh (1: no expert
  parallelism)."""
  return ways(expert_axes(rules), mesh_shape)


def collective_axes(axes: Sequence[str]) -> str | tuple[str, ...]:
  """`axes` as a collective's `axis_name`: a single name as itself, several as a tuple."""
  return axes[0] if len(axes) == 1 else tuple(axes)


def current_mesh_shape() -> dict[str, int]:
  """{axis: size} of the mesh being traced under (`jax.set_mesh`/`use_abstract_mesh`); {}
  outside any mesh."""
  mesh = jax.sharding.get_abstract_mesh()
  return {} if mesh.empty else dict(zip(mesh.axis_names, mesh.axis_sizes, strict=True))


def local_spec(names: Sequence[str | None], rules: Rules, keep: Sequence[str]) -> PartitionSpec:
  """`logical_to_spec(names)` with only the logical axes in `keep` split: the layout in which a
  `shard_map` body sees an array whole along every other axis (e.g. weights gathered over FSDP's
  `embed` axes). Axes already taken by an earlier name stay taken, as in `logical_to_spec`."""
  spec = logical_to_spec(names, rules)
  return PartitionSpec(*(entry if name in keep else None
                         for name, entry in zip(names, spec, strict=True)))


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
  bad: list[tuple[str, int, str, int, tuple[str, ...], int]] = []
  for path, var in flat:
    names = _names(var)
    if not names:
      continue
    spec = logical_to_spec(names, rules)
    shape = var.get_value().shape
    for dim, (size, entry, name) in enumerate(zip(shape, spec, names, strict=False)):
      axes = spec_axes(entry)
      n = ways(axes, mesh_shape)
      if size % n:
        bad.append(("/".join(str(p) for p in path), dim, name, size, axes, n))
  if bad:
    # One error naming every rule involved: a fix of the first alone would fail on the next.
    where, dim, name, size, axes, n = bad[0]
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    fixes = ", ".join(f"mesh.rules.{r}" for r in dict.fromkeys(b[2] for b in bad))
    raise ScalingError(
        f"parameter {where} dim {dim} ({name}={size}) does not split over mesh axes "
        f"{'x'.join(axes)} ({n} ways){more}: change {fixes} or the mesh sizes")


def sharded_bytes(shape: Sequence[int], names: Sequence[str | None], itemsize: int,
                  mesh_shape: Mapping[str, int], rules: Rules) -> float:
  """Bytes one device holds of an array of `shape` sharded by logical `names`."""
  spec = logical_to_spec(names, rules)
  n = itemsize
  for size, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=False):
    n *= -(-size // ways(spec_axes(entry), mesh_shape))
  return float(n)
