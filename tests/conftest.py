"""Test set-up: 8 simulated CPU devices so every sharding path runs without an accelerator.

Most tests compile small programs and run each for a handful of steps, so XLA's compile time is
most of the suite's time. They run with `JAX_DISABLE_MOST_OPTIMIZATIONS=1`, which skips the
backend's (LLVM's) optimization passes: the same programs, compiled in about half the time
(measured: training and model tests take 35-45% less CPU). Tests whose time goes into running
heavy programs (the batched L-BFGS fits) are marked `xla_optimized` and compile as usual. Set
`JAX_DISABLE_MOST_OPTIMIZATIONS=0` to run everything optimized. Processes the tests start
(ladder workers, `scaling train`, notebook kernels) inherit these settings.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# XLA aborts the process when a device thread is about a minute late to a collective's
# rendezvous (`rendezvous.cc:161 Termination timeout for all reduce ... 40 seconds`), which
# 8 device threads on a loaded 2-core machine can be; here lateness is not a failure, so XLA
# waits 5 minutes instead (a real deadlock still ends the test).
if "collective_call_terminate_timeout" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_cpu_collective_call_terminate_timeout_seconds=300"
# XLA's CPU backend compiles fusions with its MLIR fusion emitters by default, building their
# MLIR pattern sets afresh for every program: most of a tiny program's compile. Its older
# emitters compile a tiny training run in 2.2 s instead of 3.9 s (8 devices, unoptimized), to
# bitwise the same losses; optimized, one device, 400 steps: 3.2 s instead of 3.8 s, but the
# run's CPU 28.8 s against 27.6 s (its steps run ~5% slower) and losses 2e-7 apart
# (experiments/bench_compile_flags.py). The suite is mostly compiles of short runs, so it runs
# them this way. `scaling` keeps XLA's default: under the older emitters the WSD and
# constant schedules differ by an ulp in warm-up (tests/ladder/test_branches.py).
if "xla_cpu_use_fusion_emitters" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
FAST_COMPILE = os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1").lower() in (
    "1", "true", "yes", "on", "t", "y")

import pytest  # noqa: E402


def pytest_configure(config):
  config.addinivalue_line("markers", "xla_optimized: runs heavy programs, so XLA compiles them "
                          "with its optimizations (see tests/conftest.py)")
  import jax

  # JAX starts its backend on first use, reading XLA_FLAGS then: start it now, so that a test
  # which drops XLA_FLAGS for the worker processes it launches (test_demo_law) cannot leave this
  # process, and every later test in it, with one device instead of 8 (seen in CI order).
  jax.devices()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
  """Before each test's fixtures (its module's too): optimized compiles for a test marked
  `xla_optimized` and the processes it starts, fast ones for every other test."""
  if not FAST_COMPILE:
    return
  import jax

  fast = item.get_closest_marker("xla_optimized") is None
  os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1" if fast else "0"
  if jax.config.read("jax_disable_most_optimizations") != fast:
    if not fast:  # executables compiled unoptimized (cached fit solvers) must not be reused
      jax.clear_caches()
    jax.config.update("jax_disable_most_optimizations", fast)


def pytest_collection_finish(session):
  from scaling import gc_policy

  # Once the test modules are imported (jax, flax, orbax, ...): fewer garbage collections
  # while the tests trace (scaling/gc_policy.py).
  gc_policy.for_tracing()


def pytest_collection_modifyitems(config, items):
  """Files in order of their estimated cost, heaviest first, each file's tests in their order.

  `make test` runs whole files on two workers (`--dist loadfile --no-loadscope-reorder`): heavy
  files first and light ones last keeps one worker from finishing a long file while the other
  idles (longest-processing-time-first). A test's estimate is 1 s, a `slow` test's 20 s, or
  what `@pytest.mark.slow(seconds=N)` says (seconds on two CPU cores); mark a new end-to-end
  test `slow` so that it is scheduled early.
  """
  cost: dict[str, float] = {}
  for item in items:
    slow = item.get_closest_marker("slow")
    cost[item.path] = cost.get(item.path, 0) + (
        1 if slow is None else slow.kwargs.get("seconds", 20))
  first = {path: i for i, path in enumerate(dict.fromkeys(item.path for item in items))}
  items.sort(key=lambda item: (-cost[item.path], first[item.path]))


@pytest.fixture(scope="session")
def gcs_bucket():
  """`gs://<bucket>` on a Cloud Storage emulator on localhost (tests/fake_gcs.py)."""
  from tests import fake_gcs

  with fake_gcs.serve() as bucket:
    yield bucket
