"""JAX's persistent compilation cache for the runs of one ladder.

The rungs of a ladder repeat the same few programs: every rung of one depth has the same
parameter initialiser and evaluation step, on every budget. On CPU the initialiser alone takes
~4-12 s to compile for a 10K-parameter model, so without a cache the demo ladder spends more
time compiling than training. JAX keys each entry by the program, the compile options, the
backend and the jax version, so a hit is the same executable a fresh compile would give.
"""

from __future__ import annotations

import os

import jax

ENV = "JAX_COMPILATION_CACHE_DIR"
MIN_TIME_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"


def use_ladder_cache(workdir: str | os.PathLike) -> str | None:
  """Points this process's compilation cache at `<workdir>/.cache/jax`, unless one is set.

  A cache the user chose (the environment variable or `jax_compilation_cache_dir`) wins, and an
  object-store workdir (`gs://...`) gets none: entries are read at every compile. Returns the
  directory in use, or None.

  The ladder's cache keeps every program, not only those that took JAX's default 1 s to
  compile (unless `JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS` says otherwise): a CPU rung's
  programs mostly compile in 0.1-1 s, and each run (one process) compiles about 11 of them, so
  under the default every rung recompiled most of its depth's programs (the smoke demo ladder
  in one process: 76 compiles, 63 s of its 112 s).
  """
  chosen = os.environ.get(ENV) or jax.config.jax_compilation_cache_dir
  if chosen:
    return chosen
  path = os.fspath(workdir)
  if "://" in path:
    return None
  cache = os.path.join(path, ".cache", "jax")
  jax.config.update("jax_compilation_cache_dir", cache)
  if MIN_TIME_ENV not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return cache
