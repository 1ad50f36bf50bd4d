"""Multi-host start-up: `jax.distributed.initialize` when a run spans several processes."""

from __future__ import annotations

import os

import jax


def maybe_initialize(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> None:
  """Joins a multi-process run when one is described; a no-op for single-process runs.

  Cloud TPU pod slices and Slurm allocations are detected by JAX itself
  (`jax.distributed.initialize()` with no arguments). On CPU, collectives go through gloo.
  """
  explicit = coordinator is not None and (num_processes or 1) > 1
  slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
  tpu_pod = "TPU_WORKER_HOSTNAMES" in os.environ and "," in os.environ["TPU_WORKER_HOSTNAMES"]
  if not (explicit or slurm or tpu_pod):
    return
  if jax.config.jax_platforms in (None, "", "cpu") and not tpu_pod:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
  else:
    jax.distributed.initialize()
