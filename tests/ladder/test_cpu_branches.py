"""`configs/ladders/cpu_branches.py`: the cooldown branches of WSD trunks give the Chinchilla law
of the same grid trained as independent cosine runs, for at most 60% of its compute.

Both presets are trained (two worker processes each, as the config's docstring runs them) and
fitted by Approach 3 (E free, 200 bootstrap resamples, seed 0); the branches' alpha, beta and E
must each lie inside the cosine fit's 95% bootstrap interval, and the FLOPs the wsd ladder spends
(trunks plus each branch's steps after its fork, from the run records) must be at most 60% of
the cosine grid's. The fits, intervals, compute and times are printed (`pytest -s`).
"""

import json
import resource
import time

import pytest

from scaling import cli
from scaling.fit import chinchilla
from scaling.fit.table import load_table
from scaling.ladder import results

# Outside `make test` (its 15-minute budget on 2 cores); `make test-demo` runs it. Compiled with
# XLA's optimizations (tests/conftest.py), as `scaling ladder run` compiles for a user: without
# them the runs train ~2x slower and to other losses (d3 trunk 1.3737 against 1.3811).
pytestmark = [pytest.mark.slow, pytest.mark.demo, pytest.mark.xla_optimized]
CONFIG = "configs/ladders/cpu_branches.py"


def _spent_flops(workdir) -> float:
  """FLOPs the runs of a ladder workdir trained: a branch only its steps after the fork."""
  total = 0.0
  for _, rec in results.read_run_records(workdir).records:
    assert rec.status == "complete", rec.run_id
    done_before = rec.branch_step or 0
    total += rec.flops * (rec.steps - done_before) / rec.steps
  return total


def _train(preset: str, workdir, data_dir) -> dict:
  """Trains one preset; its wall seconds and the CPU seconds of its worker processes."""
  began, used = time.time(), _child_cpu()
  assert cli.main(["ladder", "run", f"{CONFIG}{preset}", f"--workdir={workdir}", "--parallel=2",
                   f"--config.run.data.data_dir={data_dir}"]) == 0
  return {"wall_s": round(time.time() - began), "worker_cpu_s": round(_child_cpu() - used)}


def _child_cpu() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def _summary(fit) -> dict:
  iv = fit.intervals()
  return {k: (round(fit.params[k], 4), [round(x, 4) for x in iv[k]]) for k in ("alpha", "beta",
                                                                              "E")}


def test_cooldown_branches_match_the_independent_cosine_fit(tmp_path, data_dir, monkeypatch):
  # One CPU device per worker (see tests/ladder/test_demo_law.py), and a fresh persistent
  # compilation cache: the runs of one depth share their model-building programs.
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax-cache"))
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  wsd, cosine = tmp_path / "wsd", tmp_path / "cosine"
  times = {"wsd": _train("", wsd, data_dir), "cosine": _train(":cosine", cosine, data_dir)}
  branches, independent = load_table(str(wsd)), load_table(str(cosine))
  assert len(branches) == len(independent) == 24
  assert set(branches.extra["point"]) == {"cooldown"}
  assert sorted(zip(branches.params, branches.tokens, strict=True)) == sorted(
      zip(independent.params, independent.tokens, strict=True))  # the same (N, D) grid
  fits = {name: chinchilla.approach3(table, bootstrap=200, seed=0)
          for name, table in (("wsd", branches), ("cosine", independent))}
  spent = {"wsd": _spent_flops(wsd), "cosine": _spent_flops(cosine)}
  print(json.dumps({"fits": {k: _summary(f) for k, f in fits.items()}, "flops": spent,
                    "ratio": spent["wsd"] / spent["cosine"], "time": times}))
  assert spent["wsd"] <= 0.6 * spent["cosine"]
  ref = fits["cosine"].intervals()
  for k in ("alpha", "beta", "E"):
    lo, hi = ref[k]
    assert lo <= fits["wsd"].params[k] <= hi, (k, fits["wsd"].params[k], ref[k])
