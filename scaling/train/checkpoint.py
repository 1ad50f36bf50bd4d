"""Orbax checkpoints of the train state: async saves, keep-last-n, fall back past an unreadable one.

Orbax writes each step into a temporary folder and renames it when complete (on GCS, where
there is no rename, it marks completion with a commit file), so a save cut short by a kill never
looks finished.

Restoring tells two failures apart, by the checkpoint's metadata (tree paths, shapes, dtypes)
read before any array is:
* a checkpoint that does not fit the model (another structure or shape) belongs to another run:
  `restore_latest` raises a one-line `ScalingError` and nothing is changed;
* a checkpoint that cannot be read (truncated, corrupt) is skipped with a warning and the one
  before it is used. It is kept as it is, never deleted (the retention policy preserves it and
  no save replaces it), so the damage can still be inspected.

Branches (`scaling.ladder.spec`, sweeps of kind `wsd`): a trunk saves and keeps forever the
checkpoints at its `trunk.branch_steps`, and a branch with no checkpoint of its own starts from
its parent's checkpoint at `branch.step` (`restore_branch`), read through a read-only manager so
that a trunk still training is never disturbed.

Checking the metadata first also keeps a mismatch from reaching orbax's asynchronous restore,
which on a shape error returns while tensorstore reads are still in flight; their callbacks then
hit a closed event loop and print "RuntimeError: Event loop is closed" tracebacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp
from orbax.checkpoint.checkpoint_managers import save_decision_policy as sdp

from scaling import storage
from scaling.errors import ScalingError

log = logging.getLogger(__name__)
ITEM = "state"


@dataclasses.dataclass
class _KeepSteps(pp.PreservationPolicy):
  """Preserves the steps in `steps`, a set the Checkpointer fills as it finds unreadable ones."""

  steps: set[int]

  def should_preserve(self, checkpoints, *, context) -> list[bool]:
    return [c.step in self.steps for c in checkpoints]


def _key(k) -> str:
  for attr in ("key", "idx", "name"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def leaf_shapes(tree) -> dict[str, tuple[tuple[int, ...], str]]:
  """`{"params.blocks.attn.query.kernel": (shape, dtype)}` for every array (or metadata) leaf."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    keys = [_key(k) for k in path]
    if keys and keys[-1] == "value":  # nnx.Variable's own field: noise in a message
      keys = keys[:-1]
    out[".".join(keys)] = (tuple(int(d) for d in getattr(leaf, "shape", ())),
                           str(getattr(leaf, "dtype", "")))
  return out


def mismatches(saved: dict, wanted: dict) -> list[str]:
  """`"path saved -> wanted"` for each leaf whose presence, shape or dtype differs."""
  def fmt(x) -> str:
    return "(absent)" if x is None else f"{list(x[0])} {x[1]}"

  keys = sorted(set(saved) | set(wanted), key=lambda k: (not k.startswith("params"), k))
  return [f"{k} {fmt(saved.get(k))} -> {fmt(wanted.get(k))}" for k in keys
          if saved.get(k) != wanted.get(k)]


class Checkpointer:
  """Saves and restores the train-state pytree under `workdir/checkpoints`."""

  def __init__(self, workdir: str | os.PathLike, *, every: int, keep: int,
               async_save: bool = True, keep_steps=(), read_only: bool = False):
    """`keep_steps`: steps always saved and never deleted (a trunk's branch points);
    `read_only`: only restore (another run's checkpoints: nothing is saved or cleaned up)."""
    # orbax writes gs:// itself (tensorstore); local paths must be absolute for it.
    workdir = storage.Path(os.path.abspath(workdir) if storage.is_local(workdir) else workdir)
    self.workdir = workdir
    self.directory = workdir / "checkpoints"
    self.unreadable: set[int] = set()
    self.keep_steps = frozenset(int(x) for x in keep_steps)
    # Read-only, orbax warns that the manager will save nothing, which is the point for every
    # caller (evaluations, a branch's trunk, HF export): only its errors show while it is made.
    with _quiet("absl") if read_only else contextlib.nullcontext():
      options = ocp.CheckpointManagerOptions(
          save_decision_policy=sdp.AnySavePolicy(
              [sdp.FixedIntervalPolicy(max(1, every)), sdp.SpecificStepsPolicy(self.keep_steps)]),
          preservation_policy=pp.AnyPreservationPolicy(
              [pp.LatestN(max(1, keep)), _KeepSteps(self.unreadable),
               pp.CustomSteps(sorted(self.keep_steps))]),
          enable_async_checkpointing=async_save,
          cleanup_tmp_directories=not read_only,
          read_only=read_only,
          create=not read_only,
      )
      # The handler is named so that metadata can be read without restoring (restore_latest).
      self.manager = ocp.CheckpointManager(
          self.directory, options=options, item_handlers={ITEM: ocp.StandardCheckpointHandler()})

  def save(self, step: int, state, *, force: bool = False) -> bool:
    """Starts saving `state` at `step` when the policy (or `force`) says so."""
    if step in self.unreadable:
      log.warning("not saving step %d: the unreadable checkpoint of that step in %s is kept as "
                  "it is", step, self.directory)
      return False
    return self.manager.save(step, args=ocp.args.Composite(
        **{ITEM: ocp.args.StandardSave(state)}), force=force)

  def _saved_shapes(self, step: int) -> dict | None:
    try:
      meta = self.manager.item_metadata(step)[ITEM]
    except Exception as e:  # noqa: BLE001 - any failure to read metadata means unreadable
      self._skip(step, f"its metadata cannot be read: {type(e).__name__}: {e}")
      return None
    shapes = leaf_shapes(meta) if meta is not None else {}
    if not shapes:
      self._skip(step, "it has no readable metadata")
      return None
    return shapes

  def _skip(self, step: int, why: str) -> None:
    self.unreadable.add(step)
    log.warning("checkpoint at step %d in %s could not be restored (%s); keeping it and trying "
                "the previous one", step, self.directory, why.splitlines()[0][:300])

  def restore_latest(self, target) -> tuple[int, object] | None:
    """(step, state) of the newest checkpoint that restores, or None when there is none.

    `target` is a pytree of arrays (or ShapeDtypeStructs) with the shardings to restore into.
    Raises ScalingError when a checkpoint's structure or shapes differ from `target`'s.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    wanted = leaf_shapes(abstract)
    for step in sorted(self.manager.all_steps(), reverse=True):
      saved = self._saved_shapes(step)
      if saved is None:
        continue
      changes = mismatches(saved, wanted)
      if changes:
        named = ", ".join(changes[:3]) + (f", +{len(changes) - 3} more" if len(changes) > 3
                                          else "")
        raise ScalingError(f"{os.fspath(self.workdir)} holds another run: its checkpoint at step "
                           f"{step} does not fit this model ({named}); use a new --workdir")
      try:
        restored = self.manager.restore(
            step, args=ocp.args.Composite(**{ITEM: ocp.args.StandardRestore(abstract)}))
        return step, restored[ITEM]
      except Exception as e:  # noqa: BLE001 - a checkpoint that fits but fails is unreadable
        self._skip(step, f"{type(e).__name__}: {e}")
    return None

  def restore_step(self, step: int, target, *, why: str):
    """The state saved at exactly `step` (the shardings of `target`); ScalingError, with `why`
    (what the caller needs it for), when it is missing, does not fit or cannot be read."""
    if step not in self.manager.all_steps():
      raise ScalingError(f"{os.fspath(self.directory)} has no checkpoint at step {step}, which "
                         f"{why}; train that run first (`scaling ladder run` orders it)")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    saved = self._saved_shapes(step)
    changes = ["its metadata cannot be read"] if saved is None else mismatches(
        saved, leaf_shapes(abstract))
    if changes:
      raise ScalingError(f"the checkpoint at step {step} in {os.fspath(self.directory)}, which "
                         f"{why}, does not fit this model ({', '.join(changes[:3])}); the "
                         "branch and its trunk must be one model: retrain them in a new folder")
    try:
      restored = self.manager.restore(
          step, args=ocp.args.Composite(**{ITEM: ocp.args.StandardRestore(abstract)}))
    except Exception as e:  # noqa: BLE001 - any failure here is one line for the user
      raise ScalingError(f"the checkpoint at step {step} in {os.fspath(self.directory)}, which "
                         f"{why}, cannot be read ({type(e).__name__}: {str(e)[:200]}); retrain "
                         "that run in a new folder") from None
    return restored[ITEM]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves, then releases orbax's threads (call it on every exit path)."""
    try:
      self.manager.wait_until_finished()
    finally:
      self.manager.close()


@contextlib.contextmanager
def _quiet(name: str):
  """Only errors from the logger `name` for the block."""
  logger = logging.getLogger(name)
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def branch_steps(cfg) -> frozenset[int]:
  """A trunk's branch points (`trunk.branch_steps`): saved, evaluated and kept; else empty."""
  trunk = cfg.get("trunk") or {}
  return frozenset(int(x) for x in (trunk.get("branch_steps") or ()))


def parent_dir(cfg, workdir) -> storage.Path:
  """Where a branch's trunk lives: `branch.parent_dir`, else the sibling run folder
  `<workdir>/../<branch.parent>` (the ladder layout, runs/<run_id>/)."""
  b = cfg.branch
  if b.get("parent_dir"):
    return storage.Path(b.parent_dir)
  return storage.Path(workdir).parent / str(b.parent)


def saved_steps(workdir) -> list[int]:
  """The finished checkpoint steps of a run folder (orbax's own rule: no temporary ones)."""
  d = storage.Path(workdir) / "checkpoints"
  if not d.exists():
    return []
  return sorted(ocp.path.step.checkpoint_steps(d))


def restore_branch(cfg, workdir, target) -> tuple[int, object]:
  """(branch.step, state): a branch's first state, its parent's checkpoint at the fork step.

  Bitwise the trunk's own state at that step; the branch's schedule equals the trunk's until
  then (`scaling.train.optimizer.schedule`), so the branch continues as the trunk would have.
  """
  b = cfg.branch
  step = int(b.step)
  if not 0 < step < int(cfg.train.steps):
    raise ScalingError(f"branch.step={step} must be in (0, train.steps={cfg.train.steps}): the "
                       "trunk step the branch forks at")
  parent = Checkpointer(parent_dir(cfg, workdir), every=1, keep=1, read_only=True)
  try:
    state = parent.restore_step(step, target, why=f"branch {os.fspath(workdir)} forks from")
  finally:
    parent.close()
  log.info("branch %s starts from step %d of %s", os.fspath(workdir), step, parent.workdir)
  return step, state
