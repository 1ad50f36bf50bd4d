"""A cooldown branch started by hand: `scaling train --branch_from=TRUNK_DIR [--branch_step=K]`.

A ladder's `wsd` sweep writes `branch.{parent, step}` into each branch's config
(`scaling.ladder.spec`). This module does the same for one run trained by hand from any trunk
run folder, and first checks what makes the branch's restore exact
(`scaling.train.checkpoint.restore_branch`): the trunk is the same run as the branch in every
identity field except the schedule's length and decay, neither schedule has started decaying
before the fork step, and the trunk saved a checkpoint at that step. Every refusal is one
ScalingError, raised before anything compiles.
"""

from __future__ import annotations

import os

import ml_collections

from scaling import storage
from scaling.errors import ScalingError
from scaling.train import identity
from scaling.train.checkpoint import saved_steps
from scaling.train.optimizer import decay_start

# Fields a branch may set differently from its trunk: they only act from the decay on (or name
# the trunk/branch relation itself), so both runs take bitwise the same steps before the fork.
SCHEDULE_FIELDS = ("train.steps", "train.schedule", "train.decay_fraction", "train.decay_shape",
                   "train.min_lr_ratio", "trunk.", "branch.")
STABLE_SCHEDULES = ("constant", "wsd")


def stable_until(t: ml_collections.ConfigDict | dict) -> int:
  """The last step (exclusive) at which a `constant`/`wsd` schedule is still warm-up or stable."""
  t = ml_collections.ConfigDict(dict(t))
  return int(t.steps) if t.schedule == "constant" else decay_start(t)


def _trunk_config(trunk_dir: storage.epath.Path) -> dict:
  cfg = storage.read_json(trunk_dir / "config.json")
  if cfg is None:
    raise ScalingError(f"--branch_from={os.fspath(trunk_dir)} is not a run folder (it has no "
                       "config.json); give the workdir of a trained constant or wsd run")
  return cfg


def _check_schedules(cfg: ml_collections.ConfigDict, trunk: dict, step: int, where: str) -> None:
  """The trunk's and the branch's schedules agree before `step` (the branch's own schedule is
  checked by `fork` before the trunk is read)."""
  t, tt = cfg.train, ml_collections.ConfigDict(trunk["train"])
  if tt.schedule not in STABLE_SCHEDULES:
    raise ScalingError(f"{where} trains with train.schedule={tt.schedule!r}, which decays from "
                       "its first step; a branch forks from a constant or wsd trunk")
  if not 0 < step < int(t.steps):
    raise ScalingError(f"--branch_step={step} must be in (0, train.steps={t.steps})")
  if step > stable_until(t):
    raise ScalingError(f"--branch_step={step} is after this branch's own decay starts (step "
                       f"{stable_until(t)}); fork at or before it, or lower train.decay_fraction")
  if step > stable_until(tt):
    raise ScalingError(f"--branch_step={step} is after {where} began decaying (step "
                       f"{stable_until(tt)}); fork from a step of its constant phase")


def fork(cfg: ml_collections.ConfigDict, trunk_dir: str | os.PathLike,
         step: int | None = None, *, workdir: str | os.PathLike | None = None
         ) -> ml_collections.ConfigDict:
  """`cfg` as a cooldown branch of the run in `trunk_dir`, forked at `step`.

  Args:
    cfg: the branch's run config (`train.schedule` `wsd`, or `constant`).
    trunk_dir: the trunk's run folder, with config.json and a checkpoint at `step`.
    step: the trunk step to fork at; default the branch's own decay start
      (`scaling.train.optimizer.decay_start`), the ladder's rule.
    workdir: the branch's own folder; once it holds the branch's identity the trunk is not
      re-checked, so a branch resumes even after its trunk's checkpoints were pruned.

  Returns a copy of `cfg` with `branch.{parent, step, parent_dir}` (parent_dir is a location,
  outside the identity). Raises ScalingError naming the field and the fix.
  """
  trunk_dir = storage.Path(trunk_dir)
  out = ml_collections.ConfigDict(cfg.to_dict())
  if out.train.schedule not in STABLE_SCHEDULES:
    raise ScalingError(f"train.schedule={out.train.schedule!r}: a branch continues its trunk's "
                       "constant learning rate, then cools down; use --config.train.schedule=wsd")
  step = decay_start(out.train) if step is None else int(step)
  trunk = _trunk_config(trunk_dir)
  where = f"the trunk {os.fspath(trunk_dir)}"
  parent = trunk.get("run_id") or trunk_dir.name
  out.branch = ml_collections.ConfigDict(dict(parent=str(parent), step=step,
                                              parent_dir=os.fspath(trunk_dir)))
  if workdir is not None and (storage.Path(workdir) / identity.IDENTITY).exists():
    return out  # resuming: the recorded identity is the check (scaling.train.loop.restore)
  _check_schedules(out, trunk, step, where)
  changed = [d for d in identity.differences(trunk, out.to_dict())
             if not d.startswith(SCHEDULE_FIELDS)]
  if changed:
    raise ScalingError(f"{where} is another model or data than this branch ("
                       f"{', '.join(changed[:identity.MAX_NAMED])}); a branch may change only "
                       "train.steps and the decay (schedule, decay_fraction, decay_shape, "
                       "min_lr_ratio)")
  steps = saved_steps(trunk_dir)
  if step not in steps:
    raise ScalingError(f"--branch_step={step}: {where} has no checkpoint there (it has "
                       f"{steps or 'none'}); train it with --config.train.checkpoint_every "
                       f"dividing {step}, or fork at one of those steps")
  return out
