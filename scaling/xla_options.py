"""The XLA compile options this project sets, by program kind and backend: the one table.

Every program the project jits for the CPU backend takes its options from here
(`for_platform`); accelerators get XLA's defaults (nothing here was measured on them).

* `STEPS`: train, eval and scoring steps. XLA 0.10's CPU backend hands dots to YNNPACK
  (`ynn_fusion` thunks); an empty `xla_cpu_experimental_ynn_fusion_type` keeps them on XLA's own
  (Eigen) dot. Both compute in float32 (bfloat16 operands are converted first), so only the
  summation order differs. Measured on 2 CPU cores, one process, alternating rounds
  (`experiments/bench_train.py --compare=xla_options`, and the same A/B on ladder rungs): the
  bfloat16 train step ran 1.15x as fast at nanodo's shape (4 layers, d_model 256, batch
  32 x 128) and at d_model 16 (batch 8 x 64); a lone bf16 [4096, 256] x [256, 1024] dot 1.3x.
  The demo's float32 rungs gain nothing (d1 0.96x, d4 1.05x: within noise).
* `INIT`: the parameter initialiser runs once, so XLA's backend optimizations only cost: at
  level 1 (of 3) it compiles ~4x faster (6.8 s -> 1.6 s for a 10K-parameter model on 2 cores,
  measured) to bitwise the same parameters (tests/models/test_dense.py; level 0 differs by an
  ulp in 4% of a truncated normal's values).
"""

from __future__ import annotations

import jax

STEPS = {"cpu": {"xla_cpu_experimental_ynn_fusion_type": ""}}
INIT = {"cpu": {"xla_backend_optimization_level": 1}}


def for_platform(table: dict[str, dict], mesh: jax.sharding.Mesh | None = None) -> dict | None:
  """`table`'s options for the platform of `mesh` (default: JAX's default backend), or None."""
  platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
  options = table.get(platform)
  return dict(options) if options else None
