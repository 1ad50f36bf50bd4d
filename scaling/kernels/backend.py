"""Which implementation a kernel call runs: pure-JAX reference, Pallas GPU (Triton), megablox.

Every kernel in this package takes `interpret: bool | None = None` and `platform: str | None`:
  interpret None   auto: GPU -> the Pallas GPU (Triton-backend) kernel, TPU -> megablox for the
                   grouped matmul and the pure-JAX reference for routing (XLA's gathers are the
                   TPU-native path; the routing kernels here use Triton-style masked pointer
                   loads), CPU -> the reference.
            True   the Pallas GPU kernel run by the Pallas interpreter
                   (`pallas_call(interpret=True)`): how the kernels are tested on CPU. With
                   `platform="tpu"` the grouped matmul runs megablox interpreted instead.
            False  never interpret: the compiled kernel on GPU/TPU, the reference on CPU.
  platform         "gpu" | "tpu" | "cpu": choose as on that platform (None:
                   `jax.default_backend()`). "gpu" on a CPU-only machine, with
                   `jax.export(..., platforms=["cuda"])`, lowers the GPU kernels for CUDA
                   (`scaling.kernels.lowering`).
Both are explicit arguments, never process-wide defaults: what a function traces is decided by
its arguments alone, so jit's trace cache (keyed on them) is always right. A model layer holds
its choice as a `KernelBackend`, fixed when the layer is built (`build_model(..., kernels=)`,
`scaling.train.loop.build_trainer(..., kernels=)`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax

Impl = Literal["reference", "triton", "megablox"]


def resolve(interpret: bool | None, *, platform: str | None = None,
            tpu_kernel: bool = False) -> tuple[Impl, bool]:
  """(implementation, interpret flag) for a kernel call.

  `platform` replaces `jax.default_backend()` (tests use "tpu" to run megablox interpreted,
  "gpu" to lower the Triton kernels for CUDA on CPU); `tpu_kernel` says whether the op has a
  TPU Pallas kernel (only the grouped matmul does).
  """
  platform = platform or jax.default_backend()
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
  the layer, so it is part of the layer's graph definition and of every trace of it.

  platform: "gpu" | "tpu" | "cpu" (the implementation is chosen as on that platform).
  interpret: as the kernels' `interpret` argument (None: auto).
  """

  platform: str
  interpret: bool | None = None

  @classmethod
  def resolve(cls, platform: str | None = None,
              interpret: bool | None = None) -> KernelBackend:
    """The backend for a layer built now: `platform`, else `jax.default_backend()`."""
    return cls(platform or jax.default_backend(), interpret)

  def kwargs(self) -> dict:
    """`platform=` and `interpret=` for a kernel call."""
    return dict(platform=self.platform, interpret=self.interpret)


def next_pow2(n: int) -> int:
  """Smallest power of two >= n (Triton block dimensions must be powers of two)."""
  return 1 << max(0, (int(n) - 1).bit_length())
