"""Lower functions for CUDA on any machine and list the Triton kernels a GPU would launch.

`jax.export(..., platforms=["cuda"])` runs Pallas's Triton lowering without a GPU (the target
compute capability falls back to 9.0, an H100): each `pallas_call` becomes a
`stablehlo.custom_call @__gpu$xla.gpu.triton` whose backend config holds the kernel's name, its
launch grid, num_warps, num_stages and the Triton (tt dialect) module as MLIR bytecode. Pallas
does not verify that module; XLA parses it when it compiles on the GPU. `triton_kernels`
parses (and so verifies) every module, so a kernel whose IR the GPU would reject fails here, on
CPU. What `fn` launches is its own explicit choice: kernels called with `platform="gpu"`
(`**KernelBackend("gpu", False).kwargs()`), a model layer built with
`KernelBackend("gpu", False)` (e.g. `scaling.models.dense.moe_layer_fn(cfg, mode, kernels)`,
`scaling.train.loop.build_trainer(cfg, mesh, kernels=...)`).

  exp = export_cuda(fn, *shape_dtype_structs)
  kernels = triton_kernels(exp.mlir_module())      # [TritonKernel(name, grid, ...)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
from jax import export
from jax.interpreters import mlir
from jaxlib.mlir import ir
from jaxlib.triton import dialect as tt_dialect

TRITON_CALL_TARGET = "__gpu$xla.gpu.triton"


class TritonKernel(NamedTuple):
  name: str  # the pallas_call's name
  grid: tuple[int, int, int]  # launch grid (x, y, z)
  num_warps: int
  num_stages: int
  loads: tuple[tuple[int, ...], ...]  # distinct tensor shapes of its tt.load ops, in order
  stores: tuple[tuple[int, ...], ...]  # distinct tensor shapes of its tt.store ops
  dots: tuple[tuple[int, int, int], ...]  # distinct (m, k, n) of its tt.dot ops
  dot_precisions: tuple[str, ...]  # distinct operand types of its dots, f32 with its precision
  ir: str  # the verified Triton module, as text

  def summary(self) -> dict[str, Any]:
    """JSON-ready launch configuration (no IR)."""
    return dict(name=self.name, grid=list(self.grid), num_warps=self.num_warps,
                num_stages=self.num_stages, load_blocks=[list(s) for s in self.loads],
                store_blocks=[list(s) for s in self.stores],
                dot_blocks=[list(s) for s in self.dots], dot_precisions=list(self.dot_precisions))


def export_cuda(fn: Callable, *args: Any, **kwargs: Any) -> export.Exported:
  """`jax.export` of `fn` for CUDA.

  fn: a function (jitted here) or a `jax.jit` one (keeping its shardings), whose kernels were
  given `platform="gpu"` (see the module docstring): one that leaves the choice to
  `jax.default_backend()` lowers the references on a CPU-only machine.
  args: `jax.ShapeDtypeStruct`s (nothing is allocated) or arrays. The Triton custom call is
  not on export's list of stable custom calls (its IR is tied to the jaxlib version): allowed.
  """
  jitted = fn if hasattr(fn, "trace") else jax.jit(fn)
  return export.export(
      jitted, platforms=["cuda"],
      disabled_checks=[export.DisabledSafetyCheck.custom_call(TRITON_CALL_TARGET)],
  )(*args, **kwargs)


def _walk(op: ir.Operation) -> Iterator[ir.Operation]:
  for region in op.regions:
    for block in region.blocks:
      for child in block.operations:
        yield child.operation
        yield from _walk(child.operation)


def _shape(value_type: ir.Type) -> tuple[int, ...] | None:
  """A tensor's shape; None for a scalar (a single-element load of a pointer)."""
  try:
    return tuple(ir.RankedTensorType(value_type).shape)
  except ValueError:
    return None


def _distinct(shapes) -> tuple:
  return tuple(dict.fromkeys(s for s in shapes if s is not None))


def _parse_triton(bytecode: bytes) -> tuple[str, tuple, tuple, tuple, tuple]:
  """Verified module text, load / store / dot block shapes and dot precisions of one Triton
  module."""
  ctx = ir.Context()
  tt_dialect.register_dialect(ctx)
  ctx.load_all_available_dialects()
  with ctx:
    module = ir.Module.parse(bytecode)  # parsing runs the verifier: raises on invalid IR
    loads, stores, dots, precisions = [], [], [], []
    for op in _walk(module.operation):
      if op.name == "tt.load":
        # Unused loads are a masked store's read of the old values (Pallas stores by swap),
        # dead code that Triton drops.
        if any(True for _ in op.results[0].uses):
          loads.append(_shape(op.results[0].type))
      elif op.name == "tt.store":
        stores.append(_shape(op.operands[1].type))
      elif op.name == "tt.dot":
        a, b = _shape(op.operands[0].type), _shape(op.operands[1].type)
        dots.append((a[0], a[1], b[1]))
        # The input precision only applies to f32 operands: "ieee" (full float32 products,
        # Triton's default when absent), "tf32", "tf32x3", ...
        element = str(ir.RankedTensorType(op.operands[0].type).element_type)
        if element == "f32":
          attr = op.attributes["inputPrecision"] if "inputPrecision" in op.attributes else None
          precision = tt_dialect.InputPrecision(ir.IntegerAttr(attr).value) if attr else "ieee"
          element = f"f32/{precision}"
        precisions.append(element)
    return (str(module), _distinct(loads), _distinct(stores), _distinct(dots),
            _distinct(precisions))


def triton_kernels(module_text: str) -> list[TritonKernel]:
  """Every Triton kernel launched by a lowered (StableHLO) module, in program order."""
  found = []
  with mlir.make_ir_context():
    module = ir.Module.parse(module_text)
    for op in _walk(module.operation):
      if op.name != "stablehlo.custom_call":
        continue
      if ir.StringAttr(op.attributes["call_target_name"]).value != TRITON_CALL_TARGET:
        continue
      cfg = ir.DictAttr(op.attributes["mhlo.backend_config"])
      ints = {k: ir.IntegerAttr(cfg[k]).value
              for k in ("grid_x", "grid_y", "grid_z", "num_warps", "num_stages")}
      found.append((ir.StringAttr(cfg["name"]).value,
                    (ints["grid_x"], ints["grid_y"], ints["grid_z"]), ints["num_warps"],
                    ints["num_stages"], ir.StringAttr(cfg["ir"]).value_bytes))
  kernels = []
  for name, grid, warps, stages, bytecode in found:
    try:
      text, loads, stores, dots, precisions = _parse_triton(bytecode)
    except ir.MLIRError as e:
      # The diagnostics' messages: the full error also dumps the offending op, often huge.
      why = "; ".join(d.message for d in e.error_diagnostics) or e.message
      raise ValueError(f"Triton kernel {name!r} has invalid IR: {why}") from e
    kernels.append(TritonKernel(name, grid, warps, stages, loads, stores, dots, precisions,
                                text))
  return kernels


def target_compute_capability() -> str:
  """The compute capability Pallas lowers for: the local GPU's, else 9.0 (an H100), Pallas's
  fallback when no GPU is present."""
  try:
    return str(jax.local_devices(backend="gpu")[0].compute_capability)
  except RuntimeError:
    return "9.0"
