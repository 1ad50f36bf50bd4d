"""`configs/ladders/cpu_branches.py`: the cooldown branches of WSD trunks give the Chinchilla law
of the same grid trained as independent cosine runs, for at most 60% of its compute.

The branches' alpha, beta and E (Approach 3, E free, 200 bootstrap resamples, seed 0) must each
lie inside the cosine fit's 95% bootstrap interval, and the FLOPs the wsd ladder spends (trunks
plus each branch's steps after its fork, from the run records) must be at most 60% of the
cosine grid's. The fits, intervals, compute and times are printed (`pytest -s`).

Two tests, one check:

* In `make test`: the branches' fit and the cosine grid's fit are those of the two presets as
  recorded in `cpu_branches_wsd.csv` and `cpu_branches_cosine.csv`. Training both presets costs
  ~320 CPU-s on 2 cores, more than the suite's 15-minute budget has room for, so the recordings
  are kept honest in the same test: their run ids must be the ones each preset plans today (a
  changed config, schedule, shape or size rule changes them), and each preset's smallest
  depth is trained again and must reproduce the recorded losses (wsd: 1 trunk and 6 branches;
  cosine: 6 runs; 28 worker CPU-s in all, against 61 for depths 1-2), the branches spending
  what their plan says. A change in the code that trains (the model, data, optimizer, schedule,
  forking) moves those losses; one that touched only deeper models would not (the model tests
  check layer stacking against unrolled layers), which `make test-demo` is for.
* `make test-demo`: both presets trained in full, the fits from the fresh runs, and the fresh
  grids checked against the recordings (so a drifted recording is found and refreshed).

The recordings, for each preset (`PRESET` is empty for wsd, `:cosine` for the cosine grid):
`scaling ladder run configs/ladders/cpu_branches.py$PRESET --workdir=runs/NAME --parallel=2`,
then `scaling results collect runs/NAME --out=tests/ladder/cpu_branches_NAME.csv` (cosine
recorded at commit 88b4c8a, wsd at c9f1d84; 2 CPU cores, jax 0.10.2; rerun both to refresh).
"""

import dataclasses
import json
import pathlib
import resource
import time

import numpy as np
import pytest

from scaling import cli
from scaling.fit import chinchilla
from scaling.fit.table import Table, load_table
from scaling.ladder import results, spec
from tests.helpers import load_config, xla_flags

# Compiled with XLA's optimizations (tests/conftest.py), as `scaling ladder run` compiles for a
# user: without them the runs train ~2x slower and to other losses (d3 trunk 1.3737 against
# 1.3811).
pytestmark = [pytest.mark.xla_optimized]
CONFIG = "configs/ladders/cpu_branches.py"
HERE = pathlib.Path(__file__).parent
# Each preset's config argument, its sweep, and its recording (module docstring).
PRESETS = {"wsd": ("", "wsd"), "cosine": (":cosine", "grid")}
RECORDED = {"wsd": HERE / "cpu_branches_wsd.csv", "cosine": HERE / "cpu_branches_cosine.csv"}
# Between two builds of one program the losses differ by up to ~0.6% (measured: XLA's CPU
# runtime with and without Eigen's thread pool, the same 28 wsd runs); a changed model, data
# or schedule moves them by more.
REPRODUCE_RTOL = 0.015
SMALL_DEPTHS = (1,)  # what `make test` retrains of each preset


def _spent_flops(workdir) -> float:
  """FLOPs the runs of a ladder workdir trained: a branch only its steps after the fork."""
  total = 0.0
  for _, rec in results.read_run_records(workdir).records:
    assert rec.status == "complete", rec.run_id
    done_before = rec.branch_step or 0
    total += rec.flops * (rec.steps - done_before) / rec.steps
  return total


def _train(preset: str, workdir, data_dir, *overrides: str) -> dict:
  """Trains one preset; its wall seconds and the CPU seconds of its worker processes."""
  began, used = time.time(), _child_cpu()
  assert cli.main(["ladder", "run", f"{CONFIG}{PRESETS[preset][0]}", f"--workdir={workdir}",
                   "--parallel=2", f"--config.run.data.data_dir={data_dir}", *overrides]) == 0
  return {"wall_s": round(time.time() - began), "worker_cpu_s": round(_child_cpu() - used)}


def _child_cpu() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def _plan(preset: str, cfg=None) -> list:
  return spec.expand(cfg or load_config(f"{CONFIG}{PRESETS[preset][0]}"))


def _planned_flops(preset: str, cfg=None) -> float:
  """FLOPs the preset's plan trains: trunks, branches after their forks, independent runs."""
  return sum(r.spent_flops for r in _plan(preset, cfg))


def _summary(fit) -> dict:
  iv = fit.intervals()
  return {k: (round(fit.params[k], 4), [round(x, 4) for x in iv[k]]) for k in ("alpha", "beta",
                                                                              "E")}


def _isolated_workers(tmp_path, monkeypatch) -> None:
  # One CPU device per worker (see tests/ladder/test_demo_law.py), and a fresh persistent
  # compilation cache: the runs of one depth share their model-building programs.
  monkeypatch.setenv("XLA_FLAGS", xla_flags())
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax-cache"))
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def _check_recording(preset: str, fresh: Table, cfg=None) -> Table:
  """The preset's recorded grid is the one its config (default: the preset's own) plans today,
  and `fresh` (some or all of its runs, trained now) reproduces its losses. Returns the
  recorded table."""
  recorded = load_table(str(RECORDED[preset]))
  planned = {r.run_id for r in _plan(preset, cfg) if r.role != "trunk"}
  refresh = f"the {preset} grid changed; refresh {RECORDED[preset].name} (module docstring)"
  assert set(recorded.run_id) == planned, refresh
  by_id = dict(zip(recorded.run_id, recorded.loss, strict=True))
  want = np.array([by_id[i] for i in fresh.run_id])
  assert len(fresh) and np.allclose(fresh.loss, want, rtol=REPRODUCE_RTOL, atol=0), (
      refresh, dict(zip(fresh.run_id, zip(fresh.loss, want, strict=True), strict=True)))
  return recorded


def _compare(branches: Table, independent: Table, wsd_flops: float, cosine_flops: float,
             times: dict) -> None:
  assert len(branches) == len(independent) == 24
  assert set(branches.extra["point"]) == {"cooldown"}
  assert sorted(zip(branches.params, branches.tokens, strict=True)) == sorted(
      zip(independent.params, independent.tokens, strict=True))  # the same (N, D) grid
  fits = {name: chinchilla.approach3(table, bootstrap=200, seed=0)
          for name, table in (("wsd", branches), ("cosine", independent))}
  print(json.dumps({"fits": {k: _summary(f) for k, f in fits.items()},
                    "flops": {"wsd": wsd_flops, "cosine": cosine_flops},
                    "ratio": wsd_flops / cosine_flops, "time": times}))
  assert wsd_flops <= 0.6 * cosine_flops
  ref = fits["cosine"].intervals()
  for k in ("alpha", "beta", "E"):
    lo, hi = ref[k]
    assert lo <= fits["wsd"].params[k] <= hi, (k, fits["wsd"].params[k], ref[k])


@pytest.mark.slow(seconds=80)
def test_cooldown_branches_match_the_recorded_cosine_grid(tmp_path, data_dir, monkeypatch):
  _isolated_workers(tmp_path, monkeypatch)
  times, recorded = {}, {}
  for preset, (_, sweep) in PRESETS.items():
    small = f"--config.ladder.sweeps.{sweep}.depths={SMALL_DEPTHS}"
    times[preset] = _train(preset, tmp_path / preset, data_dir, small)
    fresh = load_table(str(tmp_path / preset))
    assert len(fresh) == 6 * len(SMALL_DEPTHS)  # 6 token counts a depth
    recorded[preset] = _check_recording(preset, fresh)
  # The runs spent what their plan says (a branch only its steps after the fork), so the plan's
  # FLOPs of the whole recorded grid are what it cost.
  cfg = load_config(CONFIG)
  cfg.ladder.sweeps.wsd.depths = SMALL_DEPTHS
  assert np.isclose(_spent_flops(tmp_path / "wsd"), _planned_flops("wsd", cfg))
  _compare(recorded["wsd"], recorded["cosine"],
           *(_planned_flops(p) for p in PRESETS), times)


@pytest.mark.slow(seconds=400)
@pytest.mark.demo
def test_cooldown_branches_match_the_independent_cosine_fit(tmp_path, data_dir, monkeypatch):
  _isolated_workers(tmp_path, monkeypatch)
  wsd, cosine = tmp_path / "wsd", tmp_path / "cosine"
  times = {"wsd": _train("wsd", wsd, data_dir), "cosine": _train("cosine", cosine, data_dir)}
  branches, independent = load_table(str(wsd)), load_table(str(cosine))
  _compare(branches, independent, _spent_flops(wsd), _spent_flops(cosine), times)
  _check_recording("wsd", branches)
  _check_recording("cosine", independent)


@pytest.mark.parametrize("preset", PRESETS)
def test_the_recording_check_fails_on_a_drifted_grid(preset):
  recorded = _check_recording(preset, load_table(str(RECORDED[preset])))  # reproduces itself
  with pytest.raises(AssertionError, match="refresh"):
    _check_recording(preset, dataclasses.replace(recorded, loss=recorded.loss * 1.02))
  # A preset that plans other runs (a longer warm-up here) no longer matches the recording.
  cfg = load_config(f"{CONFIG}{PRESETS[preset][0]}")
  cfg.ladder.rules.warmup_fraction = 0.1
  with pytest.raises(AssertionError, match="refresh"):
    _check_recording(preset, recorded, cfg)
