"""Which implementation a kernel call runs: pure-JAX reference, Pallas GPU (Triton), megablox.

Every kernel in this package takes `interpret: bool | None = None`:
  None   auto: GPU -> the Pallas GPU (Triton-backend) kernel, TPU -> megablox for the grouped
         matmul and the pure-JAX reference for routing (XLA's gathers are the TPU-native path;
         the routing kernels here use Triton-style masked pointer loads), CPU -> the reference.
  True   the Pallas GPU kernel run by the Pallas interpreter (`pallas_call(interpret=True)`):
         how the kernels are tested on CPU. With `platform="tpu"` the grouped matmul runs
         megablox interpreted instead.
  False  never interpret: the compiled kernel on GPU/TPU, the reference on CPU.
`use_interpret(True)` changes the default for code that cannot pass the argument (the MoE layer
selected by config), e.g. a test that trains with interpreted kernels. `use_platform("gpu")`
likewise picks the GPU kernels whatever the default backend: with `jax.export(...,
platforms=["cuda"])` it lowers them for CUDA on a CPU-only machine (`scaling.kernels.lowering`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Literal

import jax

Impl = Literal["reference", "triton", "megablox"]

_DEFAULT_INTERPRET: bool | None = None
_DEFAULT_PLATFORM: str | None = None


@contextlib.contextmanager
def use_interpret(interpret: bool | None) -> Iterator[None]:
  """Within the block, kernels called with `interpret=None` use `interpret` instead (at trace
  time: functions jitted before the block keep their compiled choice)."""
  global _DEFAULT_INTERPRET
  previous, _DEFAULT_INTERPRET = _DEFAULT_INTERPRET, interpret
  try:
    yield
  finally:
    _DEFAULT_INTERPRET = previous


@contextlib.contextmanager
def use_platform(platform: str | None) -> Iterator[None]:
  """Within the block, kernels called without `platform` choose their implementation as on
  `platform` ("gpu", "tpu", "cpu") instead of `jax.default_backend()` (at trace time)."""
  global _DEFAULT_PLATFORM
  previous, _DEFAULT_PLATFORM = _DEFAULT_PLATFORM, platform
  try:
    yield
  finally:
    _DEFAULT_PLATFORM = previous


def resolve(interpret: bool | None, *, platform: str | None = None,
            tpu_kernel: bool = False) -> tuple[Impl, bool]:
  """(implementation, interpret flag) for a kernel call.

  `platform` overrides `use_platform` and `jax.default_backend()` (tests use "tpu" to run
  megablox interpreted, "gpu" to lower the Triton kernels for CUDA on CPU);
  `tpu_kernel` says whether the op has a TPU Pallas kernel (only the grouped matmul does).
  """
  if interpret is None:
    interpret = _DEFAULT_INTERPRET
  platform = platform or _DEFAULT_PLATFORM or jax.default_backend()
  if platform == "tpu":
    if tpu_kernel:
      return "megablox", bool(interpret)
    return "reference", False
  if interpret:
    return "triton", True
  if platform == "gpu":
    return "triton", False
  return "reference", False


@dataclasses.dataclass(frozen=True)
class KernelBackend:
  """Where a layer's kernels run, fixed when the layer is built: a static (hashable) field of
  the layer, so it is part of the layer's graph definition and of every trace of it, and a
  later `use_platform`/`use_interpret` block cannot change what an already-built layer runs.

  platform: "gpu" | "tpu" | "cpu" (the implementation is chosen as on that platform).
  interpret: as the kernels' `interpret` argument (None: auto).
  """

  platform: str
  interpret: bool | None = None

  @classmethod
  def resolve(cls, platform: str | None = None,
              interpret: bool | None = None) -> KernelBackend:
    """The backend for a layer built now: explicit arguments, else the `use_platform` /
    `use_interpret` defaults in effect, else `jax.default_backend()`."""
    platform = platform or _DEFAULT_PLATFORM or jax.default_backend()
    return cls(platform, _DEFAULT_INTERPRET if interpret is None else interpret)

  def kwargs(self) -> dict:
    """`platform=` and `interpret=` for a kernel call."""
    return dict(platform=self.platform, interpret=self.interpret)


def next_pow2(n: int) -> int:
  """Smallest power of two >= n (Triton block dimensions must be powers of two)."""
  return 1 << max(0, (int(n) - 1).bit_length())
