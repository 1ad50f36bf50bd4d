"""The demo's law at smoke size: `configs/ladders/cpu_demo.py:smoke` trains real tiny models on
the synthetic language and an Approach-3 Chinchilla fit, with E free, finds the language's floor
and predicts the held-out rung; the fitted floor follows the true floor when
`data.synthetic.support_exponent` changes (the excess over the floor barely depends on it).

Tolerances are set from measured smoke ladders (2 CPU cores; 6 fitted runs at 3e9 and 1e10
FLOPs each, one held-out run at 3e10): support_exponent 0.5 (floor 1.3504) fitted E 1.224,
support_exponent 2.0 (floor 0.8899) fitted E 0.734, so the fitted floors differ by 0.490
against a true difference of 0.461 (error 0.03 nats); each E within 18% of its floor; excess
ratio 2.4-2.5. At this size the largest rungs are still 0.17-0.21 nats above the floor and six
runs barely identify five parameters, so E is recovered coarsely: with the 1e10 profile at
depths 1-3 instead, the same fits gave E -24% and +0.1% (a 0.14-nat move for 0.46). Training is
deterministic on one platform, so the test is repeatable, but its margins are those of this
design. The full demo (`make demo`) meets the 5% bound.
"""

import numpy as np
import pytest

from scaling import cli
from scaling.data.synthetic import SyntheticLanguage, SyntheticSpec
from scaling.fit import chinchilla, validation
from scaling.fit import table as table_lib
from tests.helpers import load_config, xla_flags

# In `make test` (~170 CPU-seconds: its two ladders train with two workers each, so it is
# scheduled first, and the other test worker runs beside it). Its runs are long enough (up to
# 1,774 steps) that XLA's optimizations pay for themselves (tests/conftest.py).
pytestmark = [pytest.mark.slow(seconds=400), pytest.mark.xla_optimized]
SMOKE = "configs/ladders/cpu_demo.py:smoke"


def _floor(beta: float) -> float:
  spec = SyntheticSpec(**{**load_config(SMOKE).run.data.synthetic.to_dict(),
                          "support_exponent": beta})
  return SyntheticLanguage(spec).entropy_floor


def _fit_ladder(workdir, data_dir, beta: float):
  """Trains the smoke ladder on the language with this support exponent and fits it.

  Two worker processes, as `make demo` runs it. Each worker sees one CPU device: the suite's 8
  simulated devices would make every step an 8-way all-reduce, and on a loaded 2-core machine
  XLA aborts when one device thread misses its 40 s rendezvous (measured).
  """
  assert cli.main(["ladder", "run", SMOKE, f"--workdir={workdir}", "--parallel=2",
                   f"--config.run.data.data_dir={data_dir}",
                   f"--config.run.data.synthetic.support_exponent={beta}"]) == 0
  sp = validation.split(table_lib.load_table(str(workdir)))
  fit = chinchilla.approach3(sp.fit_table, bootstrap=20, seed=0)
  return fit, sp


def _profile_minima_inside(table) -> bool:
  budgets = chinchilla.group_budgets(table)
  for b in np.unique(budgets):
    i = np.flatnonzero(budgets == b)
    loss = table.loss[i[np.argsort(table.params[i])]]
    if int(np.argmin(loss)) in (0, len(loss) - 1):
      return False
  return True


def test_smoke_demo_recovers_the_floor_and_follows_support_exponent(tmp_path, data_dir,
                                                                   monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", xla_flags())  # one device a worker (see _fit_ladder)
  fitted, floors = {}, {}
  for beta in (0.5, 2.0):
    fit, sp = _fit_ladder(tmp_path / f"beta{beta}", data_dir, beta)
    floor = floors[beta] = _floor(beta)
    e = fitted[beta] = fit.params["E"]
    ft = sp.fit_table
    assert len(ft) == 6 and len(sp.held_table) == 1
    assert abs(e / floor - 1) < 0.25, (beta, e, floor)  # measured -9% and -17%
    excess = ft.loss - floor
    assert excess.min() > 0 and excess.max() / excess.min() > 1.8  # measured 2.4, 2.5
    # (At this size the 1e10 profile's minimum sits at its smallest model; the full demo's
    # profiles have theirs inside, checked by _profile_minima_inside there.)
    assert _profile_minima_inside(ft.subset(np.flatnonzero(ft.flops < 5e9)))
    (held,) = validation.validate(fit, sp, level=0.95, seed=0)
    assert held["flops"] >= 2.95 * ft.flops.max()  # budgets 3e10 vs 1e10, spent within 0.1%
    assert abs(held["rel_error"]) < 0.06, held
  # The fitted floor moves with the true floor: measured error 0.03 nats on a 0.46-nat move.
  moved, true_move = fitted[0.5] - fitted[2.0], floors[0.5] - floors[2.0]
  assert abs(moved - true_move) < 0.1, (moved, true_move)
